"""Point each hit at the part of its chunk that answers the question: a window of sentences scored by the model
and by the question's words.

Retrieval keeps whole chunks (they give the context and find the right place); the pointed span is what a reader
or an agent should look at first. Measured on bench/spans (bench/span_eval.py): see bench/README.md.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from docvec.text import valid_text
from docvec.embedders import Embedder, Vectors
from docvec.keyword import question_words as content_words
from docvec.query.hits import Hit

MAX_PARAGRAPH_CHARS = 800  # the best sentence's whole paragraph is the span when it is no longer than this
MAX_SPAN_CHARS = 600  # else the span grows past its best sentence, within its paragraph, while this short
GROW_SHARE = 0.5  # a neighbour joins when it scores at least this share of the best sentence
VECTOR_WEIGHT = 0.5  # the rest is the share of the question's words a sentence contains

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=[\"'`*_(\[]?[A-Z0-9])")
_WORD = re.compile(r"\w+", re.UNICODE)
_NOT_PROSE = re.compile(r"^\s*(#{1,6}\s|```|~~~|\|?\s*:?-{3,}|<!--)")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")
MAX_INTRODUCED_CHARS = 1200  # the block a line ending in ":" introduces joins its span up to this size


@dataclass(frozen=True)
class Unit:
    """A sentence or a line of a chunk: [start, end) characters of its text, and which paragraph holds it."""

    start: int
    end: int
    paragraph: int = 0
    kind: str = "prose"  # prose, item (a list item's line), code (inside a fence), table, quote


def units(text: str) -> list[Unit]:
    """The sentences of prose lines and the other non-blank lines, headings and fence markers left out.

    A paragraph ends at a blank line, a heading or fence line, and before a list item."""
    out: list[Unit] = []
    offset = paragraph = 0
    fenced = False
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if _FENCE.match(body):
            fenced = not fenced
            paragraph += 1
        elif fenced:  # a code line is a line: never split into sentences, never a heading
            if body.strip():
                out.append(Unit(offset + len(body) - len(body.lstrip()), offset + len(body), paragraph, "code"))
        else:
            if not body.strip() or _NOT_PROSE.match(body) or _ITEM.match(body):
                paragraph += 1
            if body.strip() and not _NOT_PROSE.match(body):
                out.extend(_sentences(text, body, offset, paragraph, _kind(body)))
        offset += len(line)
    return out


def _kind(body: str) -> str:
    stripped = body.lstrip()
    return ("item" if _ITEM.match(body) else "table" if stripped.startswith("|") else
            "quote" if stripped.startswith(">") else "prose")


def _sentences(text: str, body: str, offset: int, paragraph: int, kind: str) -> list[Unit]:
    """A prose line's sentences (a table or quote line is one unit)."""
    start = offset + len(body) - len(body.lstrip())
    if kind in ("table", "quote"):
        return [Unit(start, offset + len(body.rstrip()), paragraph, kind)]
    out = []
    for piece in _SENTENCE_END.split(body.strip()):
        at = text.index(piece, start)
        out.append(Unit(at, at + len(piece), paragraph, kind))
        start = at + len(piece)
    return out


def introduced(text: str, spans: Sequence[Unit], last: int) -> int:
    """The last unit of the span ending at `last`, extended over the block its last line introduces: a line that
    ends in ":" ("To undo the last commit, keeping its changes:") is answered by the code, list or table after it."""
    if not text[spans[last].start:spans[last].end].rstrip().endswith(":") or last + 1 >= len(spans):
        return last
    nxt = spans[last + 1]
    if nxt.kind == "prose":
        return last
    end = last + 1
    while end + 1 < len(spans) and spans[end + 1].end - spans[last].start <= MAX_INTRODUCED_CHARS and (
            spans[end + 1].kind == nxt.kind and (nxt.kind == "item" or spans[end + 1].paragraph == nxt.paragraph)
            or spans[end + 1].paragraph == spans[end].paragraph):  # an item's continuation lines
        end += 1
    return end


def with_fences(text: str, spans: Sequence[Unit], first: int, last: int) -> tuple[int, int]:
    """[start, end) of units first..last, taking in the fence lines of a code block the span opens or closes in
    (the answer is the whole block, as it prints)."""
    start, end = spans[first].start, spans[last].end
    line_start = text.rfind("\n", 0, start) + 1
    if spans[first].kind == "code" and line_start:  # the line before is the opening fence?
        above = text.rfind("\n", 0, line_start - 1) + 1
        if _FENCE.match(text[above:line_start - 1]):
            start = above
    below = text.find("\n", end)
    if spans[last].kind == "code" and below >= 0:  # the line after is the closing fence?
        below_end = text.find("\n", below + 1)
        below_end = len(text) if below_end < 0 else below_end
        if _FENCE.match(text[below + 1:below_end]):
            end = below_end
    return start, end


def grow(scores: Sequence[float], spans: Sequence[Unit]) -> tuple[int, int]:
    """The best unit's paragraph when short enough; else the best unit widened, within its paragraph, to
    neighbours that score nearly as well while the span stays short: (first, last)."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    same = [i for i, u in enumerate(spans) if u.paragraph == spans[best].paragraph]
    if spans[same[-1]].end - spans[same[0]].start <= MAX_PARAGRAPH_CHARS:
        return same[0], same[-1]
    first = last = best
    floor = scores[best] * GROW_SHARE if scores[best] > 0 else scores[best]
    while True:
        options = [i for i in (first - 1, last + 1) if 0 <= i < len(scores) and scores[i] >= floor
                   and spans[i].paragraph == spans[best].paragraph]
        options = [i for i in options if max(spans[last].end, spans[i].end) - min(spans[first].start, spans[i].start)
                   <= MAX_SPAN_CHARS]
        if not options:
            return first, last
        pick = max(options, key=lambda i: scores[i])
        first, last = min(first, pick), max(last, pick)


def line_of(hit: Hit, position: int) -> int:
    """The source line of a character of the hit's text (a split block's repeated fence or header counted out)."""
    extra = max(0, hit.text.count("\n") + 1 - (hit.end_line - hit.start_line + 1))
    return min(hit.end_line, max(hit.start_line, hit.start_line + hit.text.count("\n", 0, position) - extra))


def word_overlap(question: str | frozenset[str], text: str) -> float:
    """The share of the question's content words (or of a `question_words` set) in the text, inflections aside."""
    wanted = question_words(question) if isinstance(question, str) else question
    if not wanted:
        return 0.0
    have = {_stem(w) for w in _WORD.findall(text.lower())}
    return len(wanted & have) / len(wanted)


def question_words(question: str) -> frozenset[str]:
    """The stemmed content words of a question."""
    return frozenset(_stem(w) for w in content_words(question))


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """A crude English stem, enough to match retried/retrying/retry and deliveries/delivery."""
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + repl
    return word




def point(hits: list[Hit], question: str, embedder: Embedder | None, vector: Vectors | None = None) -> list[Hit]:
    """The hits with `answer_lines` / `answer_span` set: sentences scored by the model and the question's words
    (by words alone when `embedder` is None: free, where the model costs about one embedding of each hit)."""
    question = valid_text(question)
    pieces = [(h, units(h.text)) for h in hits]
    texts = [h.text[u.start:u.end] for h, us in pieces for u in us]
    sims: Any = np.zeros(len(texts), dtype=np.float32)
    if embedder is not None and texts:
        qvec = np.asarray(vector if vector is not None else embedder.embed_query(question), dtype=np.float32)
        sims = np.asarray(embedder.embed_documents(texts), dtype=np.float32) @ qvec
    out, at = [], 0
    wanted = question_words(question)
    claimed: dict[str, set[int]] = {}  # lines of each file that a better hit already points at
    for hit, us in pieces:
        if not us:
            out.append(hit)
            continue
        scores = [VECTOR_WEIGHT * max(float(sims[at + i]), 0.0) * (embedder is not None)
                  + (1 - VECTOR_WEIGHT) * word_overlap(wanted, hit.text[u.start:u.end]) for i, u in enumerate(us)]
        at += len(us)
        taken = claimed.setdefault(hit.source, set())
        fresh = [i for i, u in enumerate(us) if line_of(hit, u.start) not in taken]
        if fresh and len(fresh) < len(us):  # overlapping chunks: point at what the better hit does not show
            us, scores = [us[i] for i in fresh], [scores[i] for i in fresh]
        first, last = grow(scores, us)
        last = introduced(hit.text, us, last)
        start, end = with_fences(hit.text, us, first, last)
        lines = (line_of(hit, start), line_of(hit, end - 1))
        taken.update(range(lines[0], lines[1] + 1))
        out.append(replace(hit, answer_span=(start, end), answer_lines=lines))
    return out
