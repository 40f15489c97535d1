"""docvec's Python API: an open index that searches, reads indexed files, reports its status and syncs.

    import docvec
    idx = docvec.open(config="config.yaml")
    for hit in idx.search("How do I rotate an API key?", k=3):
        print(f"{hit.score:.3f} {hit.source}:{hit.start_line} {hit.label}")
    idx.sync()  # re-index what changed in the docs folder

The CLI's `query`, `docvec serve` (HTTP and MCP) and Python users share this one code path. An Index is
thread-safe (calls are serialised) and follows the index: a reindex or rollback by another process is picked up
at the next call, a sync by another process at the next search.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence, TypeVar

from docvec.text import valid_text
from docvec.config import Settings, load_settings
from docvec.confined import read_beneath
from docvec.settings import chunk_params, make_configured_embedder, store_location
from docvec.embedders import Embedder
from docvec.errors import ConfigError, IndexNotFound, InvalidValue, Refused, StoreError
from docvec.keyword import KeywordIndex, sync_keyword_index
from docvec.status import status_data
from docvec.store import GENERATION_KEY, Store, StoreLocation, forget_cached_client
from docvec.ingest.pipeline import IndexState, IngestReport, Progress, SyncGuard, other_docs_root
from docvec.ingest.sync import scan_options, sync_index
from docvec.query.model import index_embedder
from docvec.query.hits import Fusion, Hit, docs_relative, parse_where
from docvec.query.limits import SPAN_MODES
from docvec.query.search import search
from docvec.query.spans import point

T = TypeVar("T")
READ_ATTEMPTS = 4  # a read that another process's write broke is tried again from a fresh view
MAX_GET_LINES = 5000  # `get` returns at most this many lines at once
MAX_GET_BYTES = 4 * 2**20  # and never reads a file larger than this


@dataclass(frozen=True)
class Passage:
    """Lines of an indexed file, as `get` returns them."""

    source: str
    start_line: int
    end_line: int
    total_lines: int
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "start_line": self.start_line, "end_line": self.end_line,
                "total_lines": self.total_lines, "text": self.text}


def open_index(config: str | Path | None = None, index: str | Path | None = None, collection: str | None = None,
               environ: Mapping[str, str] | None = None) -> "Index":
    """Open the index a config file names (default: $DOCVEC_CONFIG, else ./config.yaml), `index`/`collection`
    overriding store.path / store.collection."""
    _expect("config", config, (str, os.PathLike))
    _expect("index", index, (str, os.PathLike))
    _expect("collection", collection, str)
    overrides = {"store.path": os.fspath(index) if index is not None else None, "store.collection": collection}
    settings = load_settings(Path(config) if config is not None else None,
                             os.environ if environ is None else environ, overrides)
    return Index(settings)


def _expect(name: str, value: object, types: type | tuple[type, ...], optional: bool = True) -> None:
    """TypeError naming the argument unless `value` is one of `types` (or None when optional); bool is no int."""
    kinds = types if isinstance(types, tuple) else (types,)
    if (value is None and optional) or (isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)):
        return
    wanted = " or ".join(getattr(k, "__name__", str(k)) for k in kinds) + (" or None" if optional else "")
    raise TypeError(f"{name} must be {wanted}, got {type(value).__name__} {value!r:.60}")


class Index:
    """An open docvec index (see the module docstring)."""

    def __init__(self, settings: Settings, notes: list[str] | None = None) -> None:
        self.settings = settings
        self.location: StoreLocation = store_location(settings)
        self.notes = notes if notes is not None else []  # model notes (another model configured, ...)
        # Searches run side by side (Chroma, tantivy and onnxruntime release the GIL): each takes the lock only to
        # check that what is open is current, then searches holding a share of it. Whatever replaces or closes the
        # open index (a reopen, a keyword catch-up, close) holds the lock and first waits until no search uses it.
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._searching = 0
        self._store: Store | None = None
        self._keyword: KeywordIndex | None = None
        self._embedder: Embedder | None = None
        self._live: str | None = None
        self._generation: object = None  # the live collection's sync counter when last looked at
        self._syncing = False  # a sync of this process is writing (its writes need no reopen to be seen)
        self._sync_embedder: Embedder | None = None
        self._sync_state: IndexState | None = None  # bookkeeping as this process's last sync left it
        try:
            self._open()
        except IndexNotFound:  # nothing built yet: sync() builds it, as `docvec ingest` would; reads say so
            self._store = None

    def _open(self, fresh: bool = False) -> None:
        """(Re)open the live collection, its keyword index and its model; `fresh` drops Chroma's cached state."""
        self._close_keyword()  # first waits until no search uses what is open
        if fresh:
            self._store = None
            forget_cached_client(self.location)
        store = Store.open_for_reading(self.location)
        if self._embedder is None or self._store is None or store.fingerprint() != self._store.fingerprint():
            self._embedder = index_embedder(store, self.settings.embedding,
                                            optional=self.settings.query.mode == "keyword", notes=self.notes)
        self._store, self._live = store, store.name
        self._generation = store.collection_metadata().get(GENERATION_KEY)
        self._keyword = KeywordIndex.of(store)

    @property
    def live(self) -> str | None:
        """The physical collection being answered from."""
        return self._live

    def _current(self) -> Store:
        """The live store, reopened when another process moved the pointer (reindex, rollback) or synced (the
        writer lock means no sync of this process ran meanwhile)."""
        if self._store is None:  # not built yet, or a reopen failed (another process was switching the index)
            try:
                self._open(fresh=True)
            except IndexNotFound as exc:
                raise IndexNotFound(f"{exc}, or from Python with Index.sync()") from exc
        assert self._store is not None
        if self._store.read_copy is None and not self._syncing and (
                self._store.live_name() != self._live or self._store.stored_generation() != self._generation):
            self._open(fresh=True)
        assert self._store is not None
        return self._store

    def search(self, question: str, k: int | None = None, mode: str | None = None,
               where: Mapping[str, Any] | Sequence[str] | None = None, min_score: float | None = None,
               per_file: int | None = None, spans: str | None = None, fusion: Fusion | None = None) -> list[Hit]:
        """The best chunks for the question (defaults from the settings' query section), pointed at their
        answer lines by `spans`: "words", "model" or "off"."""
        _expect("question", question, str, optional=False)
        for name, value, kinds in (("k", k, int), ("mode", mode, str), ("min_score", min_score, (int, float)),
                                   ("per_file", per_file, int), ("spans", spans, str), ("fusion", fusion, Fusion)):
            _expect(name, value, kinds)
        _expect("where", where, (Mapping, list, tuple, str))
        q = self.settings.query
        mode, spans = mode or q.mode, spans or q.spans  # an unknown mode is refused by search() itself
        if spans not in SPAN_MODES:
            raise InvalidValue(f"spans '{spans}' is unknown; expected one of {', '.join(SPAN_MODES)}")
        clause = parse_where(_where_items(where))
        return self._reading(lambda: self._search(question, k, mode, clause, min_score, per_file, spans, fusion))

    def _reading(self, read: Callable[[], T]) -> T:
        """Run a read; if another process's write made it fail (Chroma: "Error finding id" while this process's
        copy of the vector index is behind the catalog), reopen from what is stored now and read again. A writer
        stores whole files per atomic call, so the answer is the old state, the new one, or one in between in
        which every file is complete."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return read()
            except StoreError:
                if attempt == READ_ATTEMPTS - 1 or self._store is not None and self._store.read_copy is not None:
                    raise
            time.sleep(0.05 * (attempt + 1))
            with self._lock:
                if not self._syncing:  # this process's own sync uses the cached client: never drop it under it
                    with contextlib.suppress(StoreError):  # the next attempt's read says what is wrong
                        self._open(fresh=True)
        raise AssertionError("unreachable")

    def _search(self, question: str, k: int | None, mode: str, clause: Any, min_score: float | None,
                per_file: int | None, spans: str, fusion: Fusion | None) -> list[Hit]:
        q = self.settings.query
        with self._lock:
            store = self._current()
            keyword = None
            if mode != "vector":
                if self._keyword is None:  # closed: a search after close() opens it again
                    self._keyword = KeywordIndex.of(store)
                keyword = self._keyword
                if _behind(store, keyword):  # a catch-up writes the keyword index: no search may be reading it
                    self._wait_idle()
                    sync_keyword_index(store, keyword, reader=True)
            embedder = self._embedder
            self._searching += 1
        try:
            hits = search(store, embedder, question, q.top_k if k is None else k,
                          q.min_score if min_score is None else min_score, clause, mode, keyword,
                          fusion or Fusion.of(q), None, q.per_file if per_file is None else per_file)
            if not hits and store.count() == 0:  # counted only when nothing was found: a count costs ms
                raise IndexNotFound(f"{store.location.describe()} is empty: run `docvec ingest` first")
            return hits if spans == "off" else point(hits, question, embedder if spans == "model" else None)
        finally:
            with self._lock:
                self._searching -= 1
                self._idle.notify_all()

    def _wait_idle(self) -> None:
        """Wait (holding the lock, which waiting lends out) until no search uses what is open."""
        while self._searching:
            self._idle.wait()

    def get(self, source: str, start_line: int | None = None, end_line: int | None = None) -> Passage:
        """Lines of a file that this index holds, read from the docs folder: its path relative to that folder (as
        `search` gives it), or a path to it as the CLI prints it (from the current folder, or absolute).

        Anything else is refused: paths outside the docs folder, files the index does not hold, and paths that
        leave the docs folder through a symlink."""
        _expect("source", source, str, optional=False)
        for name, line in (("start_line", start_line), ("end_line", end_line)):
            _expect(name, line, int)
            if line is not None and line < 1:
                raise InvalidValue(f"{name} must be 1 or more (lines count from 1), got {line}")
        if start_line is not None and end_line is not None and end_line < start_line:
            raise InvalidValue(f"end_line {end_line} is before start_line {start_line}")
        root, rel = self._reading(lambda: self._locate(source))
        return _read_lines(Path(root), rel, start_line, end_line)

    def _locate(self, source: str) -> tuple[str, str]:
        """The docs folder and the indexed file a source names (docs-relative, or a path to it as printed)."""
        with self._lock:
            store = self._current()
            root = store.docs_root()
            if root is None:
                raise IndexNotFound("this index does not record its docs folder yet: run `docvec ingest` once")
            rel = _relative_source(docs_relative(source, root))
            if not store.has_source(rel):
                raise IndexNotFound(f"'{rel}' is not a file of this index: use a source path that search shows")
            return root, rel

    def docs_root(self) -> str | None:
        """The docs folder the live index was built from (sources are relative to it)."""
        with self._lock:
            return self._current().docs_root()

    def status(self) -> dict[str, Any]:
        """What `docvec status --json` shows: docs folder, last sync, files, chunks, model, writer, ..."""
        with self._lock:
            return status_data(self._current(), self.settings)

    def check_docs_root(self) -> None:
        """Refused when the index was built from another folder than the configured one (no sync could succeed)."""
        with self._lock:
            other = other_docs_root(self._current(), self.settings.resolve(self.settings.docs.path))
        if other is not None:
            recorded, given = other
            raise Refused(f"{self.location.describe()} was built from {recorded}, not {given} (docs.path): set "
                          f"docs.path to {recorded} to watch it, or run `docvec ingest {given} --docs-moved` once "
                          "if the docs now live there")

    def sync(self, on_progress: Callable[[Progress], None] | None = None, guard: SyncGuard = SyncGuard(),
             wait: bool = False) -> IngestReport:
        """Sync the configured docs folder into the index, building it if there is none yet (the writer lock is
        taken; `wait` waits for it, also for another handle or thread of this process that is syncing)."""
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be a callable taking a Progress, or None, got "
                            f"{type(on_progress).__name__} {on_progress!r:.60}")
        _expect("guard", guard, SyncGuard, optional=False)
        _expect("wait", wait, bool, optional=False)
        if self._sync_embedder is None:  # loaded once: watch mode syncs often, a model load costs ~0.5 s
            self._sync_embedder = make_configured_embedder(self.settings)
        embedder = self._sync_embedder
        with self._lock:
            with contextlib.suppress(IndexNotFound):  # none yet: this sync builds it
                self._current()  # take in what another process wrote before writing on top of it
            self._syncing = True
        known, self._sync_state = self._sync_state, None
        try:
            report = sync_index(self.location, embedder, scan_options(self.settings), chunk_params(self.settings),
                                guard, wait, on_progress, known)
            self._sync_state = report.state
        finally:
            with self._lock:
                self._syncing = False
                try:
                    self._open()  # this process's writes are in its cache: no fresh client needed
                except IndexNotFound:  # a first build that failed left no index (the error that says why goes on)
                    self._store = None
        return report

    def close(self) -> None:
        """Release the keyword index's file (a later search opens it again)."""
        with self._lock:
            self._close_keyword()

    def _close_keyword(self) -> None:
        self._wait_idle()
        if self._keyword is not None:
            self._keyword.close()
            self._keyword = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _behind(store: Store, keyword: KeywordIndex) -> bool:
    """Whether the keyword index may be behind the collection (a reader's catch-up then may write it)."""
    return str(store.collection_metadata().get(GENERATION_KEY, 0)) != keyword.get_state("generation")


def _where_items(where: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """{"tag": "auth"} or ["tag=auth"] -> ["tag=auth"]."""
    if where is None:
        return []
    if isinstance(where, Mapping):
        for key, value in where.items():
            if not isinstance(key, str) or "=" in key or not key.strip():  # read as KEY=VALUE: another filter
                raise ConfigError(f"where key {key!r} is not a key: write {{'KEY': 'VALUE'}}, e.g. "
                                  f"{{'source': 'guides/'}}")
            if isinstance(value, (Mapping, list, tuple)):  # {"$in": [...]} would be the text "{'$in': ...}"
                raise ConfigError(f"where {key!r}: {value!r} is not supported: a value is one string (a list-valued "
                                  f"key such as tags matches by membership)")
        return [f"{k}={v}" for k, v in where.items()]
    if isinstance(where, str):
        return [where]
    return [str(item) for item in where]


def _relative_source(source: str) -> str:
    """A source path as the index stores it, or ConfigError for anything that could point elsewhere."""
    source = valid_text(source)  # a lone surrogate names no indexed file (Chroma, and JSON out, refuse it)
    if not source or "\x00" in source or "\\" in source:
        raise ConfigError(f"source '{source}' is not a relative path of the docs folder")
    path = PurePosixPath(source)
    if path.is_absolute() or ".." in path.parts or source.startswith("~"):
        raise ConfigError(f"source '{source}' must be a path relative to the docs folder, without '..'")
    return str(path)


def _read_lines(root: Path, rel: str, start_line: int | None, end_line: int | None) -> Passage:
    # Opened beneath the docs folder's descriptor, following no symlink (docvec.confined): no check-then-open race.
    lines = read_beneath(root, rel, MAX_GET_BYTES).decode("utf-8", errors="replace").splitlines()
    first = max(1, start_line or 1)
    last = min(len(lines), end_line or len(lines), first + MAX_GET_LINES - 1)
    if first > max(len(lines), 1) or (end_line is not None and end_line < first):
        raise ConfigError(f"lines {first}-{end_line or len(lines)} are outside '{rel}' ({len(lines)} lines)")
    return Passage(rel, first, last, len(lines), "\n".join(lines[first - 1:last]))
