"""The small files docvec keeps beside an index (a server's advert and socket, a watcher's state, the keyword
index's state), read and written safely. Standard library only: `docvec query` reads them before it decides to
load anything else."""

from __future__ import annotations

import json
import os
import stat
TYPE_CHECKING = False  # typing costs ~7 ms to import: this module is on the warm client's path (query/client.py)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable


def beside_index(index_dir: Path, kind: str, collection: str, chroma_host: str | None, suffix: str) -> Path:
    """`docvec-<kind>-[<chroma host>-]<collection><suffix>` in the index folder (a Chroma server index: keyed by
    host too)."""
    scope = f"{chroma_host}-" if chroma_host else ""
    return index_dir / f"docvec-{kind}-{scope}{collection}{suffix}"


def write_json_atomically(path: str | os.PathLike[str], data: Any, mode: int = 0o666) -> None:
    """Write JSON whole, then rename it into place: a reader never sees half a file (`mode`, less the umask)."""
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, path)


def read_small_file(path: str | os.PathLike[str], limit: int = 64 * 2**10) -> bytes | None:
    """A small regular file's bytes, or None: a symlink, a FIFO, a device or a file over `limit` is not read
    (an advert symlinked to /dev/zero grew a reader to 22 GB; a FIFO hung it)."""
    try:
        fd, size = open_regular(path)
    except OSError:
        return None
    try:
        if size > limit:
            return None
        return read_until_end(lambda: os.read(fd, 1 << 16), limit)
    finally:
        os.close(fd)


def open_regular(path: str | os.PathLike[str]) -> tuple[int, int]:
    """A descriptor of the file for reading and its size, never through a symlink and only if it is a regular file
    (not a FIFO, which would hang a reader, nor a device such as /dev/zero, which would feed it forever); else
    OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(f"{os.fspath(path)} is not a regular file")
    return fd, info.st_size


def read_until_end(read_block: Callable[[], bytes], limit: int) -> bytes | None:
    """Blocks from `read_block` until it returns b"" (the end); None as soon as they pass `limit` bytes."""
    chunks: list[bytes] = []
    total = 0
    while block := read_block():
        total += len(block)
        if total > limit:
            return None
        chunks.append(block)
    return b"".join(chunks)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts; a pid no process can have does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True
