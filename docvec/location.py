"""Where an index lives (a folder, or a collection on a Chroma server) and its HNSW settings.

Standard library only: `docvec query` works out where a running server's socket is before it decides whether to
load numpy, Chroma and the model at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Hnsw:
    """HNSW settings for large indexes; None leaves Chroma's default. Only ef_search can change after creation."""

    ef_search: int | None = None
    ef_construction: int | None = None
    max_neighbors: int | None = None

    def creation(self) -> dict[str, Any]:
        """Chroma's `configuration` for a new collection: cosine space plus whatever is set."""
        hnsw: dict[str, Any] = {"space": "cosine"}
        hnsw.update({k: v for k, v in (("ef_search", self.ef_search), ("ef_construction", self.ef_construction),
                                       ("max_neighbors", self.max_neighbors)) if v is not None})
        return {"hnsw": hnsw}


@dataclass(frozen=True)
class StoreLocation:
    """Where an index lives: a local folder, or a Chroma server when `host` is set."""

    path: Path
    collection: str
    host: str | None = None
    port: int = 8000
    ssl: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request to a server (an auth token)
    tenant: str = "default_tenant"
    database: str = "default_database"
    hnsw: Hnsw = Hnsw()

    def describe(self) -> str:
        where = f"{'https' if self.ssl else 'http'}://{self.host}:{self.port}" if self.host else str(self.path)
        if (self.tenant, self.database) != ("default_tenant", "default_database"):
            where += f" (tenant {self.tenant}, database {self.database})"
        return f"collection '{self.collection}' at {where}"
