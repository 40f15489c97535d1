"""What the settings name, as the values the core takes: the index location, chunking parameters, the embedder.

Shared by the CLI and the Python API (no click here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from docvec.config import Settings
from docvec.errors import ConfigError
from docvec.location import Hnsw, StoreLocation

if TYPE_CHECKING:  # the chunker loads the markdown parser: not on the path of a query a server answers
    from docvec.chunker import ChunkParams


def store_location(settings: Settings) -> StoreLocation:
    """Where the configured index lives."""
    s = settings.store
    return StoreLocation(settings.resolve(s.path), s.collection, s.host, s.port, s.ssl, tuple(s.headers.items()),
                         s.tenant, s.database, Hnsw(s.hnsw_ef_search, s.hnsw_ef_construction, s.hnsw_max_neighbors))


def chunk_params(settings: Settings) -> ChunkParams:
    """Chunking parameters from the settings."""
    from docvec.chunker import ChunkParams

    c = settings.chunking
    return ChunkParams(c.max_tokens, c.min_tokens, c.overlap_tokens, c.heading_context)


def make_configured_embedder(settings: Settings) -> Any:
    """The embedder the settings name; the chunk limit may not exceed its context."""
    from docvec.embedders import make_embedder

    e = settings.embedding
    embedder = make_embedder(e)
    if settings.chunking.max_tokens > embedder.info.max_tokens:
        raise ConfigError(f"chunking.max_tokens is {settings.chunking.max_tokens} but {e.model} reads at most "
                          f"{embedder.info.max_tokens} tokens: set chunking.max_tokens to {embedder.info.max_tokens} "
                          f"or less")
    return embedder
