"""The embedder interface, and the factory that builds the configured one.

An embedder turns texts into vectors with ONE model. It says what it is (`EmbedderInfo`, which goes into the index
fingerprint), counts tokens the way the model does (so the chunker can size chunks to the model), and embeds
documents and queries (which may differ by a prefix for some models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import numpy.typing as npt

from docvec.errors import ConfigError

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EmbedderInfo:
    """Everything about an embedder that determines its vectors."""

    provider: str
    model: str
    dimension: int
    max_tokens: int  # the model's context: no embedded text may exceed it
    normalized: bool
    digest: str = ""  # the exact weights (sha256), where known
    query_prefix: str = ""
    document_prefix: str = ""


class Embedder(Protocol):
    """One embedding model."""

    info: EmbedderInfo

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Model tokens of each text, special tokens and document prefix included."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """One vector per text, in order."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """The vector of a search question."""
        ...


def make_embedder(provider: str, model: str, batch_size: int = 32, threads: int = 0) -> Embedder:
    """Build the embedder for a provider name; heavy imports happen here, not at import time."""
    if provider == "builtin":
        from docvec.embedders.builtin import BuiltinEmbedder

        return BuiltinEmbedder(model=model, batch_size=batch_size, threads=threads)
    raise ConfigError(f"embedding.provider '{provider}' is not supported; expected 'builtin'")
