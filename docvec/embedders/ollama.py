"""The Ollama embedder: any embedding model an Ollama server has pulled, through the official `ollama` client.

Before any work it checks that the server answers, that the model is pulled and is an embedding model, and reads
the model's context length, embedding length and digest (they go into the index fingerprint). Texts go to
`/api/embed` in batches packed by an estimated-token budget, several requests in flight, with `truncate: false` so
that Ollama refuses an over-long input instead of embedding its prefix. Transient failures are retried with
backoff; a batch that keeps failing is bisected down to the one input that breaks it, which is reported with its
position. Every client error is mapped to docvec's errors here and nowhere else.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from docvec.embedders import EmbedderInfo, Vectors
from docvec.errors import EmbeddingError, InputRejected, ModelUnavailable, interrupt_behind

if TYPE_CHECKING:
    from docvec.embedders.builtin import WordPieceCounter  # imported when first needed: it loads a tokenizer

# Query / document prefixes from each model family's card, matched on the model name (first match wins).
FAMILY_PREFIXES: list[tuple[str, str, str]] = [
    ("embeddinggemma", "task: search result | query: ", "title: none | text: "),
    ("nomic-embed-text", "search_query: ", "search_document: "),
    ("mxbai-embed-large", "Represent this sentence for searching relevant passages: ", ""),
    ("snowflake-arctic-embed2", "query: ", ""),
    ("snowflake-arctic-embed", "Represent this sentence for searching relevant passages: ", ""),
    ("qwen3-embedding", "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
     ""),
    ("e5-", "query: ", "passage: "),  # intfloat e5 / multilingual-e5 community builds
]
FALLBACK_CONTEXT = 512  # when /api/show does not tell the context length
BACKOFF_SECONDS = 0.5  # first retry delay; doubles per attempt, capped at 8 s


@dataclass(frozen=True)
class OllamaOptions:
    """How docvec talks to the server; none of these change the vectors."""

    host: str
    timeout: float = 120.0
    keep_alive: str = "5m"
    batch_size: int = 32  # texts per request
    batch_tokens: int = 8192  # estimated tokens per request: bounds how long one request can take
    concurrency: int = 1  # requests in flight (2+ pays off only when the server has cores or GPUs to spare)
    retries: int = 3
    query_prefix: str | None = None  # None: the family's documented prefix
    document_prefix: str | None = None
    allow_chat_models: bool = False
    backoff: float = BACKOFF_SECONDS


@dataclass(frozen=True)
class ModelFacts:
    """What the server says about the model."""

    name: str
    digest: str
    context: int
    dimension: int
    capabilities: tuple[str, ...]


class _Transient(Exception):
    """A classified client failure: docvec's error for it, and whether retrying could help."""

    def __init__(self, error: EmbeddingError, reason: str, retryable: bool, retry_smaller: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.reason = reason  # what the server said, for a message about one input
        self.retryable = retryable  # server error, dropped connection, timeout, refused
        self.retry_smaller = retry_smaller  # a smaller batch might pass (not so for a timeout or a dead server)


class _Suspect(InputRejected):
    """One input the server failed on, every time; only blamed once a neighbouring request has gone through."""

    def __init__(self, message: str, index: int, failure: _Transient) -> None:
        super().__init__(message, index)
        self.failure = failure
        self.earned = False


class OllamaEmbedder:
    """One model on one Ollama server."""

    def __init__(self, model: str, options: OllamaOptions) -> None:
        import ollama

        self.options = options
        self._client = ollama.Client(host=options.host, timeout=_timeout(options.timeout))
        self._wordpieces: WordPieceCounter | None = None
        self._name = model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"  # as /api/tags lists it
        self._dimension = 0  # unknown until pre-flight; then every response is checked against it
        self.facts = self._preflight(model)
        self._dimension = self.facts.dimension
        query, document = prefixes_for(self.facts.name, options.query_prefix, options.document_prefix)
        self.info = EmbedderInfo("ollama", self.facts.name, self.facts.dimension, self.facts.context, True,
                                 self.facts.digest, query, document)

    # -- pre-flight -------------------------------------------------------------------------------------------

    def _preflight(self, model: str) -> ModelFacts:
        """Server up, model pulled, model embeds; read its context length, embedding length and digest."""
        name = self._name
        listed = self._call(lambda: self._client.list(), "list models")
        digest = next((m.digest or "" for m in listed.models if m.model in (name, model)), None)
        if digest is None:
            raise ModelUnavailable(f"model '{model}' is not pulled on the Ollama server {self.options.host} — "
                                   f"run `ollama pull {model}`")
        shown = self._call(lambda: self._client.show(name), f"show model '{name}'")
        capabilities = tuple(shown.capabilities or ())
        if capabilities and "embedding" not in capabilities and not self.options.allow_chat_models:
            raise ModelUnavailable(f"'{name}' is not an embedding model (capabilities: {', '.join(capabilities)}); "
                                   f"use an embedding model such as nomic-embed-text or embeddinggemma, or set "
                                   f"embedding.allow_chat_models: true to use it anyway")
        info = dict(shown.modelinfo or {})
        arch = str(info.get("general.architecture", ""))
        context = int(info.get(f"{arch}.context_length") or FALLBACK_CONTEXT)
        dimension = int(info.get(f"{arch}.embedding_length") or 0)
        facts = ModelFacts(name, digest, context, dimension, capabilities)
        if not dimension:  # the server does not say: ask the model
            facts = ModelFacts(name, digest, context, len(self._embed_one("dimension probe")), capabilities)
        return facts

    # -- the Embedder protocol --------------------------------------------------------------------------------

    @property
    def wordpiece_prefix(self) -> str:
        """count_tokens counts WordPieceCounter's word-pieces of the text with this prefix (see prefetch.py)."""
        return self.info.document_prefix

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Estimated tokens (BERT word-pieces) of each text with the document prefix; Ollama checks the real count."""
        from docvec.embedders.builtin import WordPieceCounter, load_tokenizer

        if self._wordpieces is None:
            self._wordpieces = WordPieceCounter(load_tokenizer())
        prefix = self.info.document_prefix
        return self._wordpieces([prefix + t for t in texts])

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Vectors of texts (document prefix added), in input order; requests run `concurrency` at a time."""
        prefixed = [self.info.document_prefix + t for t in texts]
        out = np.empty((len(texts), self.info.dimension), dtype=np.float32)
        batches = list(self._batches(prefixed))
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            # A sliding window of `concurrency` requests: after a failure nothing new is sent.
            waiting = iter(batches)
            in_flight = deque((idx, pool.submit(self._embed_batch, [prefixed[i] for i in idx], 0))
                              for idx in islice(waiting, self.options.concurrency))
            try:
                while in_flight:
                    idx, future = in_flight.popleft()
                    out[idx] = future.result()
                    for nxt in islice(waiting, 1):
                        in_flight.append((nxt, pool.submit(self._embed_batch, [prefixed[i] for i in nxt], 0)))
            except _Suspect as suspect:
                if not suspect.earned:  # a lone text failed: nothing shows the server works
                    raise suspect.failure.error from suspect
                raise InputRejected(str(suspect), idx[suspect.index]) from suspect
            except InputRejected as exc:
                raise InputRejected(str(exc), idx[exc.index]) from exc
            finally:
                for _, pending in in_flight:
                    pending.cancel()
        return out

    def embed_query(self, text: str) -> Vectors:
        """The vector of a question, with the model's query prefix."""
        return self._embed_one(self.info.query_prefix + text)

    def _embed_one(self, text: str) -> Vectors:
        """One text as it is; a lone failing text is the server's failure (nothing shows it works)."""
        try:
            vector: Vectors = self._embed_batch([text], 0)[0]
        except _Suspect as suspect:
            raise suspect.failure.error from suspect
        return vector

    # -- batching, retries, bisection -------------------------------------------------------------------------

    def _batches(self, texts: list[str]) -> Iterator[list[int]]:
        """Indices in length order, cut so each request stays under batch_tokens (estimated) and batch_size."""
        lengths = [max(1, len(t) // 3) for t in texts]  # ~3 characters per token: cheap and conservative
        batch: list[int] = []
        used = 0
        for i in sorted(range(len(texts)), key=lambda i: lengths[i]):
            if batch and (used + lengths[i] > self.options.batch_tokens or len(batch) == self.options.batch_size):
                yield batch
                batch, used = [], 0
            batch.append(i)
            used += lengths[i]
        if batch:
            yield batch

    def _embed_batch(self, texts: list[str], offset: int, retries: int | None = None) -> Vectors:
        """Embed one batch; if it keeps failing in a way a smaller batch could avoid, bisect to the bad input.

        Only the whole batch gets the configured retries with backoff: once they are spent the failure follows the
        input, so each half is tried once (a lone input twice) and the server is not hammered for minutes.
        """
        try:
            return self._with_retries(texts, self.options.retries if retries is None else retries)
        except _Transient as failure:
            if not failure.retry_smaller:
                raise failure.error from failure
            if len(texts) == 1:
                raise _Suspect(f"Ollama fails on it every time ({failure.reason})", offset, failure) from failure
            return self._bisect(texts, offset)
        except InputRejected as exc:  # the server said which kind of input it refuses (too long)
            if len(texts) == 1:
                raise InputRejected(str(exc), offset) from exc
            return self._bisect(texts, offset)

    def _bisect(self, texts: list[str], offset: int) -> Vectors:
        """Embed both halves. A server error blames one input only once a neighbouring request has gone through."""
        mid = len(texts) // 2
        try:
            head = self._embed_batch(texts[:mid], offset, 1 if mid == 1 else 0)
        except _Suspect as suspect:
            if not suspect.earned and not self._passes(texts[mid:], offset + mid):
                raise suspect.failure.error from suspect  # both halves fail: the server, not an input
            suspect.earned = True
            raise
        try:
            tail = self._embed_batch(texts[mid:], offset + mid, 1 if len(texts) - mid == 1 else 0)
        except _Suspect as suspect:
            suspect.earned = True  # the first half went through
            raise
        return np.concatenate([head, tail])

    def _passes(self, texts: list[str], offset: int) -> bool:
        try:
            self._embed_batch(texts, offset, 0)
            return True
        except EmbeddingError:
            return False

    def _with_retries(self, texts: list[str], retries: int) -> Vectors:
        for attempt in range(retries + 1):
            try:
                return self._request(texts)
            except _Transient:
                if attempt == retries:
                    raise
                time.sleep(min(self.options.backoff * 2 ** attempt, 8.0))
        raise AssertionError("unreachable")

    def _request(self, texts: list[str]) -> Vectors:
        """One /api/embed request; checks that every input came back as a finite vector of the right size."""
        response = self._call(lambda: self._client.embed(model=self._name, input=texts, truncate=False,
                                                         keep_alive=self.options.keep_alive),
                              f"embed {len(texts)} texts", transient=True)
        vectors = np.asarray(response.embeddings, dtype=np.float32)
        expected = self._dimension or (vectors.shape[-1] if vectors.ndim == 2 else 0)
        if vectors.ndim != 2 or vectors.shape != (len(texts), expected) or not np.isfinite(vectors).all():
            raise EmbeddingError(f"Ollama at {self.options.host} returned an array of shape {vectors.shape} for "
                                 f"{len(texts)} texts (expected {expected} finite values each); check the server")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalized: Vectors = vectors / np.clip(norms, 1e-12, None)
        return normalized

    def _call(self, request: Callable[[], Any], what: str, transient: bool = False) -> Any:
        """Run one client call; map every failure of the client to docvec's errors (the only place that does)."""
        try:
            return request()
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as docvec errors
            if (stop := interrupt_behind(exc)) is not None:
                raise stop from None
            failure = self._classify(exc, what)
            if transient and failure.retryable:
                raise failure from exc
            raise failure.error from exc

    def _classify(self, exc: Exception, what: str) -> "_Transient":
        """Which docvec error a client failure is, and whether a retry or a smaller batch could help."""
        import httpx
        import ollama

        host, model = self.options.host, self._name
        if isinstance(exc, ollama.ResponseError):
            text, status = str(exc.error), exc.status_code
            if status == 404:
                return _Transient(ModelUnavailable(
                    f"model '{model}' is not pulled on the Ollama server {host} (it answered 404: {text}) — "
                    f"run `ollama pull {model}`"), text, False, False)
            if "context length" in text or "context window" in text:
                return _Transient(InputRejected(
                    f"longer than the model's context ({text}): lower chunking.max_tokens", 0), text, False, True)
            if "does not support" in text and "embed" in text:
                return _Transient(ModelUnavailable(f"'{model}' cannot embed ({text}): use an embedding model"),
                                  text, False, False)
            reason = f"HTTP {status}: {text}"
            return _Transient(EmbeddingError(f"Ollama at {host} failed to {what} ({reason}): check the server's "
                                             f"log and run again — what is indexed stays"), reason,
                              status >= 500 or status == 429, True)
        if isinstance(exc, ConnectionError):  # the client turns httpx.ConnectError into this
            return _Transient(ModelUnavailable(f"cannot reach Ollama at {host}: start it (`ollama serve`) or point "
                                               f"embedding.host (or OLLAMA_HOST) at it"), "refused", True, False)
        if isinstance(exc, httpx.TimeoutException):
            return _Transient(EmbeddingError(
                f"Ollama at {host} did not answer within {self.options.timeout:g} s (embedding.timeout) to {what}: "
                f"raise embedding.timeout, or lower embedding.batch_tokens so each request is smaller"),
                "timeout", True, False)
        if isinstance(exc, (httpx.TransportError, ValueError)):  # dropped connection, garbled body
            reason = f"{type(exc).__name__}: {exc}"
            return _Transient(EmbeddingError(f"Ollama at {host} broke off while asked to {what} ({reason}); "
                                             f"check the server's log"), reason, True, True)
        raise exc


def prefixes_for(model: str, query: str | None, document: str | None) -> tuple[str, str]:
    """The configured prefixes, else those documented for the model's family, else none."""
    base = model.rsplit("/", 1)[-1].lower()
    family = next(((q, d) for key, q, d in FAMILY_PREFIXES if base.startswith(key) or
                   (key == "e5-" and key in base)), ("", ""))
    return (family[0] if query is None else query, family[1] if document is None else document)


def _timeout(seconds: float) -> Any:
    import httpx

    return httpx.Timeout(seconds, connect=min(seconds, 10.0))
