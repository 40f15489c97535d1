"""Shared fixtures: real Chroma folders in tmp_path, the real built-in model, and a recording embedder.

The recording embedder stands in for the model only where a test counts embedding calls; it counts tokens with
the real MiniLM tokenizer so chunk sizes are the real ones.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pytest

from docvec.embedders import EmbedderInfo, Vectors
from docvec.embedders.builtin import BuiltinEmbedder

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DOCS = REPO / "data" / "docs"


class RecordingEmbedder:
    """Deterministic bag-of-words vectors; records every text it is asked to embed."""

    def __init__(self, model: str = "recording-384") -> None:
        self.info = EmbedderInfo("test", model, 384, 256, True)
        self.embedded: list[str] = []
        self.calls = 0
        self._tokens = _tokenizer()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._tokens.count_tokens(texts)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        self.calls += 1
        self.embedded.extend(texts)
        return np.stack([_bag_of_words(t) for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def embed_query(self, text: str) -> Vectors:
        return _bag_of_words(text)


def _bag_of_words(text: str) -> Vectors:
    vec = np.zeros(384, dtype=np.float32)
    for word in text.lower().split():
        vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % 384] += 1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm else vec + 1 / np.sqrt(384)


_TOKENIZER: BuiltinEmbedder | None = None


def _tokenizer() -> BuiltinEmbedder:
    """The real embedder object, used only for its tokenizer (its ONNX model loads lazily, on first embed)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = BuiltinEmbedder()
    return _TOKENIZER


@pytest.fixture
def recorder() -> RecordingEmbedder:
    return RecordingEmbedder()


@pytest.fixture(scope="session")
def builtin() -> BuiltinEmbedder:
    """The real built-in model, loaded once per test session."""
    return BuiltinEmbedder()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A copy of the sample docs that a test may edit."""
    target = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, target)
    return target


@pytest.fixture
def project(tmp_path: Path, docs: Path) -> Path:
    """A folder with a config.yaml pointing at a docs copy and an index inside tmp_path."""
    (tmp_path / "config.yaml").write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n")
    return tmp_path


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The warm client's settings cache (query/client.py) lives in the tests' own folder, for every process they
    start: never in the user's ~/.cache."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
