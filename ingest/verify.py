"""Compare the index with what a clean build of the docs folder would write; repair with the least re-embedding.

A clean build is a function of the docs folder and the fingerprint: every file is chunked again (the model's
tokenizer only, nothing is embedded) and each stored record is compared with the record a clean build writes for
it: id, text, every metadata key and value, the vector's presence and shape. The keyword index is compared row by
row (id, label, a digest of its text) and its bm25 statistics must count no deleted row. A local index is also
searched for what Chroma leaves of deleted records and collections (docvec.residue).

Repair deletes what cannot be trusted (orphans, records of another fingerprint or text, unreadable vectors),
rewrites metadata that differs (vectors untouched), sweeps residue, runs the ordinary sync (which re-adds what is
missing, copying every vector it can) and rebuilds the keyword rows that differ.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from docvec.chunker import ChunkParams, chunk_markdown, has_body
from docvec.embedders import Embedder
from docvec.fingerprint import Fingerprint
from docvec.keyword import KeywordIndex, keyword_path, row_digest, sync_keyword_index
from docvec.store import PAGE, Metadata, Store, dumps_metadata
from docvec.ingest.pipeline import (FileWork, IndexState, IngestReport, ProgressCallback, Record, SyncGuard,
                             check_deletions, check_docs_root, ingest, plan_file)
from docvec.ingest.scan import ScanOptions, Unreadable, content_file_hash, read_markdown, scan

TokenCounter = Callable[[Sequence[str]], list[int]]
VERIFY_FILES = 2_000  # files whose clean build is held and compared at a time
VECTOR_TOLERANCE = 1e-4  # largest difference per dimension between a stored vector and the model's, with --vectors
# (the same text embedded in another batch differs in the last bits: measured below 1e-6 for the built-in model)
KINDS = ("missing", "stale", "incomplete", "orphans", "duplicates", "wrong_fingerprint", "bad_vectors",
         "wrong_vectors", "text_differs", "metadata_differs", "keyword_out_of_sync")


@dataclass
class VerifyReport:
    """What differs from a clean build, by kind; empty means the index is exactly what a clean build writes."""

    files_checked: int = 0
    chunks_checked: int = 0
    missing: list[str] = field(default_factory=list)  # files in the docs folder with no records
    stale: list[str] = field(default_factory=list)  # files whose records describe an older version
    incomplete: list[str] = field(default_factory=list)  # files with missing, extra or mixed-version records
    orphans: list[str] = field(default_factory=list)  # record ids a clean build does not write (file gone, none)
    duplicates: list[str] = field(default_factory=list)  # record ids repeating a chunk position of their file
    wrong_fingerprint: list[str] = field(default_factory=list)  # record ids built by another configuration
    bad_vectors: list[str] = field(default_factory=list)  # record ids whose vector is missing or malformed
    wrong_vectors: list[str] = field(default_factory=list)  # vectors that are not the model's for their text
    text_differs: list[str] = field(default_factory=list)  # record ids whose stored text is not the chunk's
    metadata_differs: list[str] = field(default_factory=list)  # record ids with a key added, removed or changed
    keyword_out_of_sync: list[str] = field(default_factory=list)  # ids the keyword index lacks, keeps or differs on
    keyword_deleted_rows: int = 0  # deleted rows bm25 still counts (scores would differ from a clean build's)
    residue: dict[str, int] = field(default_factory=dict)  # what Chroma left of deleted records, by kind
    examples: dict[str, str] = field(default_factory=dict)  # kind -> one difference, spelled out
    writer: str | None = None  # a writer was running while this was checked (set by the caller)
    repaired: IngestReport | None = None

    @property
    def problems(self) -> int:
        return (sum(len(getattr(self, k)) for k in KINDS) + (self.keyword_deleted_rows > 0)
                + sum(self.residue.values()))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.problems == 0, "files_checked": self.files_checked,
                               "chunks_checked": self.chunks_checked}
        out.update({k: getattr(self, k) for k in KINDS})
        out.update({"keyword_deleted_rows": self.keyword_deleted_rows, "residue": self.residue,
                    "examples": self.examples, "writer": self.writer})
        if self.repaired is not None:
            out["repair"] = self.repaired.as_dict()
        return out

    def note(self, kind: str, example: str) -> None:
        """Keep the first example of a kind of difference."""
        self.examples.setdefault(kind, example)


def verify(store: Store, count_tokens: TokenCounter, fp: Fingerprint, scan_options: ScanOptions,
           guard: SyncGuard = SyncGuard(), embedder: Embedder | None = None) -> VerifyReport:
    """Compare every record, the keyword index and the index's files with a clean build under fingerprint `fp`;
    writes nothing. With `embedder` (of `fp`'s model), every vector is also compared with the model's own."""
    check_docs_root(store, scan_options.root, guard)
    state = IndexState.read(store, fp.short_hash())
    files, _ = scan(scan_options)
    report = VerifyReport(files_checked=len(files), chunks_checked=store.count())
    keyword = _KeywordCheck.of(store, state)
    checked: set[str] = set()
    # The clean build is made and compared a window of files at a time: held whole, it was ~9 KB a chunk
    # (2.4 GB at 250k chunks); each stored record's text is read once, for both its own check and its keyword row.
    for window in _windows(_clean_build(files, state, count_tokens, fp)):
        _check_files(report, state, window, fp)
        _check_records(store, report, window, fp, embedder, keyword)
        checked.update(window)
    _check_other_files(report, state, checked, fp)
    report.residue = store.residue()
    if report.residue:
        report.note("residue", ", ".join(f"{n} {kind} rows" for kind, n in sorted(report.residue.items())))
    keyword.finish(store, report)
    return report


def _windows(plans: Iterator[tuple[str, FileWork]]) -> Iterator[dict[str, FileWork]]:
    window: dict[str, FileWork] = {}
    for rel, plan in plans:
        window[rel] = plan
        if len(window) == VERIFY_FILES:
            yield window
            window = {}
    if window:
        yield window


def chunk_params(fp: Fingerprint) -> ChunkParams:
    """The chunking an index was built with."""
    return ChunkParams(fp.max_tokens, fp.min_tokens, fp.overlap_tokens, fp.heading_context)


def _clean_build(files: Sequence[Any], state: IndexState, count_tokens: TokenCounter,
                 fp: Fingerprint) -> Iterator[tuple[str, FileWork]]:
    """What a clean build writes for each file it would index: (relative path, its planned records)."""
    for f in files:
        try:
            text, data = read_markdown(f.path)
        except Unreadable:
            continue
        if not has_body(text):
            continue  # ingest skips it too: nothing to index
        doc = chunk_markdown(text, count_tokens, chunk_params(fp))
        indexed = state.files.get(f.rel)
        yield f.rel, plan_file(f.rel, content_file_hash(data), fp.short_hash(), doc, indexed)


def _check_files(report: VerifyReport, state: IndexState, expected: dict[str, FileWork], fp: Fingerprint) -> None:
    """Per file of a window: indexed at all, at this version, completely (records it does not write: orphans)."""
    for rel, plan in expected.items():
        indexed = state.files.get(rel)
        file_hash = plan.metadatas[0]["file_hash"] if plan.metadatas else None
        if indexed is None or not indexed.records:
            report.missing.append(rel)
        elif indexed.complete_hash is None:
            report.incomplete.append(rel)
            report.note("incomplete", f"{rel}: {len(indexed.records)} records of a version that has "
                                      f"{_announced(indexed)}")
        elif indexed.complete_hash != file_hash:
            report.stale.append(rel)  # the sync replaces the whole old version
        elif set(indexed.records) != set(plan.ids):
            report.incomplete.append(rel)  # current, but not the records a clean build writes
            report.orphans.extend(sorted(set(indexed.records) - set(plan.ids)))
            report.note("incomplete", f"{rel}: {len(indexed.records)} records, a clean build writes "
                                      f"{len(plan.ids)} (other ids)")


def _check_other_files(report: VerifyReport, state: IndexState, expected: set[str], fp: Fingerprint) -> None:
    """The records of files a clean build does not index are orphans; every file's duplicates and records of
    another fingerprint; then one example of each kind."""
    for rel, indexed in state.files.items():
        if rel not in expected:
            report.orphans.extend(indexed.records)
        report.duplicates.extend(_duplicates(indexed.records))
        report.wrong_fingerprint.extend(r for r, m in indexed.records.items() if m.fp != fp.short_hash())
    report.orphans.extend(state.orphans)
    for kind in ("orphans", "wrong_fingerprint", "duplicates", "missing", "stale"):
        if getattr(report, kind):
            report.note(kind, str(getattr(report, kind)[0]))


def _check_records(store: Store, report: VerifyReport, expected: dict[str, FileWork], fp: Fingerprint,
                   embedder: Embedder | None, keyword: "_KeywordCheck") -> None:
    """Each stored record that the window's clean build also writes: the same text, metadata and a healthy vector
    (and its keyword row, from the same read)."""
    planned = {rid: (m, c.text, c.embed_text) for plan in expected.values()
               for rid, m, c in zip(plan.ids, plan.metadatas, plan.chunks)}
    ids = sorted(planned.keys() & keyword.unchecked)
    for begin in range(0, len(ids), PAGE):
        page = ids[begin:begin + PAGE]
        stored = store.get_documents(page)
        vectors = store.get_embeddings(page)
        keyword.compare(stored)
        for rid in page:
            meta, text, _ = planned[rid]
            doc, have = stored[rid]
            if doc != text:
                report.text_differs.append(rid)
                report.note("text_differs", f"{rid} ({meta['source']}:{meta['start_line']})")
            if dumps_metadata(have) != dumps_metadata(meta):
                report.metadata_differs.append(rid)
                report.note("metadata_differs", f"{rid} ({meta['source']}): {_diff(have, meta)}")
            if not _healthy(vectors.get(rid), fp.dimension, fp.normalized):
                report.bad_vectors.append(rid)
                report.note("bad_vectors", rid)
        if embedder is not None:
            _compare_vectors(report, embedder, [r for r in page if r in vectors and r not in report.bad_vectors],
                             vectors, planned)


def _compare_vectors(report: VerifyReport, embedder: Embedder, ids: list[str],
                     vectors: dict[str, NDArray[np.float32]], planned: dict[str, tuple[Metadata, str, str]]) -> None:
    """Embed each record's text again and compare with its stored vector."""
    if not ids:
        return
    fresh = embedder.embed_documents([planned[rid][2] for rid in ids])
    for rid, vec in zip(ids, fresh):
        gap = float(np.max(np.abs(np.asarray(vec, dtype=np.float32) - vectors[rid])))
        if gap > VECTOR_TOLERANCE:
            report.wrong_vectors.append(rid)
            report.note("wrong_vectors", f"{rid}: differs by up to {gap:.3g} from the model's vector")


def _diff(have: Metadata, want: Metadata) -> str:
    """The first metadata difference, as a user reads it."""
    for key in sorted(have.keys() | want.keys()):
        if key not in want:
            return f"key '{key}' = {have[key]!r} that no file has"
        if key not in have:
            return f"key '{key}' missing (the file says {want[key]!r})"
        if dumps_metadata({key: have[key]}) != dumps_metadata({key: want[key]}):
            return f"key '{key}' is {have[key]!r}, the file says {want[key]!r}"
    return "same keys and values in another form"


class _KeywordCheck:
    """The keyword index holds one row per record, made from its current label and text, and no deleted row.
    Its rows are held (id -> label and digest); each record's wanted row is compared as its text is read."""

    def __init__(self, state: IndexState, rows: list[tuple[str, str, str]] | None, deleted_rows: int) -> None:
        self.stored = {rid for f in state.files.values() for rid in f.records} | set(state.orphans)
        self.unchecked = set(self.stored)  # stored records whose text no window has read yet
        self.indexed = rows is not None  # (the rows themselves are not kept: ~100 bytes each)
        self.counts = Counter(rid for rid, _, _ in rows or ())
        self.have = {rid: (label, digest) for rid, label, digest in rows or ()}
        self.deleted_rows = deleted_rows
        self.out: set[str] = set()

    @classmethod
    def of(cls, store: Store, state: IndexState) -> "_KeywordCheck":
        if not (keyword_path(store.files_location, store.name) / "meta.json").is_file():
            return cls(state, None, 0)
        with KeywordIndex.of(store, read_only=True) as index:
            return cls(state, index.rows(), index.deleted_rows())

    def compare(self, stored: dict[str, tuple[str, Metadata]]) -> None:
        """Compare the rows of records just read (id -> text, metadata)."""
        for rid, (doc, meta) in stored.items():
            self.unchecked.discard(rid)
            label = str(meta.get("label", ""))
            if not self.indexed or self.counts[rid] > 1 or self.have.get(rid) != (label, row_digest(label, doc)):
                self.out.add(rid)

    def finish(self, store: Store, report: VerifyReport) -> None:
        """Read and compare the records no window read (orphans, files no longer indexed), then report."""
        rest = sorted(self.unchecked)
        for begin in range(0, len(rest), PAGE):
            self.compare(store.get_documents(rest[begin:begin + PAGE]))
        self.out |= self.have.keys() - self.stored  # rows of no record
        report.keyword_out_of_sync = sorted(self.out)
        report.keyword_deleted_rows = self.deleted_rows
        if self.out:
            rid = report.keyword_out_of_sync[0]
            what = ("the keyword index is missing" if not self.indexed else f"{rid}: missing" if rid not in self.have
                    else f"{rid}: not in the collection" if rid not in self.stored else
                    f"{rid}: held {self.counts[rid]} times" if self.counts[rid] > 1 else
                    f"{rid}: made from another label or text")
            report.note("keyword_out_of_sync", what)
        if report.keyword_deleted_rows:
            report.note("keyword_deleted_rows", f"{report.keyword_deleted_rows} deleted rows still counted by bm25")


def repair(store: Store, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams,
           found: VerifyReport, on_progress: ProgressCallback | None = None,
           guard: SyncGuard = SyncGuard()) -> VerifyReport:
    """Make the index what a clean build writes, re-embedding only what has no trustworthy vector; returns a
    fresh verification with the sync's report. Every write goes through the write protocol (begin_write first,
    the sync's generation bump last), so a repair killed at any point is finished by the next sync or repair."""
    check_docs_root(store, scan_options.root, guard)
    doomed = sorted(set(found.bad_vectors) | set(found.wrong_fingerprint) | set(found.orphans)
                    | set(found.text_differs) | set(found.wrong_vectors) | set(found.duplicates))
    check_deletions(len(doomed), store.count(), "records that verify found untrustworthy", guard)
    store.begin_write()
    if found.residue:
        store.sweep_residue(always=True)  # residue no delete_collection left (written by hand or another tool)
    store.delete(doomed)
    _rewrite_metadata(store, embedder, scan_options, params, sorted(set(found.metadata_differs) - set(doomed)))
    synced = ingest(store, embedder, scan_options, params, on_progress=on_progress, guard=guard)
    with KeywordIndex.of(store) as index:
        if found.keyword_out_of_sync:
            index.apply([], found.keyword_out_of_sync, {"generation": ""})  # made again by the sync below
        sync_keyword_index(store, index, force=True)
    fp = Fingerprint.build(embedder.info, params)
    after = verify(store, embedder.count_tokens, fp, scan_options, guard)
    after.repaired = synced
    return after


def _rewrite_metadata(store: Store, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams,
                      ids: list[str]) -> None:
    """Give records the metadata a clean build writes, removing keys it does not (vectors untouched)."""
    if not ids:
        return
    fp = Fingerprint.build(embedder.info, params)
    files, _ = scan(scan_options)
    expected = {rid: m for _, plan in _clean_build(files, IndexState(), embedder.count_tokens, fp)
                for rid, m in zip(plan.ids, plan.metadatas)}
    wanted = [rid for rid in ids if rid in expected]
    store.replace_metadata(wanted, [expected[rid] for rid in wanted], store.get_metadatas(wanted))


def _announced(indexed: Any) -> str:
    counts = sorted({str(r.chunks_in_file) for r in indexed.records.values()})
    return " or ".join(counts) + " chunks"


def _duplicates(records: dict[str, Record]) -> list[str]:
    """Records beyond the first at the same chunk position of a file version."""
    seen = Counter((m.file_hash, m.chunk_index) for m in records.values())
    dupes = []
    taken: set[tuple[Any, Any]] = set()
    for rid, m in sorted(records.items()):
        key = (m.file_hash, m.chunk_index)
        if seen[key] > 1:
            if key in taken:
                dupes.append(rid)
            taken.add(key)
    return dupes


def _healthy(vector: NDArray[np.float32] | None, dimension: int, normalized: bool) -> bool:
    if vector is None or vector.shape != (dimension,) or not np.isfinite(vector).all():
        return False
    return not normalized or abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
