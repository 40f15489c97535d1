"""Finding and asking a running `docvec serve`: its advert beside the index, and the client `docvec query` uses.

The advert names the server's URL and pid (never its token); the server also holds a lock beside it, so a second
server on the same index is a clear refusal instead of a race. An advert whose pid is gone is stale and ignored.
This module imports only the standard library: `docvec query` asks a server before deciding whether to load Chroma
and the model at all.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TIMEOUT_S = 30.0  # a server busy with a long answer is still faster than a cold start

def advert_path(index_dir: Path, collection: str, chroma_host: str | None = None) -> Path:
    """Where the server of one index advertises itself (a Chroma server index: keyed by host too)."""
    scope = f"{chroma_host}-" if chroma_host else ""
    return index_dir / f"docvec-serve-{scope}{collection}.json"


def lock_path(advert: Path) -> Path:
    return advert.with_suffix(".lock")


def write_advert(path: Path, url: str, token_required: bool, index: str) -> None:
    """Atomically write the advert (readable by this user only)."""
    data = {"pid": os.getpid(), "url": url, "token_required": token_required, "index": index,
            "started": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_advert(path: Path) -> dict[str, Any] | None:
    """The advert of a live server, or None (no file, unreadable, or its process is gone)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pid = int(data["pid"])
        str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    return dict(data)


def remove_advert(path: Path) -> None:
    """Remove the advert if it is this process's."""
    data = read_advert(path)
    if data is not None and data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def ask_server(advert: Path, index: str, path: str, body: dict[str, Any], token: str | None) -> Any | None:
    """POST body to a live server of this index and return its JSON answer; None when there is no such server or
    it does not answer cleanly (the caller then answers in-process, with the same result)."""
    data = read_advert(advert)
    if data is None or data.get("index") != index or (data.get("token_required") and not token):
        return None
    request = urllib.request.Request(str(data["url"]) + path, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
