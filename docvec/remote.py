"""Finding and asking a running `docvec serve` of this very index: a Unix socket beside the index.

The server listens on `docvec-serve-<collection>.sock` beside the index, owner-only (0600): the kernel lets only
the index's owner (and root) connect, so no token is needed on it, and nothing else names it — no port to guess,
no advert to forge. The client connects only to a socket it finds owned by its own user and not open to others,
checks the peer's credentials (the server runs as the same user), and bounds the whole exchange in time and size;
any doubt and the caller answers in-process. The advert (`docvec-serve-<collection>.json`: URL and pid, never the
token) tells people and `status` where the HTTP server is; `docvec query` never follows it.

This module imports only the standard library: `docvec query` asks a server before deciding whether to load Chroma
and the model at all.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
TYPE_CHECKING = False  # typing costs ~7 ms to import: this module is on the warm client's path (query/client.py)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

from docvec.smallfiles import (beside_index, pid_alive, read_small_file, read_until_end,
                               write_json_atomically)

DEADLINE_S = 5.0  # the whole exchange with a local server: a cold in-process answer takes ~1 s
MAX_ANSWER_BYTES = 32 * 2**20  # a k=1000 answer of long chunks is a few MB
SUN_PATH_MAX = 100  # AF_UNIX paths are limited to ~108 bytes: a longer one is reached through /proc/self/fd

def advert_path(index_dir: Path, collection: str, chroma_host: str | None = None) -> Path:
    """Where the server of one index advertises itself."""
    return beside_index(index_dir, "serve", collection, chroma_host, ".json")


def lock_path(advert: Path) -> Path:
    return advert.with_suffix(".lock")


def write_advert(path: Path, url: str, token_required: bool, index: str) -> None:
    """Atomically write the advert (readable by this user only)."""
    write_json_atomically(path, {"pid": os.getpid(), "url": url, "token_required": token_required, "index": index,
                                 "started": time.time()}, mode=0o600)


def read_advert(path: Path) -> dict[str, Any] | None:
    """The advert of a live server, or None (no file, unreadable, or its process is gone)."""
    try:
        data = json.loads(read_small_file(path) or b"null")
        pid = int(data["pid"])
        str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(pid):
        return None
    return dict(data)


def remove_advert(path: Path) -> None:
    """Remove the advert if it is this process's."""
    data = read_advert(path)
    if data is not None and data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def socket_path(index_dir: Path, collection: str, chroma_host: str | None = None) -> Path:
    """Where the server of one index listens for local clients."""
    return beside_index(index_dir, "serve", collection, chroma_host, ".sock")


class Reachable:
    """A path that AF_UNIX accepts: the path itself, or, when it is too long, the same file through a descriptor
    of its folder (/proc/self/fd/N/name, Linux). Use it in a `with` block."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd: int | None = None
        self.address = os.fspath(path)
        if len(self.address.encode()) > SUN_PATH_MAX:
            folder, name = os.path.split(self.address)
            self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.address = f"/proc/self/fd/{self._fd}/{name}"

    def __enter__(self) -> "Reachable":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)


def ask_local_server(path: str | os.PathLike[str], route: str, body: dict[str, Any]) -> tuple[Any | None, str | None]:
    """POST body to the server listening on the socket at `path`: (its JSON answer, None), or (None, why not) —
    why is None when simply no server runs. The whole exchange ends within DEADLINE_S and MAX_ANSWER_BYTES."""
    try:
        info = os.lstat(path)
    except OSError:
        return None, None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None, f"{path} is not an owner-only socket of this user: ignored"
    deadline = time.monotonic() + DEADLINE_S
    try:
        with Reachable(path) as reach, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(DEADLINE_S)
            sock.connect(reach.address)
            if not _same_user(sock):
                return None, f"the process listening on {path} runs as another user: ignored"
            raw = _exchange(sock, route, json.dumps(body).encode("utf-8"), deadline)
    except ConnectionRefusedError:
        return None, None  # a socket left by a server that was killed: nobody listens
    except (OSError, ValueError) as exc:
        return None, f"docvec serve did not answer cleanly ({exc})"
    return _parse(raw)


def _same_user(sock: socket.socket) -> bool:
    """Whether the peer runs as this user (SO_PEERCRED, Linux); elsewhere the socket's owner-only mode holds."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def _exchange(sock: socket.socket, route: str, payload: bytes, deadline: float) -> bytes:
    """Send one HTTP/1.1 request and read the whole answer, within the deadline and the size cap."""
    head = (f"POST {route} HTTP/1.1\r\nHost: docvec\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode("ascii")
    sock.sendall(head + payload)

    def block() -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ValueError(f"no complete answer within {DEADLINE_S:.0f} s")
        sock.settimeout(left)
        return sock.recv(1 << 16)

    raw = read_until_end(block, MAX_ANSWER_BYTES)
    if raw is None:
        raise ValueError(f"an answer over {MAX_ANSWER_BYTES // 2**20} MiB")
    return raw


def _parse(raw: bytes) -> tuple[Any | None, str | None]:
    """The JSON body of a whole HTTP/1.1 answer read to its end (the request said Connection: close).

    Read strictly rather than with http.client, whose import (~20 ms, the email parser) was a fifth of a warm
    query: the status line, headers up to the blank line, a Content-Length equal to the body's length, no transfer
    coding. Anything else is a doubt, and the caller answers in-process."""
    head, blank, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    fields = dict(_field(line) for line in lines[1:])
    if not blank or len(status) < 2 or status[0] != "HTTP/1.1" or "transfer-encoding" in fields or \
            fields.get("content-length", "").strip() != str(len(body)):
        return None, "docvec serve's answer is not a whole HTTP/1.1 answer"
    if status[1] != "200":
        return None, f"docvec serve answered {status[1][:3]}"
    try:
        return json.loads(body), None
    except ValueError as exc:
        return None, f"docvec serve's answer is not JSON ({type(exc).__name__})"


def _field(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()
