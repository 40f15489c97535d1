"""Sync a docs folder into an index: embed only what changed, delete what is gone, never lose a good version.

The collection itself is the bookkeeping. Every chunk record carries its file's content hash and the number of
chunks that file has; a file counts as indexed only when all its records carry the same hash and there are as
many as announced. So a crash at any moment leaves files either complete (old or new version) or visibly
incomplete, and the next run finishes them. Per file, new records are added before stale ones are deleted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from docvec.chunker import Chunk, ChunkParams, ParsedDocument, chunk_ids, chunk_markdown, content_hash, has_body
from docvec.embedders import Embedder
from docvec.errors import IndexMismatch, IndexNotFound, InputRejected, Interrupted
from docvec.fingerprint import Fingerprint
from docvec.keyword import KeywordIndex, sync_keyword_index
from docvec.store import Metadata, Store, StoreLocation, dumps_metadata
from ingest.scan import ScanOptions, Skipped, SourceFile, Unreadable, content_file_hash, read_markdown, scan

# Chunks written per window. A window is embedded, then written with one Chroma call of each kind (Chroma's cost
# is mostly per call, ~45 ms): the window is sized to ~WINDOW_SECONDS of embedding at the last window's measured
# speed, so a crash loses at most that much work, while fast embedders (a GPU server, reused vectors) write in
# batches close to Chroma's maximum.
WINDOW = 128
WINDOW_MAX = 5000
WINDOW_SECONDS = 5.0
EMBED_SLICE = 64  # progress is reported after each slice
THROUGHPUT_KEY = "docvec:chunks_per_s"


@dataclass(frozen=True)
class Progress:
    """A progress report: `done` of `total` units in a phase ('chunk', 'embed', 'delete')."""

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

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of files become counts plus the lists themselves)."""
        return {
            "dry_run": self.dry_run, "files_seen": self.files_seen, "files_added": len(self.files_added),
            "files_changed": len(self.files_changed), "files_unchanged": self.files_unchanged,
            "files_removed": len(self.files_removed), "files_skipped": len(self.skipped),
            "chunks_embedded": self.chunks_embedded, "chunks_reused": self.chunks_reused,
            "chunks_kept": self.chunks_kept, "chunks_deleted": self.chunks_deleted,
            "chunks_total": self.chunks_total, "seconds": round(self.seconds, 3),
            "embed_seconds": round(self.embed_seconds, 3), "estimated_seconds": self.estimated_seconds,
            "added": self.files_added, "changed": self.files_changed, "removed": self.files_removed,
            "skipped": [{"file": s.rel, "reason": s.reason} for s in self.skipped], "warnings": self.warnings,
        }


@dataclass
class IndexedFile:
    """What the index holds for one source file."""

    records: dict[str, Metadata] = field(default_factory=dict)

    @property
    def fingerprints(self) -> set[Any]:
        """The fingerprint hashes of the file's records (one, normally)."""
        return {m.get("fp") for m in self.records.values()}

    @property
    def complete_hash(self) -> str | None:
        """The file hash when every record agrees on it and none is missing, else None."""
        hashes = {m.get("file_hash") for m in self.records.values()}
        counts = {m.get("chunks_in_file") for m in self.records.values()}
        if len(hashes) != 1 or counts != {len(self.records)}:
            return None
        return str(next(iter(hashes)))


@dataclass
class IndexState:
    """The index's records grouped by source file, and one record id per content hash (for vector reuse)."""

    files: dict[str, IndexedFile] = field(default_factory=lambda: defaultdict(IndexedFile))
    by_hash: dict[str, str] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, store: Store | None, fingerprint: str | None = None) -> "IndexState":
        """Group the index's records; only records built under `fingerprint` may lend their vectors."""
        state = cls()
        for rid, meta in store.iter_metadata() if store else ():
            source = meta.get("source")
            if not isinstance(source, str):
                state.orphans.append(rid)
                continue
            state.files[source].records[rid] = meta
            if isinstance(meta.get("hash"), str) and meta.get("fp") == fingerprint:
                state.by_hash.setdefault(meta["hash"], rid)
        return state


@dataclass
class FileWork:
    """A new or changed file: its chunks, ids and metadata, and which records it replaces."""

    rel: str
    chunks: list[Chunk]
    ids: list[str]
    metadatas: list[Metadata]
    old: dict[str, Metadata]


def open_for_writing(location: StoreLocation, fingerprint: Fingerprint) -> Store:
    """Open (or create) the index, refusing one built with another fingerprint."""
    store = Store.open(location, create_with=fingerprint)
    check_fingerprint(store, fingerprint)
    return store


def check_fingerprint(store: Store, fingerprint: Fingerprint) -> None:
    """Raise IndexMismatch naming what differs between the index and the configuration."""
    built = store.fingerprint()
    if built != fingerprint:
        changes = "; ".join(built.differences(fingerprint))
        raise IndexMismatch(f"{store.location.describe()} was built with another configuration ({changes}): "
                            f"run `docvec reindex` to re-embed into a new index (the current one keeps answering "
                            f"until it is complete), or restore the old settings")


def ingest(store: Store | None, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams,
           dry_run: bool = False, on_progress: ProgressCallback | None = None) -> IngestReport:
    """Bring the index in line with the docs folder; with dry_run, only report what would be done.

    `store` may be None only for a dry run against an index that does not exist yet.
    """
    started = time.perf_counter()
    report = IngestReport(dry_run=dry_run)
    try:
        _sync(store, embedder, scan_options, params, dry_run, on_progress or (lambda p: None), report)
    except KeyboardInterrupt:
        # Chroma writes are atomic per call and a signal lands between calls: what is stored is consistent.
        report.seconds = time.perf_counter() - started
        raise Interrupted("interrupted: what was stored is kept; run `docvec ingest` again to continue",
                          report) from None
    report.seconds = time.perf_counter() - started
    return report


def _sync(store: Store | None, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams, dry_run: bool,
          progress: ProgressCallback, report: IngestReport) -> None:
    """Scan, plan, then (unless a dry run) embed and write; fills `report` as it goes."""
    fp = Fingerprint.build(embedder.info, params).short_hash()
    files, skipped = scan(scan_options)
    state = IndexState.read(store, fp)
    report.files_seen, report.skipped = len(files) + len(skipped), list(skipped)
    work, keep_sources = _plan(files, state, embedder, params, fp, report, progress)
    removed = sorted(s for s in state.files if s not in keep_sources)
    report.files_removed = removed
    stale = [rid for s in removed for rid in state.files[s].records] + state.orphans
    todo = _embedding_plan(work, state)
    if dry_run or store is None:
        _fill_dry_run(report, work, todo, stale, state, store)
        return
    _execute(store, embedder, work, todo, stale, report, progress)
    report.chunks_total = store.count()
    _sync_keywords(store)


def _plan(files: Sequence[SourceFile], state: IndexState, embedder: Embedder, params: ChunkParams, fp: str,
          report: IngestReport, progress: ProgressCallback) -> tuple[list[FileWork], set[str]]:
    """Chunk the files that are new or changed; return them and the sources whose records stay."""
    work: list[FileWork] = []
    keep: set[str] = set()
    for n, source in enumerate(files, 1):
        progress(Progress("chunk", n, len(files)))
        indexed = state.files.get(source.rel)
        try:
            text, data = read_markdown(source.path)
        except Unreadable as exc:
            report.skipped.append(Skipped(source.rel, str(exc)))
            if indexed is not None and exc.transient:
                keep.add(source.rel)  # a read error is not a deletion: keep what is indexed
            continue
        file_hash = content_file_hash(data)
        if indexed is not None and indexed.complete_hash == file_hash and indexed.fingerprints == {fp}:
            keep.add(source.rel)
            report.files_unchanged += 1
            continue
        if not has_body(text):
            report.skipped.append(Skipped(source.rel, "no text besides front matter"))
            continue
        keep.add(source.rel)
        doc = chunk_markdown(text, embedder.count_tokens, params)
        report.warnings.extend(f"{source.rel}: {w}" for w in doc.warnings)
        (report.files_changed if indexed else report.files_added).append(source.rel)
        work.append(_file_work(source.rel, file_hash, fp, doc, indexed))
    return work, keep


def _file_work(rel: str, file_hash: str, fp: str, doc: ParsedDocument, indexed: IndexedFile | None) -> FileWork:
    ids = chunk_ids(rel, doc.chunks)
    metas = [_metadata(rel, file_hash, fp, doc, i, c) for i, c in enumerate(doc.chunks)]
    return FileWork(rel, doc.chunks, ids, metas, dict(indexed.records) if indexed else {})


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


@dataclass
class EmbeddingPlan:
    """Which content hashes must be embedded, and which can copy the vector of an existing record."""

    embed: dict[str, str] = field(default_factory=dict)  # content hash -> text to embed
    reuse: dict[str, str] = field(default_factory=dict)  # content hash -> id of a record holding its vector

    @staticmethod
    def needs_vector(rid: str, meta: Metadata, old: dict[str, Metadata]) -> bool:
        """A record needs a (new) vector unless the file already has it, same text, same fingerprint."""
        return rid not in old or old[rid].get("hash") != meta["hash"] or old[rid].get("fp") != meta["fp"]


def _embedding_plan(work: Iterable[FileWork], state: IndexState) -> EmbeddingPlan:
    plan = EmbeddingPlan()
    for fw in work:
        for rid, meta, chunk in zip(fw.ids, fw.metadatas, fw.chunks):
            h = meta["hash"]
            if not plan.needs_vector(rid, meta, fw.old) or h in plan.embed or h in plan.reuse:
                continue
            if h in state.by_hash:
                plan.reuse[h] = state.by_hash[h]
            else:
                plan.embed[h] = chunk.embed_text
    return plan


def _fill_dry_run(report: IngestReport, work: list[FileWork], plan: EmbeddingPlan, stale: list[str],
                  state: IndexState, store: Store | None) -> None:
    report.chunks_embedded = len(plan.embed)
    new = [rid for fw in work for rid, m in zip(fw.ids, fw.metadatas) if plan.needs_vector(rid, m, fw.old)]
    report.chunks_reused = len(new) - len(plan.embed)
    report.chunks_kept = sum(len(fw.ids) for fw in work) - len(new)
    report.chunks_deleted = len(stale) + sum(len(set(fw.old) - set(fw.ids)) for fw in work)
    report.chunks_total = sum(len(f.records) for f in state.files.values()) + len(new) - report.chunks_deleted
    rate = (store.collection_metadata().get(THROUGHPUT_KEY) if store else None) or None
    report.estimated_seconds = round(len(plan.embed) / float(rate), 1) if rate else None


def _execute(store: Store, embedder: Embedder, work: list[FileWork], plan: EmbeddingPlan, stale: list[str],
             report: IngestReport, progress: ProgressCallback) -> None:
    total = len(plan.embed)
    window: list[FileWork] = []
    pending, target = 0, WINDOW
    for fw in work:
        window.append(fw)
        pending += len(fw.ids)
        if pending >= target:
            before = (report.chunks_embedded, report.embed_seconds)
            _flush(store, embedder, window, plan, report, progress, total)
            target = _next_window(pending, report.chunks_embedded - before[0], report.embed_seconds - before[1])
            window, pending = [], 0
    _flush(store, embedder, window, plan, report, progress, total)
    report.chunks_reused = report.chunks_written - report.chunks_embedded
    progress(Progress("delete", 0, len(stale)))
    store.delete(stale)
    report.chunks_deleted += len(stale)
    progress(Progress("delete", len(stale), len(stale)))
    _record_generation(store, report)


def _next_window(written: int, embedded: int, seconds: float) -> int:
    """Chunks in the next window: about WINDOW_SECONDS of embedding at the speed just measured."""
    if embedded == 0 or seconds <= 0:
        return WINDOW_MAX if written else WINDOW  # nothing was embedded: writing is all the work
    return max(WINDOW, min(WINDOW_MAX, int(WINDOW_SECONDS * written / seconds)))


def _flush(store: Store, embedder: Embedder, window: list[FileWork], plan: EmbeddingPlan,
           report: IngestReport, progress: ProgressCallback, total: int) -> None:
    """Get a vector for every text the window's files need (each embedded once), then write the files."""
    needed = {m["hash"]: c.embed_text for fw in window for rid, m, c in zip(fw.ids, fw.metadatas, fw.chunks)
              if plan.needs_vector(rid, m, fw.old)}
    copy_from = {h: plan.reuse[h] for h in needed if h in plan.reuse}
    stored = store.get_embeddings(sorted(set(copy_from.values())))
    vectors = {h: stored[rid] for h, rid in copy_from.items() if rid in stored}
    # Embed what is new, and what could not be copied (its source record was replaced meanwhile).
    todo = sorted((h for h in needed if h not in vectors), key=lambda h: len(needed[h]))
    while todo:
        try:
            _embed_into(vectors, embedder, todo, needed, report, progress, total)
        except InputRejected as exc:  # the model cannot read one chunk: leave its file as it was, go on
            _drop_files_with(todo[exc.index], str(exc), window, report)
        still = {m["hash"] for fw in window for m in fw.metadatas}
        todo = [h for h in todo if h not in vectors and h in still]
    _write_window(store, window, plan, vectors, report)
    # What this window wrote is in the store now: a later file with the same text copies its vector.
    for fw in window:
        for rid, meta in zip(fw.ids, fw.metadatas):
            plan.reuse.setdefault(meta["hash"], rid)
            plan.embed.pop(meta["hash"], None)


def _embed_into(vectors: dict[str, list[float]], embedder: Embedder, todo: list[str], needed: dict[str, str],
                report: IngestReport, progress: ProgressCallback, total: int) -> None:
    """Embed `todo` (hashes without a vector yet) slice by slice; a rejected input's index is its place in todo."""
    for begin in range(0, len(todo), EMBED_SLICE):
        hashes = todo[begin:begin + EMBED_SLICE]
        t0 = time.perf_counter()
        try:
            embedded = embedder.embed_documents([needed[h] for h in hashes])
        except InputRejected as exc:
            raise InputRejected(str(exc), begin + exc.index) from exc
        for h, vec in zip(hashes, embedded):
            vectors[h] = [float(x) for x in vec]
        report.embed_seconds += time.perf_counter() - t0
        report.chunks_embedded += len(hashes)
        progress(Progress("embed", report.chunks_embedded, max(total, report.chunks_embedded)))


def _drop_files_with(bad_hash: str, reason: str, window: list[FileWork], report: IngestReport) -> None:
    """Skip the files holding a chunk the model refuses; what the index holds for them stays untouched."""
    for fw in [fw for fw in window if any(m["hash"] == bad_hash for m in fw.metadatas)]:
        meta = next(m for m in fw.metadatas if m["hash"] == bad_hash)
        window.remove(fw)
        rel = str(meta["source"])
        report.skipped.append(Skipped(rel, f"the model refused the chunk at line {meta['start_line']} "
                                           f"('{meta['label']}'): {reason}"))
        for names in (report.files_added, report.files_changed):
            if rel in names:
                names.remove(rel)


def _write_window(store: Store, window: list[FileWork], plan: EmbeddingPlan, vectors: dict[str, list[float]],
                  report: IngestReport) -> None:
    """All new records of the window, then refreshed metadata, then deletion of what the new versions dropped.

    One call of each kind per window: Chroma's cost is mostly per call (~45 ms), not per record. Every file's
    new records are stored before any of its old ones is removed, and one add is atomic in Chroma.
    """
    add: list[tuple[str, Metadata, Chunk]] = []
    update: list[tuple[str, Metadata]] = []
    replaced: list[str] = []
    gone: list[str] = []
    for fw in window:
        for rid, meta, chunk in zip(fw.ids, fw.metadatas, fw.chunks):
            if plan.needs_vector(rid, meta, fw.old):
                add.append((rid, meta, chunk))
                if rid in fw.old:
                    replaced.append(rid)  # same id, other text or model: rare, must go before its re-add
            else:
                report.chunks_kept += 1
                if dumps_metadata(fw.old[rid]) != dumps_metadata(meta):
                    update.append((rid, meta))
        gone.extend(sorted(set(fw.old) - set(fw.ids)))
    store.delete(replaced)
    store.add([r for r, _, _ in add], [vectors[m["hash"]] for _, m, _ in add], [c.text for _, _, c in add],
              [m for _, m, _ in add])
    store.update_metadata([r for r, _ in update], [m for _, m in update])
    store.delete(gone)
    report.chunks_written += len(add)
    report.chunks_deleted += len(gone) + len(replaced)


def _record_generation(store: Store, report: IngestReport) -> None:
    """Mark the collection changed (so the keyword index follows) and remember the measured embedding speed."""
    if not (report.chunks_written or report.chunks_deleted or report.chunks_kept):
        return
    extra: Metadata = {}
    if report.chunks_embedded >= 32 and report.embed_seconds > 0:
        extra[THROUGHPUT_KEY] = round(report.chunks_embedded / report.embed_seconds, 2)
    store.bump_generation(extra)


def _sync_keywords(store: Store) -> None:
    """The keyword index follows the collection it is derived from."""
    with KeywordIndex.of(store) as index:
        sync_keyword_index(store, index)


def index_exists(location: StoreLocation) -> Store | None:
    """The existing index, or None when there is none yet."""
    try:
        return Store.open(location)
    except IndexNotFound:
        return None
