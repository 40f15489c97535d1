"""A whole sync as the CLI, the API and watch mode run it: writer lock, first-build cleanup, the pipeline."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Callable, Iterator

from docvec.chunker import ChunkParams
from docvec.config import Settings
from docvec.embedders import Embedder
from docvec.errors import IndexNotFound, SourceError
from docvec.fingerprint import Fingerprint
from docvec.lock import lock_path_for, server_writer_lock, writer_lock
from docvec.residue import STAMP_FILE
from docvec.store import CHROMA_FILE, LeaseBoard, Store, StoreLocation
from docvec.ingest.pipeline import IndexState, IngestReport, Progress, SyncGuard, ingest, open_for_writing
from docvec.ingest.scan import ScanOptions
from docvec.ingest.statefile import load_state, save_state


def sync_index(location: StoreLocation, embedder: Embedder, scan: ScanOptions, params: ChunkParams,
               guard: SyncGuard = SyncGuard(), wait: bool = False,
               on_progress: Callable[[Progress], None] | None = None, known: IndexState | None = None) -> IngestReport:
    """Sync the docs folder into the index under the writer lock; a failed first build leaves no index.

    `known`: the `state` of this process's previous report (see `ingest`). Raises SourceError (with nothing
    changed on a first build) when files were found but none could be indexed."""
    fingerprint = Fingerprint.build(embedder.info, params)
    before = index_before(location)
    with writer_lock_of(location, wait), first_build(location, before):
        store = open_for_writing(location, fingerprint)
        store.apply_ef_search()
        report = ingest_from_state(location, store, embedder, scan, params, guard, on_progress, known)
        if report.files_seen and not (report.files_added or report.files_changed or report.files_unchanged):
            raise SourceError(f"none of the {report.files_seen} files in {scan.root} could be indexed")
    return report


def ingest_from_state(location: StoreLocation, store: Store, embedder: Embedder, scan: ScanOptions,
                      params: ChunkParams, guard: SyncGuard, on_progress: Callable[[Progress], None] | None,
                      known: IndexState | None = None) -> IngestReport:
    """`ingest`, starting from the state the last completed run left on disk and leaving this run's there (see
    docvec/ingest/statefile.py); a long-lived process hands its later runs the state in memory (`known`)."""
    one_shot = known is None
    if one_shot:
        known = load_state(location, store.name, Fingerprint.build(embedder.info, params).short_hash())
    loaded_at = known.left_at if known is not None else None
    report = ingest(store, embedder, scan, params, False, on_progress, guard, known)
    # A run that started from the file and left the collection where it was (a no-op) leaves the file as it is:
    # rewriting it is ~130 MB at a million chunks
    unchanged = report.state is not None and report.state is known and report.state.left_at == loaded_at
    if one_shot and report.state is not None and not unchanged:
        save_state(location, report.state)
    return report


def scan_options(settings: Settings) -> ScanOptions:
    """Which files of the configured docs folder are indexed."""
    d = settings.docs
    return ScanOptions(settings.resolve(d.path), tuple(d.include), tuple(d.exclude), d.skip_hidden,
                       d.follow_symlinks, int(d.max_file_mb * 2**20), (settings.resolve(settings.store.path),))



def index_before(location: StoreLocation) -> str:
    """'index', 'folder' (a folder without an index) or 'none': what was there before this run."""
    if location.host or (location.path / CHROMA_FILE).exists():
        return "index"
    return "folder" if location.path.exists() else "none"


@contextlib.contextmanager
def first_build(location: StoreLocation, before: str) -> Iterator[None]:
    """A first ingest that fails before storing anything leaves no empty index behind (status would call it
    an index of 0 files)."""
    try:
        yield
    except BaseException as exc:
        if before != "index" and not isinstance(exc, SystemExit) and _empty(location):
            if before == "none":
                shutil.rmtree(location.path, ignore_errors=True)
            else:
                _remove_index_files(location.path)
        raise


def _empty(location: StoreLocation) -> bool:
    try:
        return Store.open(location).count() == 0
    except Exception:  # noqa: BLE001 - an index that cannot even be opened holds nothing worth keeping
        return True


def _remove_index_files(folder: Path) -> None:
    """Chroma's files in a folder that existed before (it may hold other things: leave those)."""
    for p in folder.iterdir():
        if p.is_dir() and len(p.name) == 36 and p.name.count("-") == 4:  # a Chroma segment folder (a uuid)
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith("keyword-") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(("keyword-", CHROMA_FILE)) or p.name == STAMP_FILE:
            p.unlink(missing_ok=True)


def writer_lock_of(location: StoreLocation, wait: bool,
                   existing: bool = False) -> contextlib.AbstractContextManager[object]:
    """The one-writer lock of the configured index: a file lock beside a local index, a lease kept in the
    Chroma server for a server-mode index (so writers on different machines exclude each other). With `existing`
    (commands that change an index but never make one: rollback, prune) a local folder without an index is
    IndexNotFound before the lock file could create it."""
    if existing and not location.host and not (location.path / CHROMA_FILE).is_file():
        raise IndexNotFound(f"no index at {location.path}: build it with `docvec ingest`")
    if location.host:
        return server_writer_lock(LeaseBoard(location), wait=wait)
    return writer_lock(lock_path_for(location.path, location.collection), wait=wait)
