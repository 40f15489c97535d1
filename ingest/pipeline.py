"""Sync a docs folder into an index: embed only what changed, delete what is gone, never lose a good version.

The collection itself is the bookkeeping. Every chunk record carries its file's content hash and the number of
chunks that file has; a file counts as indexed only when all its records carry the same hash and there are as
many as announced. So a crash at any moment leaves files either complete (old or new version) or visibly
incomplete, and the next run finishes them. Per file, new records are added before stale ones are deleted.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from docvec.chunker import Chunk, ChunkParams, ParsedDocument, chunk_ids, content_hash, has_body
from docvec.embedders import Embedder, Vectors
from docvec.errors import (IndexMismatch, IndexNotFound, InputRejected, Interrupted, Refused,
                           StoreError)
from docvec.fingerprint import Fingerprint
from docvec.keyword import KeywordChanges, KeywordIndex, sync_keyword_index
from docvec.store import (DOCS_ROOT_KEY, STATS_KEY, WRITE_BATCH, Metadata, Store, StoreLocation, dumps_metadata,
                          is_unwritable)
from docvec.ingest.prefetch import NO_BODY, parsed
from docvec.ingest.scan import ScanOptions, Skipped, SourceFile, Unreadable, content_file_hash, read_markdown, scan

# Chunks written per window. A window is embedded, then written with one Chroma call of each kind (Chroma's cost
# is mostly per call, ~45 ms): the window is sized to ~WINDOW_SECONDS of embedding at the last window's measured
# speed, so a crash loses at most that much work, while fast embedders (a GPU server, reused vectors) write in
# batches of up to WINDOW_MAX, Chroma's batch limit. Local Chroma's cost per call grows with the collection (an
# add of 100 vectors: 80 ms at 10k records, 130-185 ms at 160k), so writes of 1,000 were 1.26x raw 5,000-record
# adds at 100k chunks and would be worse at a million (bench/README.md, "A million chunks"). Windows were capped at
# 1,000 from session 7 to 19 for memory (5,000 raised a 30k-chunk ingest's peak RSS from 341 to 489 MB).
WINDOW = 128
WINDOW_MAX = WRITE_BATCH
WINDOW_SECONDS = 5.0
EMBED_SLICE = 64  # progress is reported after each slice
THROUGHPUT_KEY = "docvec:chunks_per_s"
MAX_DELETE_SHARE = 0.5  # a run that would delete more of the index than this asks for --yes


@dataclass(frozen=True)
class SyncGuard:
    """What a run may do that usually means a mistake: read another docs folder than the index's, delete most of it."""

    docs_moved: bool = False  # the docs now live in the folder given: record it as the index's docs root
    allow_mass_delete: bool = False  # deleting more than max_delete_share of the index is intended
    hold_mass_delete: bool = False  # instead of refusing such a run, keep those files and do the rest (watch mode)
    max_delete_share: float = MAX_DELETE_SHARE


@dataclass(frozen=True)
class Progress:
    """A progress report: `done` of `total` units in a phase ('check' and 'index': files, 'delete': chunks)."""

    phase: str
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


@dataclass
class IngestReport:
    """What an ingest did (or, for a dry run, would do)."""

    files_seen: int = 0
    files_added: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    files_unchanged: int = 0
    files_removed: list[str] = field(default_factory=list)
    held_deletions: list[str] = field(default_factory=list)  # files gone from the folder, kept until confirmed
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunks_embedded: int = 0  # texts sent to the model
    chunks_reused: int = 0  # new records whose vector was copied from an identical chunk
    chunks_kept: int = 0  # records of changed files kept as they were (metadata refreshed at most)
    chunks_written: int = 0  # new records
    chunks_deleted: int = 0
    chunks_total: int = 0  # records in the index at the end
    dry_run: bool = False
    estimated_seconds: float | None = None
    seconds: float = 0.0
    embed_seconds: float = 0.0
    state: "IndexState | None" = field(default=None, repr=False, compare=False)  # bookkeeping as the run left it

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of files become counts plus the lists themselves)."""
        return {
            "dry_run": self.dry_run, "files_seen": self.files_seen, "files_added": len(self.files_added),
            "files_changed": len(self.files_changed), "files_unchanged": self.files_unchanged,
            "files_removed": len(self.files_removed), "files_skipped": len(self.skipped),
            "held_deletions": self.held_deletions,
            "chunks_embedded": self.chunks_embedded, "chunks_reused": self.chunks_reused,
            "chunks_kept": self.chunks_kept, "chunks_deleted": self.chunks_deleted,
            "chunks_total": self.chunks_total, "seconds": round(self.seconds, 3),
            "embed_seconds": round(self.embed_seconds, 3), "estimated_seconds": self.estimated_seconds,
            "added": self.files_added, "changed": self.files_changed, "removed": self.files_removed,
            "skipped": [{"file": s.rel, "reason": s.reason} for s in self.skipped], "warnings": self.warnings,
        }


class Record(NamedTuple):
    """The bookkeeping fields of one stored chunk: all a sync needs, a few hundred bytes per record (the full
    metadata, with labels and front matter, is read only for the files that changed)."""

    file_hash: Any
    chunks_in_file: Any
    chunk_index: Any
    hash: Any
    fp: Any

    @classmethod
    def of(cls, meta: Metadata) -> "Record":
        """The record of a stored chunk's metadata."""
        return cls.of_fields(*(meta.get(k) for k in cls._fields))

    @classmethod
    def of_fields(cls, file_hash: Any, chunks_in_file: Any, chunk_index: Any, hash: Any, fp: Any) -> "Record":
        """The record of its fields in order (the state file's rows: no dict a record, 1M of them at start-up)."""
        # Interned: the thousands of records of one file version share one string per field (not the text hash)
        return cls(_interned(file_hash), _interned(chunks_in_file), _interned(chunk_index), hash, _interned(fp))


def _interned(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


@dataclass
class IndexedFile:
    """What the index holds for one source file."""

    records: dict[str, Record] = field(default_factory=dict)

    @property
    def fingerprints(self) -> set[Any]:
        """The fingerprint hashes of the file's records (one, normally)."""
        return {r.fp for r in self.records.values()}

    @property
    def complete_hash(self) -> str | None:
        """The file hash when every record agrees on it and none is missing, else None."""
        hashes = {r.file_hash for r in self.records.values()}
        counts = {r.chunks_in_file for r in self.records.values()}
        if len(hashes) != 1 or counts != {len(self.records)}:
            return None
        return str(next(iter(hashes)))


@dataclass
class VectorLender:
    """Another collection whose vectors a run may copy: one built by the same model, so the same text has the same
    vector there (a reindex that changes only the chunking re-embeds only the texts that are new)."""

    store: Store
    by_hash: dict[str, str]  # content hash of an embedded text → a record id holding its vector

    @classmethod
    def of(cls, store: Store) -> "VectorLender":
        """The records of `store` that its own fingerprint built (a record of another lends nothing)."""
        fp = store.fingerprint().short_hash()
        by_hash: dict[str, str] = {}
        for rid, meta in store.iter_metadata():
            if isinstance(meta.get("hash"), str) and meta.get("fp") == fp:
                by_hash.setdefault(str(meta["hash"]), rid)
        return cls(store, by_hash)

    def vectors(self, hashes: Iterable[str]) -> dict[str, Vectors]:
        """The vectors this collection holds for `hashes`, by hash."""
        wanted = {h: self.by_hash[h] for h in hashes if h in self.by_hash}
        stored = self.store.get_embeddings(sorted(set(wanted.values())))
        return {h: stored[rid] for h, rid in wanted.items() if rid in stored}


@dataclass
class IndexState:
    """The index's records grouped by source file, and one record id per content hash (for vector reuse)."""

    files: dict[str, IndexedFile] = field(default_factory=lambda: defaultdict(IndexedFile))
    by_hash: dict[str, str] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    lender: VectorLender | None = None  # lends the vectors of texts this collection has none for
    # Where a completed run left it: the physical collection, its generation and the fingerprint hash.
    left_at: tuple[str, object, str] | None = None

    def still_valid(self, store: Store, fingerprint: str) -> bool:
        """Whether the collection is exactly as the run that left this state left it (no one wrote since)."""
        return self.left_at == (store.name, store.stored_generation(), fingerprint) and not store.writing()

    def wrote(self, fw: "FileWork") -> None:
        """Take in a file's records as a run just wrote them (its records that are gone lend no vector)."""
        self.forget(fw.rel)
        self.files[fw.rel] = IndexedFile({rid: Record.of(m) for rid, m in zip(fw.ids, fw.metadatas)})
        for rid, meta in zip(fw.ids, fw.metadatas):
            self.by_hash[str(meta["hash"])] = rid

    def forget(self, source: str) -> None:
        """Drop a file whose records were deleted."""
        for rid, record in self.files.pop(source, IndexedFile()).records.items():
            if self.by_hash.get(record.hash) == rid:
                del self.by_hash[record.hash]

    @classmethod
    def read(cls, store: Store | None, fingerprint: str | None = None) -> "IndexState":
        """Group the index's records; only records built under `fingerprint` may lend their vectors."""
        state = cls()
        for rid, meta in store.iter_metadata() if store else ():
            source = meta.get("source")
            if not isinstance(source, str):
                state.orphans.append(rid)
                continue
            record = Record.of(meta)
            state.files[sys.intern(source)].records[rid] = record
            if isinstance(record.hash, str) and record.fp == fingerprint:
                state.by_hash.setdefault(record.hash, rid)
        return state

    @property
    def records(self) -> int:
        return sum(len(f.records) for f in self.files.values()) + len(self.orphans)


@dataclass
class FileWork:
    """A new or changed file: its chunks, ids and metadata, and which records it replaces."""

    rel: str
    chunks: list[Chunk]
    ids: list[str]
    metadatas: list[Metadata]
    old: dict[str, Record]
    stems: tuple[str, ...] = ()  # each chunk's text analysed for the keyword index, when a worker did it


def open_for_writing(location: StoreLocation, fingerprint: Fingerprint) -> Store:
    """Open (or create) the index, refusing one built with another fingerprint; sweep what deletes left in its
    files (a prune killed after Chroma's delete_collection leaves rows and a folder that no later write touches)."""
    store = Store.open(location, create_with=fingerprint)
    check_fingerprint(store, fingerprint)
    store.sweep_residue()
    return store


def check_fingerprint(store: Store, fingerprint: Fingerprint) -> None:
    """Raise IndexMismatch naming what differs between the index and the configuration."""
    built = store.fingerprint()
    if built != fingerprint:
        changes = "; ".join(built.differences(fingerprint))
        work = ("re-chunk into a new index, copying the vectors of unchanged texts" if built.same_vectors(fingerprint)
                else "re-embed into a new index")
        raise IndexMismatch(f"{store.location.describe()} was built with another configuration ({changes}): "
                            f"run `docvec reindex` to {work} (the current one keeps answering "
                            f"until it is complete), or restore the old settings")


def ingest(store: Store | None, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams,
           dry_run: bool = False, on_progress: ProgressCallback | None = None,
           guard: SyncGuard = SyncGuard(), known: IndexState | None = None,
           lender: VectorLender | None = None) -> IngestReport:
    """Bring the index in line with the docs folder; with dry_run, only report what would be done.

    `store` may be None only for a dry run against an index that does not exist yet. Raises Refused when the
    folder is not the one the index was built from, or the run would delete most of the index (see SyncGuard).
    `known` is the `state` a previous report of this process returned: used instead of reading every record's
    bookkeeping (~80 µs each) when no one wrote since (a long-lived process syncing often: watch mode).
    `lender` is a collection of the same model whose vectors are copied for texts this one has none for.
    """
    started = time.perf_counter()
    report = IngestReport(dry_run=dry_run)
    if store is not None:
        check_docs_root(store, scan_options.root, guard)
    try:
        _sync(store, embedder, scan_options, params, dry_run, on_progress or (lambda p: None), report, guard, known,
              lender)
    except KeyboardInterrupt:
        # Chroma writes are atomic per call and a signal lands between calls: what is stored is consistent.
        report.seconds = time.perf_counter() - started
        if store is not None and not dry_run:
            report.chunks_total = _count_quietly(store)
        raise Interrupted("interrupted: what was stored is kept; run `docvec ingest` again to continue",
                          report) from None
    report.seconds = time.perf_counter() - started
    if store is not None and not dry_run:
        _record_stats(store, scan_options.root, report)
        report.warnings.extend(_graph_note(store, report.chunks_total))
    return report


def _graph_note(store: Store, chunks: int) -> list[str]:
    """A warning when many of the HNSW graph's slots hold deleted chunks (a 100-byte read of its saved header)."""
    from docvec.status import compaction_advised, graph_slots

    slots = graph_slots(store, chunks)
    if not compaction_advised(slots):
        return []
    return [f"{slots['dead_slots']} of the HNSW graph's {slots['slots']} slots hold deleted chunks (memory and search "
            f"time): `docvec reindex --compact` rebuilds it without them, re-embedding nothing"]


def docs_root_of(root: Path) -> str:
    """The form in which an index records its docs folder: absolute, symlinks resolved."""
    return str(root.resolve())


def other_docs_root(store: Store, root: Path) -> tuple[str, str] | None:
    """(the folder the index was built from, `root`'s) when they differ; None when they match or none is recorded."""
    recorded, given = store.docs_root(), docs_root_of(root)
    return None if recorded is None or recorded == given else (recorded, given)


def check_docs_root(store: Store, root: Path, guard: SyncGuard = SyncGuard()) -> None:
    """Refuse to sync (or verify) an index against another folder than the one it was built from."""
    other = other_docs_root(store, root)
    if other is None or guard.docs_moved:
        return
    recorded, given = other
    raise Refused(f"{store.location.describe()} was built from {recorded}, not {given}: pass {recorded} as DOCS_DIR "
                  f"(or set docs.path), or add --docs-moved if the docs now live in {given}")


def exceeds_share(deleting: int, total: int, guard: SyncGuard) -> bool:
    """Whether losing `deleting` of `total` (chunks, files) is more than the guard allows without --yes."""
    return not guard.allow_mass_delete and deleting > 0 and deleting > guard.max_delete_share * total


def check_deletions(deleting: int, total: int, what: str, guard: SyncGuard) -> None:
    """Refuse a run that would delete more than the allowed share of the index, unless confirmed."""
    if not exceeds_share(deleting, total, guard):
        return
    raise Refused(f"this run would delete {deleting} of the index's {total} chunks ({what}): if the docs folder "
                  f"is right, run again with --yes; nothing was changed")


def _count_quietly(store: Store) -> int:
    try:
        return store.count()
    except StoreError:
        return 0


def _sync(store: Store | None, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams, dry_run: bool,
          progress: ProgressCallback, report: IngestReport, guard: SyncGuard, known: IndexState | None,
          lender: VectorLender | None) -> None:
    """Scan, sort the files out, then (unless a dry run) chunk, embed and write them a window at a time; fills
    `report` as it goes. Only one window's chunks are held at once: memory does not grow with the folder."""
    fp = Fingerprint.build(embedder.info, params).short_hash()
    files, skipped = scan(scan_options)
    if known is not None and store is not None and not dry_run and known.still_valid(store, fp):
        state = known
    else:
        state = IndexState.read(store, fp)
    state.lender = lender
    report.files_seen, report.skipped = len(files) + len(skipped), list(skipped)
    todo, keep_sources = _triage(files, state, fp, report, progress)
    removed = sorted(s for s in state.files if s not in keep_sources)
    report.files_removed = removed
    stale = [rid for s in removed for rid in state.files[s].records] + state.orphans
    work = _chunked(todo, state, embedder, params, fp, report)
    if dry_run or store is None:
        _fill_dry_run(report, work, stale, state, store)
        return
    if guard.hold_mass_delete and exceeds_share(len(stale), state.records, guard):
        # Additions and edits go on; the deletions wait for `docvec ingest --yes` (a watcher must not go quiet).
        report.held_deletions, report.files_removed, removed, stale = removed, [], [], []
    check_deletions(len(stale), state.records, f"{len(removed)} of {len(state.files)} files are gone from "
                    f"{scan_options.root}", guard)
    was_writing = store.writing()
    # The keyword index takes each window's rows as they are written (an interrupted run leaves them findable).
    with KeywordChanges.follow(store, was_writing) as delta:
        _execute(store, embedder, work, len(todo), state, stale, report, progress, scan_options.root, was_writing,
                 delta)
        for source in removed:
            state.forget(source)
        if not report.held_deletions:
            state.orphans = []
        # Nothing written: the state's count is exact (Chroma's count() loads a local collection's vector index,
        # ~2.5 KB a chunk, which a no-op sync otherwise never touches)
        unchanged = not (report.chunks_written or report.chunks_deleted or was_writing)
        report.chunks_total = state.records if unchanged else store.count()
        _sync_keywords(store, delta)
    state.left_at = (store.name, store.stored_generation(), fp)
    report.state = state


def _triage(files: Sequence[SourceFile], state: IndexState, fp: str, report: IngestReport,
            progress: ProgressCallback) -> tuple[list[SourceFile], set[str]]:
    """Read and hash every file (no chunking): return the new or changed ones, and the sources whose records
    stay."""
    todo: list[SourceFile] = []
    keep: set[str] = set()
    for n, source in enumerate(files, 1):
        progress(Progress("check", n, len(files)))
        indexed = state.files.get(source.rel)
        try:
            text, data = read_markdown(source.path)
        except Unreadable as exc:
            report.skipped.append(Skipped(source.rel, str(exc)))
            if indexed is not None and exc.transient:
                keep.add(source.rel)  # a read error is not a deletion: keep what is indexed
            continue
        if indexed is not None and indexed.complete_hash == content_file_hash(data) and indexed.fingerprints == {fp}:
            keep.add(source.rel)
            report.files_unchanged += 1
            continue
        if not has_body(text):
            report.skipped.append(Skipped(source.rel, NO_BODY))
            continue
        keep.add(source.rel)
        (report.files_changed if indexed else report.files_added).append(source.rel)
        todo.append(source)
    return todo, keep


def _chunked(todo: Sequence[SourceFile], state: IndexState, embedder: Embedder, params: ChunkParams, fp: str,
             report: IngestReport) -> Iterator[FileWork]:
    """The new and changed files chunked, in order (read again: a file's chunks are held only while its window is
    written; a large run reads and chunks ahead in a worker process, see prefetch.py)."""
    for source, got in parsed(todo, embedder, params):
        if got.doc is None:  # changed since it was sorted out: what is indexed of it stays
            _unlist(source.rel, report)
            report.skipped.append(Skipped(source.rel, got.skipped or NO_BODY))
            continue
        report.warnings.extend(f"{source.rel}: {w}" for w in got.doc.warnings)
        yield plan_file(source.rel, got.file_hash, fp, got.doc, state.files.get(source.rel), got.stems)


def plan_file(rel: str, file_hash: str, fp: str, doc: ParsedDocument, indexed: IndexedFile | None,
              stems: tuple[str, ...] = ()) -> FileWork:
    """The records a clean build writes for one file (ids, metadata, chunks), and which records it replaces."""
    ids = chunk_ids(rel, doc.chunks)
    metas = [_metadata(rel, file_hash, fp, doc, i, c) for i, c in enumerate(doc.chunks)]
    return FileWork(rel, doc.chunks, ids, metas, dict(indexed.records) if indexed else {}, stems)


def _metadata(rel: str, file_hash: str, fp: str, doc: ParsedDocument, index: int, chunk: Chunk) -> Metadata:
    trail = list(chunk.trail)
    if doc.title and (not trail or trail[0] != doc.title):
        trail.insert(0, doc.title)
    meta: Metadata = {
        "source": rel, "file_hash": file_hash, "chunk_index": index, "chunks_in_file": len(doc.chunks),
        "label": " > ".join(trail) or rel, "trail": " > ".join(chunk.trail), "start_line": chunk.start_line,
        "end_line": chunk.end_line, "start_char": chunk.start_char, "end_char": chunk.end_char,
        "hash": content_hash(chunk.embed_text), "tokens": chunk.tokens, "fp": fp,
    }
    if doc.title:
        meta["title"] = doc.title
    dirs = ["/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1)]
    if dirs:
        meta["dirs"] = dirs  # lets a query filter on a folder with $contains
    for key, value in doc.front_matter.items():
        if value != []:
            meta[f"fm.{key}"] = value
    return meta


def needs_vector(rid: str, meta: Metadata, old: dict[str, Record]) -> bool:
    """A record needs a (new) vector unless the file already has it, same text, same fingerprint."""
    return rid not in old or old[rid].hash != meta["hash"] or old[rid].fp != meta["fp"]


def _fill_dry_run(report: IngestReport, work: Iterable[FileWork], stale: list[str], state: IndexState,
                  store: Store | None) -> None:
    to_embed: set[str] = set()
    new = kept = deleted = 0
    for fw in work:
        for rid, m in zip(fw.ids, fw.metadatas):
            if not needs_vector(rid, m, fw.old):
                kept += 1
                continue
            new += 1
            if m["hash"] not in state.by_hash and not (state.lender and m["hash"] in state.lender.by_hash):
                to_embed.add(str(m["hash"]))
        deleted += len(set(fw.old) - set(fw.ids))
    report.chunks_embedded = len(to_embed)
    report.chunks_reused = new - len(to_embed)
    report.chunks_kept = kept
    report.chunks_deleted = len(stale) + deleted
    report.chunks_total = sum(len(f.records) for f in state.files.values()) + new - report.chunks_deleted
    rate = (store.collection_metadata().get(THROUGHPUT_KEY) if store else None) or None
    report.estimated_seconds = round(len(to_embed) / float(rate), 1) if rate else None


def _execute(store: Store, embedder: Embedder, work: Iterable[FileWork], files: int, state: IndexState,
             stale: list[str], report: IngestReport, progress: ProgressCallback, root: Path, was_writing: bool,
             delta: KeywordChanges) -> None:
    """Write the files a window at a time (taking each into `state`, whose `by_hash` lends vectors), then
    delete what is gone."""
    if files or stale or store.docs_root() != docs_root_of(root):
        store.begin_write()  # before the first write: a run killed from here on is visible to the next one
        was_writing = True
    window: list[FileWork] = []
    pending, target, done = 0, WINDOW, 0
    progress(Progress("index", 0, files))
    for fw in work:
        window.append(fw)
        pending += len(fw.ids)
        if pending >= target:
            before = (report.chunks_embedded, report.embed_seconds)
            _flush(store, embedder, window, state, report, delta)
            target = _next_window(pending, report.chunks_embedded - before[0], report.embed_seconds - before[1])
            done += len(window)
            progress(Progress("index", done, files))
            window, pending = [], 0
    _flush(store, embedder, window, state, report, delta)
    progress(Progress("index", files, files))
    # Texts embedded for a file that was then skipped were not written: never a negative count.
    report.chunks_reused = max(0, report.chunks_written - report.chunks_embedded)
    progress(Progress("delete", 0, len(stale)))
    store.delete(stale)
    delta.record([], stale)
    report.chunks_deleted += len(stale)
    progress(Progress("delete", len(stale), len(stale)))
    _record_generation(store, report, root, was_writing, delta.touched)


def _next_window(written: int, embedded: int, seconds: float) -> int:
    """Chunks in the next window: about WINDOW_SECONDS of embedding at the speed just measured."""
    if embedded == 0 or seconds <= 0:
        return WINDOW_MAX if written else WINDOW  # nothing was embedded: writing is all the work
    return max(WINDOW, min(WINDOW_MAX, int(WINDOW_SECONDS * written / seconds)))


def _flush(store: Store, embedder: Embedder, window: list[FileWork], state: IndexState, report: IngestReport,
           delta: KeywordChanges) -> None:
    """Get a vector for every text the window's files need (each embedded once), then write the files."""
    needed = {m["hash"]: c.embed_text for fw in window for rid, m, c in zip(fw.ids, fw.metadatas, fw.chunks)
              if needs_vector(rid, m, fw.old)}
    copy_from = {h: state.by_hash[h] for h in needed if h in state.by_hash}
    stored = store.get_embeddings(sorted(set(copy_from.values())))
    vectors = {h: stored[rid] for h, rid in copy_from.items() if rid in stored}
    if state.lender is not None:
        vectors.update(state.lender.vectors([h for h in needed if h not in vectors]))
    # Embed what is new, and what could not be copied (its source record was replaced meanwhile).
    todo = sorted((h for h in needed if h not in vectors), key=lambda h: len(needed[h]))
    while todo:
        try:
            _embed_into(vectors, embedder, todo, needed, report)
        except InputRejected as exc:  # the model cannot read one chunk: leave its file as it was, go on
            _drop_files_with(todo[exc.index], str(exc), window, report)
        still = {m["hash"] for fw in window for m in fw.metadatas}
        todo = [h for h in todo if h not in vectors and h in still]
    _write_window(store, window, vectors, report, delta)
    # What this window wrote is in the store now: a later file with the same text copies its vector.
    for fw in window:
        state.wrote(fw)


def _embed_into(vectors: dict[str, Vectors], embedder: Embedder, todo: list[str], needed: dict[str, str],
                report: IngestReport) -> None:
    """Embed `todo` (hashes without a vector yet) slice by slice; a rejected input's index is its place in todo."""
    for begin in range(0, len(todo), EMBED_SLICE):
        hashes = todo[begin:begin + EMBED_SLICE]
        t0 = time.perf_counter()
        try:
            embedded = embedder.embed_documents([needed[h] for h in hashes])
        except InputRejected as exc:
            raise InputRejected(str(exc), begin + exc.index) from exc
        for h, vec in zip(hashes, embedded):
            vectors[h] = vec  # a float32 row: Python floats took 9 KB per chunk of a window
        report.embed_seconds += time.perf_counter() - t0
        report.chunks_embedded += len(hashes)


def _drop_files_with(bad_hash: str, reason: str, window: list[FileWork], report: IngestReport) -> None:
    """Skip the files holding a chunk the model refuses; what the index holds for them stays untouched."""
    for fw in [fw for fw in window if any(m["hash"] == bad_hash for m in fw.metadatas)]:
        meta = next(m for m in fw.metadatas if m["hash"] == bad_hash)
        window.remove(fw)
        rel = str(meta["source"])
        report.skipped.append(Skipped(rel, f"the model refused the chunk at line {meta['start_line']} "
                                           f"('{meta['label']}'): {reason}"))
        _unlist(rel, report)


def _write_window(store: Store, window: list[FileWork], vectors: dict[str, Vectors], report: IngestReport,
                  delta: KeywordChanges) -> None:
    """Write the window's files in one call of each kind; if Chroma refuses the batch, file by file, so that one
    file it cannot store (a name or value it rejects) is skipped with the reason and the others are written."""
    try:
        _write_files(store, window, vectors, report, delta)
        return
    except StoreError as exc:
        delta.forget()  # part of the window may be written: the keyword index is compared row by row
        if len(window) == 1 or is_unwritable(exc):
            raise
        first = exc
    written = 0
    for fw in list(window):
        try:
            _write_files(store, [fw], vectors, report, delta)
            written += 1
        except StoreError as exc:
            if is_unwritable(exc):
                raise
            window.remove(fw)
            _unlist(fw.rel, report)
            report.skipped.append(Skipped(fw.rel, f"the index refused its chunks: {_after_colon(str(exc))}"))
    if not written:
        raise first


def _after_colon(message: str) -> str:
    return message.split(": ", 1)[-1]


def _unlist(rel: str, report: IngestReport) -> None:
    for names in (report.files_added, report.files_changed):
        if rel in names:
            names.remove(rel)


def _write_files(store: Store, window: list[FileWork], vectors: dict[str, Vectors], report: IngestReport,
                 delta: KeywordChanges) -> None:
    """All new records of the files, then refreshed metadata, then deletion of what the new versions dropped.

    One call of each kind: Chroma's cost is mostly per call (~45 ms), not per record. Every file's new records
    are stored before any of its old ones is removed, and one add is atomic in Chroma.
    """
    add: list[tuple[str, Metadata, Chunk]] = []
    kept: list[tuple[str, Metadata]] = []
    texts: dict[str, str] = {}
    replaced: list[str] = []
    gone: list[str] = []
    stems: dict[str, str] = {}
    for fw in window:
        for i, (rid, meta, chunk) in enumerate(zip(fw.ids, fw.metadatas, fw.chunks)):
            if needs_vector(rid, meta, fw.old):
                add.append((rid, meta, chunk))
                if fw.stems:
                    stems[rid] = fw.stems[i]
                if rid in fw.old:
                    replaced.append(rid)  # same id, other text or model: rare, must go before its re-add
            else:
                kept.append((rid, meta))
                texts[rid] = chunk.text
        gone.extend(sorted(set(fw.old) - set(fw.ids)))
    stored = store.get_metadatas([r for r, _ in kept]) if kept else {}
    update = [(rid, m) for rid, m in kept if dumps_metadata(stored.get(rid, {})) != dumps_metadata(m)]
    store.delete(replaced)
    store.add([r for r, _, _ in add], [vectors[m["hash"]] for _, m, _ in add], [c.text for _, _, c in add],
              [m for _, m, _ in add])
    store.replace_metadata([r for r, _ in update], [m for _, m in update], stored)  # keys it lost go too
    store.delete(gone)
    relabelled = [(rid, str(m.get("label", "")), texts[rid]) for rid, m in update
                  if stored.get(rid, {}).get("label") != m.get("label")]
    delta.record([(rid, str(m.get("label", "")), c.text) for rid, m, c in add] + relabelled,
                 replaced + gone + [rid for rid, _, _ in relabelled], stems)
    report.chunks_kept += len(kept)
    report.chunks_written += len(add)
    report.chunks_deleted += len(gone) + len(replaced)


def _record_generation(store: Store, report: IngestReport, root: Path, was_writing: bool,
                       touched: list[str] | None) -> None:
    """Mark the collection changed (so the keyword index follows; `touched`: every id the run wrote or deleted,
    when known), clear the writing mark, record the docs root and the measured embedding speed."""
    if not (report.chunks_written or report.chunks_deleted or report.chunks_kept or was_writing):
        return
    extra: Metadata = {DOCS_ROOT_KEY: docs_root_of(root)}
    if report.chunks_embedded >= 32 and report.embed_seconds > 0:
        extra[THROUGHPUT_KEY] = round(report.chunks_embedded / report.embed_seconds, 2)
    store.bump_generation(extra, touched)


def _record_stats(store: Store, root: Path, report: IngestReport) -> None:
    """What `status` shows without reading every record: files, chunks, skipped by reason, when, how long."""
    reasons = Counter(reason_kind(s.reason) for s in report.skipped)
    files = report.files_unchanged + len(report.files_added) + len(report.files_changed)
    stats = {"files": files, "chunks": report.chunks_total, "skipped": dict(reasons),
             "synced_at": round(time.time(), 3), "seconds": round(report.seconds, 3), "docs_root": docs_root_of(root)}
    meta = store.collection_metadata()
    if meta.get(STATS_KEY) != json.dumps(stats, sort_keys=True):
        meta[STATS_KEY] = json.dumps(stats, sort_keys=True)
        store.set_collection_metadata(meta)


def reason_kind(reason: str) -> str:
    """A skip reason without its particulars ('too large (3.1 MB > ...)' -> 'too large')."""
    return reason.split(" (", 1)[0].split(":", 1)[0].strip()


def _sync_keywords(store: Store, changes: KeywordChanges) -> None:
    """The keyword index follows the collection it is derived from (taking this run's own changes)."""
    with changes.index or KeywordIndex.of(store) as index:  # the one the run wrote to, when it has one
        sync_keyword_index(store, index, changes=changes)


def index_exists(location: StoreLocation) -> Store | None:
    """The existing index, or None when there is none yet."""
    try:
        return Store.open(location)
    except IndexNotFound:
        return None
