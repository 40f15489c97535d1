"""What an index holds and who is using it: the data behind `docvec status`, the API's and the server's status."""

from __future__ import annotations

import json
import re
from typing import Any

from docvec.config import Settings, include_suffixes

_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def mask_userinfo(text: str) -> str:
    """The text with the user-info of URLs (user:password@) replaced by ***."""
    return _USERINFO.sub(r"\1***@", text)


def status_data(store: Any, settings: Settings) -> dict[str, Any]:
    """Everything `status` shows, from the collection's metadata (no pass over the records)."""
    from docvec.system import available_cpus

    fp = store.fingerprint()
    stats = store.stats()
    chunks = store.recorded_count()
    return {"index": store.location.describe(), "docs_root": store.docs_root(), "model": fp.model,
            "provider": fp.provider, "runs_on": _runs_on(settings, fp.provider), "cpus": available_cpus(),
            "dimension": fp.dimension, "files": stats.get("files"), "chunks": chunks,
            "skipped": stats.get("skipped", {}), "last_sync": stats.get("synced_at"),
            "last_sync_seconds": stats.get("seconds"), "interrupted_run": store.writing(),
            "writer": writer_of(store), "size_bytes": store.size_on_disk(),
            "built_by": store.collection_metadata().get("docvec:version"),
            "fingerprint": json.loads(fp.to_json()), "live": store.name,
            "config": str(settings.config_file) if settings.config_file else None,
            "folder_since_sync": folder_since(store.docs_root(), stats.get("synced_at"), settings.docs.include),
            "hnsw": {**{k: v for k, v in store.hnsw_settings().items()
                        if k in ("space", "ef_search", "ef_construction", "max_neighbors")},
                     **graph_slots(store, chunks)},
            "watch": watch_state(store.location),
            "collections": [{"name": c.name, "live": c.live, "previous": c.previous, "incomplete": c.writing, "chunks": c.count,
                             "model": c.fingerprint.model if c.fingerprint else None}
                            for c in store.physical_collections()]}


COMPACT_SHARE = 0.10  # dead slots cost memory and search time in proportion: past a tenth a rebuild is worth it


def compaction_advised(hnsw: dict[str, Any]) -> bool:
    """Whether the graph's slots of deleted chunks (status's "hnsw") are worth a `docvec reindex --compact`."""
    return bool(hnsw.get("slots")) and hnsw["dead_slots"] / hnsw["slots"] >= COMPACT_SHARE


def graph_slots(store: Any, chunks: int | None = None) -> dict[str, int]:
    """The graph's slots, how many hold deleted vectors and its memory (local indexes; nothing for a server).
    `chunks`: the collection's, when the caller has it."""
    found = store.hnsw_slots()
    if found is None:
        return {}
    chunks = store.recorded_count() if chunks is None else chunks
    # Chroma saves the header every ~1,000 writes, so it can trail the last writes; each chunk holds a slot
    slots = max(found.slots, chunks)
    return {"slots": slots, "dead_slots": slots - chunks, "memory_bytes": slots * found.slot_bytes}


def _runs_on(settings: Settings, provider: str) -> str:
    if provider == "ollama":
        return mask_userinfo(f"Ollama at {settings.embedding.host}")
    return "this machine's CPU (onnxruntime)"


def writer_of(store: Any) -> str | None:
    """Who holds the writer lock now (None when nobody does)."""
    from docvec.lock import current_holder, lock_path_for
    from docvec.store import LeaseBoard

    if store.location.host:
        from docvec.lock import describe_lease

        return describe_lease(LeaseBoard(store.location).read())
    return current_holder(lock_path_for(store.location.path, store.location.collection))


def folder_since(root: str | None, synced_at: float | None, include: list[str]) -> dict[str, Any] | None:
    """A cheap look at the docs folder (names, sizes and times only, no hashes): how many indexable files it
    holds now, and how many were modified after the last sync (None when unknown)."""
    import fnmatch
    import os

    if root is None or synced_at is None or not os.path.isdir(root):
        return None
    suffixes = include_suffixes(include)
    files = newer = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "node_modules"]
        for name in names:
            if name.startswith(".") or not (name.endswith(suffixes) or any(fnmatch.fnmatch(name, p) for p in include)):
                continue
            files += 1
            try:
                newer += os.stat(os.path.join(folder, name)).st_mtime > synced_at
            except OSError:
                newer += 1  # vanished or unreadable since: a change all the same
    return {"files": files, "modified_after_sync": newer}


def watch_state(location: Any) -> dict[str, Any] | None:
    """What the index's watcher last recorded (None when no watcher ever ran beside this index)."""
    from docvec.watchstate import read, state_path

    return read(state_path(location.path, location.collection, location.host))
