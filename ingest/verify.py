"""Compare the docs folder, the bookkeeping and the collection; repair with the least re-embedding.

Every check reads the collection itself (records, metadata and vectors), so the result cannot drift from what a
query would see. Repair deletes what cannot be trusted (orphans, unreadable vectors, records of another
fingerprint) and then runs the ordinary sync, which re-adds what is missing and reuses every healthy vector.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from docvec.chunker import ChunkParams, has_body
from docvec.embedders import Embedder
from docvec.fingerprint import Fingerprint
from docvec.keyword import KeywordIndex, keyword_differences, keyword_path, sync_keyword_index
from docvec.store import PAGE, Store
from ingest.pipeline import (IndexState, IngestReport, ProgressCallback, Record, SyncGuard, check_deletions,
                             check_docs_root, ingest)
from ingest.scan import ScanOptions, Unreadable, content_file_hash, read_markdown, scan


@dataclass
class VerifyReport:
    """What is wrong with an index, by kind; empty lists mean healthy."""

    files_checked: int = 0
    chunks_checked: int = 0
    missing: list[str] = field(default_factory=list)  # files in the docs folder with no records
    stale: list[str] = field(default_factory=list)  # files whose records describe an older version
    incomplete: list[str] = field(default_factory=list)  # files with missing or mixed-version records
    orphans: list[str] = field(default_factory=list)  # record ids whose file is gone (or that name none)
    duplicates: list[str] = field(default_factory=list)  # record ids repeating a chunk position of their file
    wrong_fingerprint: list[str] = field(default_factory=list)  # record ids built by another configuration
    bad_vectors: list[str] = field(default_factory=list)  # record ids whose vector is unreadable or malformed
    keyword_out_of_sync: list[str] = field(default_factory=list)  # ids the keyword index lacks or keeps extra
    repaired: IngestReport | None = None

    @property
    def problems(self) -> int:
        return sum(len(x) for x in (self.missing, self.stale, self.incomplete, self.orphans, self.duplicates,
                                    self.wrong_fingerprint, self.bad_vectors, self.keyword_out_of_sync))

    def as_dict(self) -> dict[str, Any]:
        kinds = ("missing", "stale", "incomplete", "orphans", "duplicates", "wrong_fingerprint", "bad_vectors",
                 "keyword_out_of_sync")
        out: dict[str, Any] = {"ok": self.problems == 0, "files_checked": self.files_checked,
                               "chunks_checked": self.chunks_checked}
        out.update({k: getattr(self, k) for k in kinds})
        if self.repaired is not None:
            out["repair"] = self.repaired.as_dict()
        return out


def verify(store: Store, fp: Fingerprint, scan_options: ScanOptions, guard: SyncGuard = SyncGuard()) -> VerifyReport:
    """Check every file and every record against the docs folder and fingerprint `fp`; embeds nothing, writes
    nothing (so it needs no model, and works on a read-only index)."""
    check_docs_root(store, scan_options.root, guard)
    state = IndexState.read(store, fp.short_hash())
    files, _ = scan(scan_options)
    report = VerifyReport(files_checked=len(files), chunks_checked=store.count())
    on_disk = _file_hashes(files)
    for rel, file_hash in on_disk.items():
        indexed = state.files.get(rel)
        if indexed is None or not indexed.records:
            report.missing.append(rel)
        elif indexed.complete_hash is None:
            report.incomplete.append(rel)
        elif indexed.complete_hash != file_hash:
            report.stale.append(rel)
    for rel, indexed in state.files.items():
        if rel not in on_disk:
            report.orphans.extend(indexed.records)
        report.duplicates.extend(_duplicates(indexed.records))
        report.wrong_fingerprint.extend(r for r, m in indexed.records.items() if m.fp != fp.short_hash())
    report.orphans.extend(state.orphans)
    ids = [rid for f in state.files.values() for rid in f.records] + state.orphans
    report.bad_vectors = _bad_vectors(store, ids, fp.dimension, fp.normalized)
    report.keyword_out_of_sync = _keyword_problems(store, ids)
    return report


def _keyword_problems(store: Store, ids: list[str]) -> list[str]:
    """Ids the keyword index lacks, has outdated or keeps extra; a missing keyword index lacks them all."""
    if not (keyword_path(store.files_location, store.name) / "meta.json").is_file():
        return sorted(ids)
    with KeywordIndex.of(store, read_only=True) as index:
        missing, extra = keyword_differences(store, index)
    return missing + extra


def repair(store: Store, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams,
           found: VerifyReport, on_progress: ProgressCallback | None = None,
           guard: SyncGuard = SyncGuard()) -> VerifyReport:
    """Delete untrustworthy records, then sync; returns a fresh verification with the sync's report."""
    check_docs_root(store, scan_options.root, guard)
    doomed = sorted(set(found.bad_vectors) | set(found.wrong_fingerprint) | set(found.orphans))
    check_deletions(len(doomed), store.count(), "records that verify found untrustworthy", guard)
    store.delete(doomed)
    synced = ingest(store, embedder, scan_options, params, on_progress=on_progress, guard=guard)
    with KeywordIndex.of(store) as index:
        sync_keyword_index(store, index, force=True)
    after = verify(store, Fingerprint.build(embedder.info, params), scan_options, guard)
    after.repaired = synced
    return after


def _file_hashes(files: Sequence[Any]) -> dict[str, str]:
    out = {}
    for f in files:
        try:
            text, data = read_markdown(f.path)
        except Unreadable:
            continue
        if not has_body(text):
            continue  # ingest skips it too: nothing to index
        out[f.rel] = content_file_hash(data)
    return out


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


def _bad_vectors(store: Store, ids: list[str], dimension: int, normalized: bool) -> list[str]:
    """Ids whose stored vector is missing, of the wrong size, not finite, or (if normalised) not unit length."""
    bad: list[str] = []
    for begin in range(0, len(ids), PAGE):
        page = ids[begin:begin + PAGE]
        vectors = store.get_embeddings(page)
        bad.extend(rid for rid in page if not _healthy(vectors.get(rid), dimension, normalized))
    return bad


def _healthy(vector: NDArray[np.float32] | None, dimension: int, normalized: bool) -> bool:
    if vector is None or vector.shape != (dimension,) or not np.isfinite(vector).all():
        return False
    return not normalized or abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
