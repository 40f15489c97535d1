"""Re-embed into a new collection beside the live one, switch atomically, keep the old one for rollback.

`reindex` is the ordinary sync run against the physical collection of the new fingerprint, so it is resumable
for free: killed half-way, the next run finds the records already written and embeds only the rest. A kept backup
of the same fingerprint (switching back to a model used before) is brought up to date the same way. Only when the
new collection verifies clean does the pointer switch, in one metadata write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from docvec.chunker import ChunkParams
from docvec.embedders import Embedder
from docvec.errors import IndexNotFound, Refused, StoreError
from docvec.fingerprint import Fingerprint
from docvec.keyword import remove_keyword_index
from docvec.store import Store, StoreLocation, physical_name
from docvec.ingest.pipeline import (IngestReport, ProgressCallback, SyncGuard, VectorLender, check_docs_root,
                             check_fingerprint, exceeds_share, ingest, open_for_writing)
from docvec.ingest.scan import ScanOptions
from docvec.ingest.verify import verify


@dataclass
class ReindexReport:
    """What a reindex did."""

    live: str
    previous: str | None
    changes: list[str] = field(default_factory=list)
    resumed: bool = False  # the new collection already existed (an interrupted run, or a kept backup)
    switched: bool = False
    ingest: IngestReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"live": self.live, "previous": self.previous, "changes": self.changes, "resumed": self.resumed,
                "switched": self.switched, "ingest": self.ingest.as_dict() if self.ingest else None}


def reindex(location: StoreLocation, embedder: Embedder, scan_options: ScanOptions, params: ChunkParams,
            on_progress: ProgressCallback | None = None, guard: SyncGuard = SyncGuard(),
            compact: bool = False) -> ReindexReport:
    """Build the index for the configured fingerprint beside the live one, verify it, then make it live.

    compact: when the configuration is the live index's own, rebuild it all the same, copying its vectors into a
    new collection: Chroma's HNSW keeps a slot for every vector ever deleted, a rebuild holds only the live ones."""
    target = Fingerprint.build(embedder.info, params)
    try:
        live = Store.open(location)
    except IndexNotFound:
        store = open_for_writing(location, target)
        return ReindexReport(store.name, None, [], False, True, ingest(store, embedder, scan_options, params,
                                                                          on_progress=on_progress, guard=guard))
    check_docs_root(live, scan_options.root, guard)  # a new index from another folder would replace this one
    live.sweep_residue()
    name = base = physical_name(location, target)
    compacting = same_build(base, live.name)
    if compacting:
        rebuild = _compaction(live, base, compact)
        if rebuild is None:  # nothing to switch: an ordinary sync
            synced = ingest(live, embedder, scan_options, params, on_progress=on_progress, guard=guard)
            return ReindexReport(live.name, None, [], False, False, synced)
        name = rebuild
    resumed = any(c.name == name for c in live.physical_collections())
    new = Store.open_physical(location, name, target)
    check_fingerprint(new, target)
    report = ReindexReport(name, live.name, live.fingerprint().differences(target), resumed)
    lender = None
    if live.fingerprint() == target:  # the same vectors, in a new graph: compacted, or other HNSW build settings
        report.changes.append(_compacted(live) if compacting else f"hnsw: {live.hnsw_rebuild_needed() or 'rebuilt'}")
        new.begin_write()  # the copy is a write like any other: the sync below completes it
        new.copy_from(live)
    elif live.fingerprint().same_vectors(target):
        # Same model, other chunking: a text the live index embedded has the same vector here; copy, do not embed.
        lender = VectorLender.of(live)
    # The live index stays as it is (and is kept for rollback): deleting from the new one loses nothing.
    building = replace(guard, allow_mass_delete=True)
    report.ingest = ingest(new, embedder, scan_options, params, on_progress=on_progress, guard=building,
                           lender=lender)
    found = verify(new, embedder.count_tokens, target, scan_options, guard)
    if found.problems:
        raise StoreError(f"the new index '{name}' has {found.problems} problems after building; the live index is "
                         f"unchanged: run `docvec reindex` again")
    _check_files_kept(live, new, guard)
    live.point_to(name)
    report.switched = True
    return report


_REBUILT = re.compile(r"-c([0-9]+)")  # a rebuild of the same configuration: <physical name>-c<n>, n >= 2


def same_build(base: str, name: str) -> bool:
    """Whether physical collection `name` is the configuration `base` or a compacted rebuild of it."""
    return name == base or (name.startswith(base) and _REBUILT.fullmatch(name[len(base):]) is not None)


def _compaction(live: Store, base: str, compact: bool) -> str | None:
    """The collection a compaction writes: one a stopped compaction left incomplete (resumed even without
    `compact`, as any interrupted build is), else with `compact` the next rebuild name; None: no compaction."""
    family = [c for c in live.physical_collections() if same_build(base, c.name)]
    stopped = next((c.name for c in family if c.writing and not c.live), None)
    if stopped or not compact:
        return stopped
    rebuilds = [int(m.group(1)) for c in family if (m := _REBUILT.fullmatch(c.name[len(base):]))]
    return f"{base}-c{max(rebuilds, default=1) + 1}"


def _compacted(live: Store) -> str:
    from docvec.status import graph_slots

    slots = graph_slots(live)
    if not slots:  # a server's files are its own
        return "compacted: the HNSW graph rebuilt from the live vectors"
    return f"compacted: {slots['dead_slots']} graph slots of deleted chunks dropped"


def _sources(store: Store) -> set[str]:
    return {str(meta.get("source", "")) for _, meta in store.iter_metadata()}


def _check_files_kept(live: Store, new: Store, guard: SyncGuard) -> None:
    """Switching to an index that lacks most of the live one's files deletes them from what queries see, as a
    sync that removes them would: the same share needs --yes. (Chunk counts cannot tell: bigger chunks are
    fewer.) The new index is kept, so the confirmed re-run embeds nothing again."""
    if guard.allow_mass_delete:
        return  # reading every record's source is the costly part
    before = _sources(live)
    gone = len(before - _sources(new))
    if exceeds_share(gone, len(before), guard):
        raise Refused(f"the new index lacks {gone} of the live index's {len(before)} files (gone from the docs "
                      f"folder): if the docs folder is right, run again with --yes; the live index is unchanged")


def rollback(location: StoreLocation) -> tuple[str, str]:
    """Make the previous index live again (and the current one 'previous'); returns (old live, new live)."""
    live = Store.open(location)
    live.sweep_residue()
    previous = next((c for c in live.physical_collections() if c.previous), None)
    if previous is None:
        raise StoreError(f"{location.describe()} has no previous index to roll back to")
    if previous.fingerprint is None:
        raise StoreError(f"the previous index '{previous.name}' is unreadable; rollback refused")
    if previous.writing:
        raise StoreError(f"the previous index '{previous.name}' was being written when a run stopped; rollback "
                         f"refused: run `docvec prune --all` to delete it")
    live.point_to(previous.name)
    return live.name, previous.name


def prune(location: StoreLocation, keep_previous: bool = True, dry_run: bool = False) -> list[str]:
    """Delete backup collections (all but the live one, and the previous one unless keep_previous=False)."""
    live = Store.open(location)
    live.sweep_residue()  # what a prune killed after a delete_collection left
    others = live.physical_collections()
    doomed = [c.name for c in others if not c.live and not (keep_previous and c.previous and not c.writing)]
    if not dry_run:
        if any(c.previous and c.name in doomed for c in others):
            live.forget_previous()
        for name in doomed:
            remove_keyword_index(location, name)  # first: a keyword index without its collection is only disk
            live.drop_physical(name)
    return doomed
