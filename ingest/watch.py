"""Watch mode: re-sync the index when the docs folder changes (watchfiles), one sync per burst of changes.

A sync is the ordinary diff-based ingest under the writer lock, so renames, deletions and editors' atomic saves
need nothing special: whatever the folder holds when the burst settles is what gets indexed. A sync that fails
(a manual ingest holds the lock, a file vanished mid-read, the model server is down) is reported and retried with
backoff; it never stops the watcher.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from docvec.config import Settings, include_suffixes
from docvec.errors import DocvecError, Interrupted
from docvec.ingest.pipeline import IngestReport, Progress

GROUP_MS = 60_000  # a burst that never pauses is still cut into syncs of at most this long
RETRY_S = (2, 5, 15, 30, 60)  # waits before retrying a failed sync
TEMP_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".part", ".crdownload")


@dataclass(frozen=True)
class WatchEvent:
    """What the watcher did: a sync finished (report), failed (error), the docs folder went away ("gone") or came
    back or was replaced ("rearmed"), or the watcher stopped."""

    kind: str  # "synced" | "failed" | "gone" | "rearmed" | "stopped"
    changes: int = 0
    report: IngestReport | None = None
    error: str | None = None


def relevant(path: str, suffixes: tuple[str, ...], ignore: tuple[Path, ...]) -> bool:
    """Whether a changed path can change the index: a file with an indexed ending (or a folder: its files may
    have gone), not an editor's temp file, not inside the index itself."""
    p = Path(path)
    if any(p == i or i in p.parents for i in ignore):
        return False
    name = p.name
    if name.startswith((".#", "~$")) or name.endswith(TEMP_SUFFIXES) or name.isdigit():  # vim's 4913 probe
        return False
    return not suffixes or name.endswith(suffixes) or not p.suffix


def watch_folder(settings: Settings, sync: Callable[[Callable[[Progress], None]], IngestReport],
                 stop: threading.Event, on_event: Callable[[WatchEvent], None]) -> None:
    """`watch` the configured docs folder with the configured quiet time, file endings and index folder."""
    watch(settings.resolve(settings.docs.path), sync, stop, on_event, settings.serve.debounce_ms,
          include_suffixes(settings.docs.include), (settings.resolve(settings.store.path),))


def watch(root: Path, sync: Callable[[Callable[[Progress], None]], IngestReport], stop: threading.Event,
          on_event: Callable[[WatchEvent], None], quiet_ms: int, suffixes: tuple[str, ...] = (".md", ".markdown"),
          ignore: Iterable[Path] = ()) -> None:
    """Run until `stop` is set: one `sync` per settled burst of relevant changes under root. A docs folder that
    is deleted, replaced or renamed away is watched again as soon as it is back (the OS watch dies with it)."""
    ignored = tuple(Path(i).resolve() for i in ignore)
    pending = 0  # changes not yet synced (a failed sync keeps them pending)
    while not stop.is_set():
        identity = _identity(root)
        if identity is None:
            on_event(WatchEvent("gone", pending, error=f"the docs folder {root} is gone: waiting for it"))
            while not stop.is_set() and _identity(root) is None:
                stop.wait(1.0)
            if stop.is_set():
                break
            on_event(WatchEvent("rearmed", error=f"the docs folder {root} is back: watching it again"))
            pending += 1  # whatever it holds now is synced
        pending, replaced = _watch_while_same(root, identity or _identity(root), sync, stop, on_event, quiet_ms,
                                              suffixes, ignored, pending)
        if not replaced:
            break  # stopped (stop set, or Ctrl-C / SIGTERM ended the OS watch)
    on_event(WatchEvent("stopped"))


def _watch_while_same(root: Path, identity: tuple[int, int] | None, sync: Callable[[Callable[[Progress], None]],
                      IngestReport], stop: threading.Event, on_event: Callable[[WatchEvent], None], quiet_ms: int,
                      suffixes: tuple[str, ...], ignored: tuple[Path, ...], pending: int) -> tuple[int, bool]:
    """Sync settled bursts until stopped or until root is no longer the folder first watched; returns what is
    still pending and whether the folder was replaced or went away (watch it again) rather than the watch
    stopped."""
    from watchfiles import watch as watch_changes

    failures = 0
    try:
        # Empty batches every second (yield_on_timeout) retry a failed sync and notice a replaced folder.
        for changes in watch_changes(root, stop_event=stop, step=max(quiet_ms, 50), debounce=GROUP_MS,
                                     rust_timeout=1000, yield_on_timeout=True, raise_interrupt=False):
            if stop.is_set():
                return pending, False
            if _identity(root) != identity:
                return pending + 1, True
            pending += sum(1 for _, path in changes if relevant(path, suffixes, ignored))
            if not pending:
                continue
            event = _sync_once(sync, stop, pending)
            on_event(event)
            if event.kind == "stopped":
                stop.set()
            elif event.kind == "synced":
                pending, failures = 0, 0
            else:
                failures += 1
                stop.wait(_retry_wait(failures))  # then the next (possibly empty) batch retries the changes
    except (OSError, RuntimeError):  # the folder vanished under the OS watch: the caller waits for it
        return pending + 1, not stop.is_set()
    return pending, False


def _identity(root: Path) -> tuple[int, int] | None:
    """(device, inode) of the docs folder, None while it does not exist."""
    try:
        st = root.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if root.is_dir() else None


def _retry_wait(failures: int) -> int:
    return RETRY_S[min(failures, len(RETRY_S)) - 1] if failures else 0


def _sync_once(sync: Callable[[Callable[[Progress], None]], IngestReport], stop: threading.Event,
               changes: int) -> WatchEvent:
    def check_stop(progress: Progress) -> None:
        if stop.is_set():  # stop between two writes, as Ctrl-C does
            raise KeyboardInterrupt

    try:
        return WatchEvent("synced", changes, sync(check_stop))
    except Interrupted:
        return WatchEvent("stopped", changes)
    except DocvecError as exc:
        return WatchEvent("failed", changes, error=str(exc))
    except OSError as exc:  # a file vanished or became unreadable mid-sync: the retry sees the settled folder
        return WatchEvent("failed", changes, error=f"{exc.filename or ''}: {exc.strerror or exc}")


def follow(sync: Callable[[Callable[[Progress], None]], IngestReport], stop: threading.Event,
           on_event: Callable[[WatchEvent], None]) -> WatchEvent:
    """One sync now (before watching: changes made while nothing watched are picked up)."""
    event = _sync_once(sync, stop, 0)
    on_event(event)
    return event


def describe(event: WatchEvent) -> str:
    """One log line for a watch event."""
    if event.kind == "synced" and event.report is not None:
        r = event.report
        held = held_note(r)
        return (f"synced: {len(r.files_added)} added, {len(r.files_changed)} changed, {len(r.files_removed)} "
                f"removed; {r.chunks_embedded} chunks embedded in {r.seconds:.1f} s" + (f"; {held}" if held else ""))
    if event.kind == "failed":
        return f"sync failed, will retry: {event.error}"
    if event.kind in ("gone", "rearmed"):
        return str(event.error)
    return "watch stopped"


def held_note(report: IngestReport) -> str | None:
    """What a sync holds back, and how to confirm it (None when it holds nothing)."""
    if not report.held_deletions:
        return None
    return (f"holding the deletion of {len(report.held_deletions)} files gone from the folder (e.g. "
            f"{report.held_deletions[0]}): more than half the index; run `docvec ingest --yes` to delete them")


def recorder(path: Path, then: Callable[[WatchEvent], None]) -> Callable[[WatchEvent], None]:
    """An event handler that records the watcher's state for `status` (docvec.watchstate), then calls `then`."""
    from docvec.watchstate import record

    def on_event(event: WatchEvent) -> None:
        if event.kind == "synced" and event.report is not None:
            record(path, "watching", held_note(event.report), event.report.held_deletions)
        elif event.kind == "failed":
            record(path, "watching", f"the last sync failed and is retried: {event.error}")
        elif event.kind == "gone":
            record(path, "waiting", event.error)
        elif event.kind == "rearmed":
            record(path, "watching", event.error)
        else:
            record(path, "stopped", "stopped by its process (Ctrl-C, SIGTERM, or the server stopping)")
        then(event)
    return on_event
