"""One writer per index: an OS file lock beside a local index, a lease in the server for a server-mode index.

The lock is `filelock.FileLock` (fcntl/msvcrt): the kernel releases it when the holding process dies, so a lock
left by a killed `ingest` is recovered without any staleness guess. The holder's pid, host and start time are
kept in a sidecar file only to name the holder in the error message.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from filelock import FileLock, Timeout

from docvec.errors import LockHeld, StoreError


def lock_path_for(index_dir: Path, collection: str) -> Path:
    """The lock file of a collection stored in `index_dir`."""
    return index_dir / f".docvec-{collection}.lock"


@contextlib.contextmanager
def writer_lock(path: Path, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Hold the writer lock at `path`; raise LockHeld at once (or after `timeout` when waiting)."""
    lock = FileLock(str(path), thread_local=False)
    if path.parent.exists() and not path.parent.is_dir():
        raise StoreError(f"the index path {path.parent} is a file, not a folder: point --index (store.path) at a "
                         f"folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=(-1 if timeout is None else timeout) if wait else 0)
    except Timeout as exc:
        raise LockHeld(_held_message(_holder(path), _holder_pid(path))) from exc
    except OSError as exc:
        raise StoreError(f"cannot take the writer lock {path}: {exc.strerror or exc} — the index folder must be "
                         f"writable to ingest") from exc
    info = path.with_suffix(".holder")
    try:
        with contextlib.suppress(OSError):  # only names the holder in messages: a full disk must not stop the run
            info.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        yield
    finally:
        with contextlib.suppress(OSError):
            info.unlink()
        lock.release()


def current_holder(path: Path) -> str | None:
    """Who holds the local writer lock at `path` now, without taking it (None when nobody does)."""
    try:
        data = json.loads(path.with_suffix(".holder").read_text())
        pid, host = int(data["pid"]), str(data["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a killed writer's leftover: the kernel released its lock
        except PermissionError:
            pass
    return _holder(path)


def _held_message(holder: str, pid: object, host: object = None) -> str:
    """Who holds the lock, truthfully: flock locks are per open file, so a second handle (or thread) of this very
    process that syncs the same index is refused too, and used to be called "another docvec process"."""
    if pid == os.getpid() and host in (None, socket.gethostname()):
        return (f"this process is already writing this index through another Index handle or thread ({holder}); "
                "wait for that sync to finish (sync(wait=True) waits for it), or sync through one handle")
    return f"another docvec process is writing this index ({holder}); wait for it, or run with --wait"


def _holder_pid(path: Path) -> object:
    try:
        return json.loads(path.with_suffix(".holder").read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None


def _holder(path: Path) -> str:
    try:
        data = json.loads(path.with_suffix(".holder").read_text())
        since = datetime.fromtimestamp(data["since"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {data['pid']} on {data['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# -- server mode --------------------------------------------------------------------------------------------------
#
# Writers on different machines share no file system, so the lock lives in the Chroma server itself, as a lease:
# a collection whose creation is atomic on the server. The holder renews it every HEARTBEAT seconds; a holder
# that dies stops renewing, and after LEASE seconds another writer may take the lease over. A holder that finds
# its lease gone or taken (it was paused longer than the lease, or the server lost it) stops at once, between two
# atomic writes. Clocks of the writers must agree to well within the lease (NTP does).

LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 10.0
SETTLE_SECONDS = 0.5  # after taking over a stale lease: long enough for a racing taker's write to show


class LeaseBoardLike(Protocol):
    """The storage of a lease (`docvec.store.LeaseBoard`)."""

    def create(self, meta: dict[str, Any]) -> bool: ...
    def read(self) -> dict[str, Any] | None: ...
    def write(self, meta: dict[str, Any]) -> None: ...
    def delete(self) -> None: ...


class ServerLease:
    """One writer's lease on a server-mode index."""

    def __init__(self, board: LeaseBoardLike, seconds: float = LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.board, self.seconds, self.clock = board, seconds, clock
        self.token = uuid.uuid4().hex
        self.since = clock()
        self.lost: str | None = None  # why the lease was lost, once it is
        self._renewed = self.since

    def _meta(self) -> dict[str, Any]:
        return {"docvec:token": self.token, "pid": os.getpid(), "host": socket.gethostname(), "since": self.since,
                "expires": self.clock() + self.seconds}

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lease; None on success, else the current holder's metadata."""
        if self.board.create(self._meta()):
            return None
        current = self.board.read()
        if current is None or float(current.get("expires", 0)) < self.clock():  # released meanwhile, or stale
            if current is not None:
                self.board.delete()
            if self.board.create(self._meta()):
                time.sleep(SETTLE_SECONDS)
                mine = self.board.read()
                if mine is not None and mine.get("docvec:token") == self.token:
                    return None
            return self.board.read() or {}
        return current

    def acquire(self, wait: bool, poll: float = 2.0) -> None:
        """Take the lease, or raise LockHeld naming the holder (waiting first when asked)."""
        while True:
            holder = self.try_acquire()
            if holder is None:
                return
            if not wait:
                raise LockHeld(_held_message(f"{_describe(holder)}; {_expiry(holder, self.clock())}",
                                             holder.get("pid"), holder.get("host")))
            time.sleep(poll)

    def beat(self) -> bool:
        """Renew the lease; False (and `lost` set) when it is no longer ours."""
        try:
            current = self.board.read()
        except StoreError:
            return self._still_valid()
        if current is None or current.get("docvec:token") != self.token:
            self.lost = f"taken by {_describe(current)}" if current else "removed from the server"
            return False
        try:
            self.board.write(self._meta())
            self._renewed = self.clock()
        except StoreError:
            return self._still_valid()
        return True

    def _still_valid(self) -> bool:
        if self.clock() - self._renewed > self.seconds:
            self.lost = "could not be renewed before it expired (server unreachable)"
            return False
        return True

    def release(self) -> None:
        """Give the lease back, unless someone else holds it now."""
        with contextlib.suppress(StoreError):
            current = self.board.read()
            if current is not None and current.get("docvec:token") == self.token:
                self.board.delete()


@contextlib.contextmanager
def server_writer_lock(board: LeaseBoardLike, wait: bool = False) -> Iterator[ServerLease]:
    """Hold the server lease while the block runs; a lost lease interrupts the block (as Ctrl-C would)."""
    lease = ServerLease(board)
    lease.acquire(wait)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            if not lease.beat():
                _thread.interrupt_main()  # the pipeline stops between two atomic writes
                return

    thread = threading.Thread(target=heartbeat, name="docvec-lease", daemon=True)
    thread.start()
    try:
        yield lease
    except BaseException as exc:
        if lease.lost:
            raise LockHeld(f"lost the writer lock ({lease.lost}); stopped between two atomic writes — "
                           f"nothing is half-written: run again") from exc
        raise
    finally:
        stop.set()
        thread.join()
        lease.release()


def _expiry(holder: dict[str, Any], now: float) -> str:
    """When a lease that is no longer renewed runs out, and what --wait does then."""
    try:
        left = float(holder["expires"]) - now
    except (KeyError, TypeError, ValueError):
        return "lease expiry unknown"
    at = datetime.fromtimestamp(float(holder["expires"]), tz=timezone.utc).strftime("%H:%M:%S UTC")
    return (f"its lease expires at {at}, in {max(left, 0):.0f} s, unless that process renews it (it does every "
            f"{HEARTBEAT_SECONDS:.0f} s while alive); with --wait this run takes it over then")


def describe_lease(holder: dict[str, Any] | None) -> str | None:
    """A server lease's holder and expiry, for `status` (None when nobody holds it)."""
    if not holder:
        return None
    return f"{_describe(holder)}; {_expiry(holder, time.time())}"


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder or "pid" not in holder:
        return "holder unknown"
    since = datetime.fromtimestamp(float(holder["since"]), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {holder['pid']} on {holder['host']} since {since}"
