"""The embedder interface, and the factory that builds the configured one.

An embedder turns texts into vectors with ONE model. It says what it is (`EmbedderInfo`, which goes into the index
fingerprint), counts tokens the way the model does (so the chunker can size chunks to the model), and embeds
documents and queries (which may differ by a prefix for some models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from docvec.errors import ConfigError

if TYPE_CHECKING:
    from docvec.config import EmbeddingSettings

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


def make_embedder(settings: "EmbeddingSettings") -> Embedder:
    """Build the embedder the settings name; heavy imports happen here, not at import time."""
    if settings.provider == "builtin":
        from docvec.embedders.builtin import BuiltinEmbedder

        return BuiltinEmbedder(model=settings.model, batch_size=settings.batch_size, threads=settings.threads)
    if settings.provider == "ollama":
        from docvec.embedders.ollama import OllamaEmbedder, OllamaOptions

        s = settings
        return OllamaEmbedder(s.model, OllamaOptions(
            host=s.host or "", timeout=s.timeout, keep_alive=s.keep_alive, batch_size=s.batch_size,
            batch_tokens=s.batch_tokens, concurrency=s.concurrency, retries=s.retries, query_prefix=s.query_prefix,
            document_prefix=s.document_prefix, allow_chat_models=s.allow_chat_models))
    raise ConfigError(f"embedding.provider '{settings.provider}' is not supported; expected builtin or ollama")


def token_counter(provider: str, model: str, document_prefix: str) -> Callable[[Sequence[str]], list[int]]:
    """How an index's chunker counted tokens (what `verify` needs to chunk as a clean build would), without
    loading or reaching its model: both providers count BERT word-pieces locally."""
    from docvec.embedders.builtin import BuiltinEmbedder, WordPieceCounter, load_tokenizer

    if provider == "builtin":
        return BuiltinEmbedder(model=model).count_tokens
    if provider == "ollama":
        counter = WordPieceCounter(load_tokenizer())
        return lambda texts: counter([document_prefix + t for t in texts])
    raise ConfigError(f"the index was built by provider '{provider}', which this docvec does not have")
