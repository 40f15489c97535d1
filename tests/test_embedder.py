"""The built-in model: real vectors, batching that changes nothing, a checked model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docvec.config import EmbeddingSettings
from docvec.embedders import make_embedder
from docvec.embedders import builtin as builtin_module
from docvec.chunker import ISOLATED
from docvec.embedders.builtin import BuiltinEmbedder, WordPieceCounter, _check_sha256, load_tokenizer
from docvec.errors import ConfigError, ModelUnavailable


def test_vectors_are_normalised_and_batching_is_transparent(builtin: BuiltinEmbedder) -> None:
    texts = ["short", "Fix invalid API authentication tokens " * 12, "Billing limits and usage quotas", "x " * 400]
    together = builtin.embed_documents(texts)
    alone = np.stack([builtin.embed_documents([t])[0] for t in texts])
    assert together.shape == (4, 384)
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_meaning_beats_shared_words(builtin: BuiltinEmbedder) -> None:
    q = builtin.embed_query("My API request keeps getting rejected even though I send a token.")
    auth, billing = builtin.embed_documents(["Fix invalid API authentication tokens",
                                             "Billing limits and usage quotas"])
    assert float(q @ auth) > float(q @ billing) + 0.2


def test_token_counts_include_special_tokens_and_are_not_truncated(builtin: BuiltinEmbedder) -> None:
    assert builtin.count_tokens(["", "hello world"]) == [2, 4]
    assert builtin.count_tokens(["word " * 1000]) == [1002]


_ANY = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_SPACES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(str.isspace), max_size=2)


@settings(max_examples=400, deadline=None)
@given(_ANY, st.tuples(_SPACES, st.sampled_from(" \t\n\r"), _SPACES).map("".join), _ANY)
def test_token_counts_add_up_across_ascii_whitespace(a: str, gap: str, b: str) -> None:
    """The chunker's contract (docvec.chunker.TokenCounter): a chunk's count is the sum of its parts' when
    whitespace joins them, so packed chunks and merged sections need not be tokenized again. Checked on the
    tokenizer itself: the embedder's counter sums words by this very rule."""
    whole, left, right, nothing = _raw_counts([a + gap + b, a, b, ""])
    assert whole == left + right - nothing


_RAW = load_tokenizer()
_RAW.no_truncation()


def _raw_counts(texts: list[str]) -> list[int]:
    """The tokenizer's own count of each whole text, special tokens included."""
    return [len(e.ids) for e in _RAW.encode_batch(texts)]

_COUNTER = WordPieceCounter(load_tokenizer())  # one for all examples: its word cache fills and starts afresh
_WORDS = st.sampled_from(["token", "Tokenization", "x" * 150, "文档说明", "İ", " \t\r\n"])
_PIECES = st.lists(st.one_of(_ANY, _WORDS), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=8))
def test_the_counter_counts_what_the_tokenizer_counts(texts: list[str]) -> None:
    """Counting each distinct word once (and remembering it) gives the tokenizer's own count of every text."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtin_module, "MAX_CACHED_WORDS", 40)  # small: the cache is emptied often
        assert _COUNTER(texts) == _raw_counts(texts)


def test_corrupt_model_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailable, match="corrupt .* reinstall"):
        _check_sha256(fake, "0" * 64)


def test_unknown_model_and_provider_are_clear_errors() -> None:
    with pytest.raises(ModelUnavailable, match="only 'all-MiniLM-L6-v2'"):
        BuiltinEmbedder(model="bge-small")
    with pytest.raises(ConfigError, match="not supported"):
        make_embedder(EmbeddingSettings(provider="openai", model="x"))


def test_every_isolated_character_is_a_token_of_its_own() -> None:
    """The chunker proves a text too long without counting it from ISOLATED characters, each worth at least one
    token wherever it stands: check each of them on the tokenizer, alone and in a run. (A run of 101 characters
    that the tokenizer does not split off is one over-long word: a single [UNK].)"""
    chars = [chr(c) for c in range(0x110000) if ISOLATED.fullmatch(chr(c))]
    assert len(chars) > 20_000  # ASCII punctuation, general and CJK punctuation, the ideographs
    nothing = _raw_counts([""])[0]
    counts = [n - nothing for n in _raw_counts([t for c in chars for t in (c, c * 101)])]
    wrong = [(hex(ord(c)), alone, run) for c, alone, run in zip(chars, counts[::2], counts[1::2])
             if (alone, run) != (1, 101)]
    assert not wrong
