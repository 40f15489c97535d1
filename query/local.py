"""A question answered in this process: the index, the keyword index and the model loaded here.

`docvec query` imports this only when no running `docvec serve` of the index answered (the client path loads no
numpy, Chroma, onnxruntime or tantivy; tests/test_packaging.py holds it to that).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

from docvec.config import Settings
from docvec.embedders import Embedder, make_embedder
from docvec.errors import IndexNotFound
from docvec.fingerprint import Fingerprint
from docvec.keyword import KeywordIndex, sync_keyword_index
from docvec.query.hits import Fusion, Hit
from docvec.query.model import index_embedder
from docvec.query.search import search
from docvec.query.spans import point
from docvec.settings import store_location
from docvec.store import Store


def answer_here(settings: Settings, question: str, where: dict[str, Any] | None,
                note: Callable[[str], None]) -> tuple[list[Hit], str | None]:
    """The hits for a question answered in this process, and the docs folder the index records."""
    preload = _Preload(settings, question)  # model load and question embedding overlap opening the index
    store = Store.open_for_reading(store_location(settings))
    if store.count() == 0:
        raise IndexNotFound(f"{store.location.describe()} is empty: run `docvec ingest` first")
    q = settings.query
    embedder, vector = preload.result(store.fingerprint())
    if embedder is None:
        embedder = notified_embedder(store, settings, note, optional=q.mode == "keyword")
    with open_keyword_index(store, q.mode) as keyword:
        hits = search(store, embedder, question, q.top_k, q.min_score, where, q.mode, keyword, fusion(settings),
                      vector, q.per_file)
    if q.spans != "off":
        hits = point(hits, question, embedder if q.spans == "model" else None, vector)
    return hits, store.docs_root()


def fusion(settings: Settings) -> Fusion:
    """Hybrid fusion parameters from the settings."""
    return Fusion.of(settings.query)


@contextlib.contextmanager
def open_keyword_index(store: Store, mode: str) -> Iterator[KeywordIndex | None]:
    """The keyword index, brought up to date with the collection, when the mode needs it."""
    if mode == "vector":
        yield None
        return
    with KeywordIndex.of(store) as index:
        sync_keyword_index(store, index, reader=True)
        yield index


class _Preload:
    """Loads the configured model and embeds the question in a thread while the main thread opens the index.

    A cold `docvec query` spends most of its time importing Chroma (~0.8 s) and loading the model (~0.4 s); done
    side by side they overlap. The result is used only if the index was built with exactly this embedder.
    """

    def __init__(self, settings: Settings, question: str) -> None:
        self._embedder: Embedder | None = None
        self._vector: Any = None
        if settings.embedding.provider == "ollama":
            import ollama  # noqa: F401 - imported here: two threads importing httpx at once is unsafe
        self._thread = threading.Thread(target=self._run, args=(settings, question), daemon=True)
        self._thread.start()

    def _run(self, settings: Settings, question: str) -> None:
        try:
            self._embedder = make_embedder(settings.embedding)
            self._vector = self._embedder.embed_query(question)
        except Exception:  # noqa: BLE001 - the main thread loads the index's model itself and reports errors
            self._embedder = None

    def result(self, built: Fingerprint) -> tuple[Embedder | None, Any]:
        """The embedder and question vector, if they are the index's; else (None, None)."""
        self._thread.join()
        info = self._embedder.info if self._embedder is not None else None
        if info is None or (info.provider, info.model, info.digest, info.query_prefix, info.document_prefix) != \
                (built.provider, built.model, built.digest, built.query_prefix, built.document_prefix):
            return None, None
        return self._embedder, self._vector


def notified_embedder(store: Store, settings: Settings, note: Callable[[str], None],
                      optional: bool = False) -> Embedder | None:
    """The index's own model; its notes (another model configured, a changed digest) go to `note`."""
    notes: list[str] = []
    try:
        return index_embedder(store, settings.embedding, optional, notes)
    finally:
        for line in notes:
            note(line if line.startswith("warning:") else f"note: {line}")
