"""What an index holds and who is using it: the data behind `docvec status`, the API's and the server's status."""

from __future__ import annotations

import json
import re
from typing import Any

from docvec.config import Settings

_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def mask_userinfo(text: str) -> str:
    """The text with the user-info of URLs (user:password@) replaced by ***."""
    return _USERINFO.sub(r"\1***@", text)


def status_data(store: Any, settings: Settings) -> dict[str, Any]:
    """Everything `status` shows, from the collection's metadata (no pass over the records)."""
    from docvec.system import available_cpus

    fp = store.fingerprint()
    stats = store.stats()
    chunks = store.count()
    return {"index": store.location.describe(), "docs_root": store.docs_root(), "model": fp.model,
            "provider": fp.provider, "runs_on": _runs_on(settings, fp.provider), "cpus": available_cpus(),
            "dimension": fp.dimension, "files": stats.get("files"), "chunks": chunks,
            "skipped": stats.get("skipped", {}), "last_sync": stats.get("synced_at"),
            "last_sync_seconds": stats.get("seconds"), "interrupted_run": store.writing(),
            "writer": _writer(store), "size_bytes": store.size_on_disk(),
            "built_by": store.collection_metadata().get("docvec:version"),
            "fingerprint": json.loads(fp.to_json()), "live": store.name,
            "hnsw": {k: v for k, v in store.hnsw_settings().items()
                     if k in ("space", "ef_search", "ef_construction", "max_neighbors")},
            "collections": [{"name": c.name, "live": c.live, "previous": c.previous, "chunks": c.count,
                             "model": c.fingerprint.model if c.fingerprint else None}
                            for c in store.physical_collections()]}


def _runs_on(settings: Settings, provider: str) -> str:
    if provider == "ollama":
        return mask_userinfo(f"Ollama at {settings.embedding.host}")
    return "this machine's CPU (onnxruntime)"


def _writer(store: Any) -> str | None:
    """Who holds the writer lock now (None when nobody does)."""
    from docvec.lock import current_holder, lock_path_for
    from docvec.store import LeaseBoard

    if store.location.host:
        from docvec.lock import describe_lease

        return describe_lease(LeaseBoard(store.location).read())
    return current_holder(lock_path_for(store.location.path, store.location.collection))
