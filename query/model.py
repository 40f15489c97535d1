"""The model that answers questions on an index: always the one that built it, whatever the configuration says."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from docvec.config import EmbeddingSettings
from docvec.embedders import Embedder, make_embedder
from docvec.errors import DocvecError, ModelUnavailable

if TYPE_CHECKING:
    from docvec.store import Store


def index_embedder(store: "Store", configured: EmbeddingSettings, optional: bool = False,
                   notes: list[str] | None = None) -> Embedder | None:
    """The embedder that built the index; a different configured model is only noted (in `notes`).

    With `optional` (keyword mode: the model only adds similarities) an unavailable model gives None and a note."""
    notes = notes if notes is not None else []
    built = store.fingerprint()
    if (built.provider, untagged(built.model)) != (configured.provider, untagged(configured.model)):
        notes.append(f"the index was built with {built.provider}:{built.model}, the configuration says "
                     f"{configured.provider}:{configured.model}; answering with the index's model")
    # The question must be embedded exactly as the index's documents were: same model, same prefixes.
    same = replace(configured, provider=built.provider, model=built.model, query_prefix=built.query_prefix,
                   document_prefix=built.document_prefix)
    try:
        embedder = make_embedder(same)
    except DocvecError as exc:
        if optional:
            notes.append(f"{exc} — showing keyword scores only")
            return None
        if isinstance(exc, ModelUnavailable):
            raise  # its message already names the model and the fix
        raise ModelUnavailable(f"the index was built with {built.provider}:{built.model}, which cannot be loaded "
                               f"here ({exc}); install it, or run `docvec reindex` with an available model") from exc
    if embedder.info.digest != built.digest:
        notes.append(f"warning: {built.model} has changed since the index was built (digest {built.digest[:12]} → "
                     f"{embedder.info.digest[:12]}): scores may be off until `docvec reindex`")
    return embedder


def untagged(model: str) -> str:
    """An Ollama model name without its default ':latest' tag."""
    return model[: -len(":latest")] if model.endswith(":latest") else model
