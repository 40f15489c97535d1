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
from ingest.pipeline import IngestReport, Progress

GROUP_MS = 60_000  # a burst that never pauses is still cut into syncs of at most this long
RETRY_S = (2, 5, 15, 30, 60)  # waits before retrying a failed sync
TEMP_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".part", ".crdownload")


@dataclass(frozen=True)
class WatchEvent:
    """What the watcher did: a sync finished (report), failed (error), or was stopped."""

    kind: str  # "synced" | "failed" | "stopped"
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
    """Run until `stop` is set: one `sync` per settled burst of relevant changes under root."""
    from watchfiles import watch as watch_changes

    ignored = tuple(Path(i).resolve() for i in ignore)
    pending = 0  # changes not yet synced (a failed sync keeps them pending)
    failures = 0
    # Empty batches every 2 s (yield_on_timeout) let a failed sync be retried without a new change.
    for changes in watch_changes(root, stop_event=stop, step=max(quiet_ms, 50), debounce=GROUP_MS,
                                 rust_timeout=2000, yield_on_timeout=True, raise_interrupt=False):
        if stop.is_set():
            break
        pending += sum(1 for _, path in changes if relevant(path, suffixes, ignored))
        if not pending:
            continue
        event = _sync_once(sync, stop, pending)
        on_event(event)
        if event.kind == "stopped":
            return
        if event.kind == "synced":
            pending, failures = 0, 0
        else:
            failures += 1
            stop.wait(_retry_wait(failures))  # then the next (possibly empty) batch retries the pending changes
    on_event(WatchEvent("stopped"))


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
        return (f"synced: {len(r.files_added)} added, {len(r.files_changed)} changed, {len(r.files_removed)} "
                f"removed; {r.chunks_embedded} chunks embedded in {r.seconds:.1f} s")
    if event.kind == "failed":
        return f"sync failed, will retry: {event.error}"
    return "watch stopped"
