"""One writer per index: an OS file lock beside the index, with who holds it written next to it.

The lock is `filelock.FileLock` (fcntl/msvcrt): the kernel releases it when the holding process dies, so a lock
left by a killed `ingest` is recovered without any staleness guess. The holder's pid, host and start time are
kept in a sidecar file only to name the holder in the error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from docvec.errors import LockHeld, StoreError


def lock_path_for(index_dir: Path, collection: str) -> Path:
    """The lock file of a collection stored in `index_dir`."""
    return index_dir / f".docvec-{collection}.lock"


@contextlib.contextmanager
def writer_lock(path: Path, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Hold the writer lock at `path`; raise LockHeld at once (or after `timeout` when waiting)."""
    lock = FileLock(str(path), thread_local=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=(-1 if timeout is None else timeout) if wait else 0)
    except Timeout as exc:
        raise LockHeld(f"another docvec process is writing this index ({_holder(path)}); "
                       f"wait for it, or run with --wait") from exc
    except OSError as exc:
        raise StoreError(f"cannot take the writer lock {path}: {exc.strerror or exc} — the index folder must be "
                         f"writable to ingest") from exc
    info = path.with_suffix(".holder")
    try:
        info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        yield
    finally:
        with contextlib.suppress(OSError):
            info.unlink()
        lock.release()


def _holder(path: Path) -> str:
    try:
        data = json.loads(path.with_suffix(".holder").read_text())
        since = datetime.fromtimestamp(data["since"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {data['pid']} on {data['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
