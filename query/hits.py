"""What a search answers and how it is asked: hits, their places, the fusion rule, where clauses and limits.

Standard library only: `docvec query` rebuilds a running server's answer into these without loading numpy,
Chroma or the model (bench/README.md: the warm client).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from docvec.errors import ConfigError
from docvec.text import valid_text

if TYPE_CHECKING:
    from docvec.config import QuerySettings

Metadata = dict[str, Any]

@dataclass(frozen=True)
class Fusion:
    """How hybrid mode combines the two sides into its score.

    'score' (default): (vector_weight · cosine similarity + keyword_weight · bm25 / best bm25) / (sum of weights),
    where "best bm25" is the best any chunk of the index gets for this question: a similarity plus a bonus for the
    question's words, at most 1. Chosen by measurement among pool-independent rules (bench/ranking_sweep.py,
    bench/README.md). 'rrf': reciprocal-rank fusion, sum of weight / (rrf_k + rank) over each ranking's first
    `candidates` (default 100) chunks; chunks deeper in both are not ranked.

    `file_penalty` (every mode but rrf): a chunk's score drops by this much for each hit of its file listed above
    it, so a second passage of one file must beat the next file's best by that margin (measured in
    bench/README.md: ten chunks of one long file no longer fill the list, and a file's second chunk still shows
    when it is clearly better).
    """

    method: str = "score"
    vector_weight: float = 0.7
    keyword_weight: float = 0.3
    rrf_k: int = 60
    candidates: int = 0  # first read depth per ranking (rrf: the fixed depth); 0 = 50 (rrf: 100)
    file_penalty: float = 0.05

    @classmethod
    def of(cls, q: QuerySettings) -> "Fusion":
        """The fusion the query settings describe."""
        return cls(q.fusion, q.vector_weight, q.keyword_weight, q.rrf_k, q.candidates, q.file_penalty)


@dataclass(frozen=True)
class Location:
    """Another place holding the same text as a hit: located as a hit is (its chunk, lines and characters)."""

    source: str
    start_line: int
    end_line: int
    label: str
    id: str = ""
    start_char: int = 0
    end_char: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "line": self.start_line, "end_line": self.end_line,
                "start_char": self.start_char, "end_char": self.end_char, "label": self.label}


@dataclass(frozen=True)
class Hit:
    """One ranked answer; `score` is the number the list is ordered by (see README: Scores)."""

    rank: int
    score: float
    id: str
    label: str
    source: str
    start_line: int
    end_line: int
    text: str
    metadata: Metadata
    similarity: float | None = None  # cosine similarity of question and chunk (None without the model)
    keyword_score: float | None = None  # bm25 (None when the keyword side was not asked; 0 when no word matches)
    vector_rank: int | None = None  # rank in the vector ranking, when read that deep
    keyword_rank: int | None = None
    also: tuple[Location, ...] = ()  # other places with exactly this text
    answer_lines: tuple[int, int] | None = None  # the lines of the chunk that best answer the question
    answer_span: tuple[int, int] | None = None  # the same as [start, end) characters of `text`
    penalty: float = 0.0  # taken off the score for the hits of the same file above it (Fusion.file_penalty)
    counted_similarity: float | None = None  # what the score counted instead, when the vector beam missed it

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rank": self.rank, "score": round(self.score, 6), "id": self.id, "label": self.label,
            "source": self.source, "line": self.start_line, "end_line": self.end_line, "text": self.text,
            "similarity": _rounded(self.similarity), "keyword_score": _rounded(self.keyword_score),
            "vector_rank": self.vector_rank, "keyword_rank": self.keyword_rank, "penalty": round(self.penalty, 6),
            "metadata": dict(sorted(self.metadata.items()))}  # Chroma's key order varies between reads
        if self.answer_lines is not None:
            out["answer_lines"], out["answer_span"] = list(self.answer_lines), list(self.answer_span or ())
        if self.also:
            out["also"] = [loc.as_dict() for loc in self.also]
        if self.counted_similarity is not None:
            out["similarity_counted"] = _rounded(self.counted_similarity)
        return out


def hit_from_dict(d: Mapping[str, Any]) -> Hit:
    """A Hit back from its `as_dict` form (what `docvec serve` sends)."""
    answer = d.get("answer_lines")
    span = d.get("answer_span")
    return Hit(int(d["rank"]), float(d["score"]), str(d["id"]), str(d["label"]), str(d["source"]), int(d["line"]),
               int(d["end_line"]), str(d["text"]), dict(d.get("metadata") or {}), d.get("similarity"),
               d.get("keyword_score"), d.get("vector_rank"), d.get("keyword_rank"),
               tuple(Location(str(a["source"]), int(a["line"]), int(a["end_line"]), str(a["label"]), str(a["id"]),
                              int(a["start_char"]), int(a["end_char"])) for a in d.get("also") or ()),
               (int(answer[0]), int(answer[1])) if answer else None, (int(span[0]), int(span[1])) if span else None,
               float(d.get("penalty") or 0.0), d.get("similarity_counted"))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)




def docs_relative(path: str, docs_root: str | os.PathLike[str], cwd: str | None = None) -> str:
    """A path as docvec prints it (relative to the current folder, or absolute) as the docs-relative path the index
    stores, when it lies inside the docs folder; else unchanged (a docs-relative path stays as it is)."""
    root = os.path.normpath(os.path.abspath(docs_root))
    if not path or not os.path.isabs(path) and os.path.lexists(os.path.join(root, path)):
        return path  # already relative to the docs folder
    full = os.path.normpath(os.path.join(cwd or os.getcwd(), path))
    if full != root and not full.startswith(root + os.sep):
        return path
    rel = os.path.relpath(full, root).replace(os.sep, "/")
    return "" if rel == "." else rel + ("/" if path.endswith("/") and rel != "." else "")


def parse_where(filters: list[str]) -> dict[str, Any] | None:
    """`source=guides/` (a file or a folder), `tag=auth`, `KEY=VALUE` (front matter) -> a Chroma where clause."""
    clauses: list[dict[str, Any]] = []
    for item in map(valid_text, filters):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--where '{item}': expected KEY=VALUE, e.g. source=guides/ or tag=auth")
        clauses.append(_clause(key, value))
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _clause(key: str, value: str) -> dict[str, Any]:
    if key.startswith("fm."):  # the name --json shows: always a front-matter key (a page's own `source:` too)
        return _front_matter_clause(key[3:], value)
    if key == "source":
        folder = value.rstrip("/")
        if value.endswith("/"):
            return {"dirs": {"$contains": folder}}
        return {"$or": [{"source": value}, {"dirs": {"$contains": folder}}]}
    if key in ("tag", "tags"):
        return {"fm.tags": {"$contains": value}}
    return _front_matter_clause(key, value)


def _front_matter_clause(key: str, value: str) -> dict[str, Any]:
    # A list-valued key (tags: [a, b]; stored as strings) matches by membership, a scalar one by equality.
    return {"$or": [{f"fm.{key}": _scalar(value)}, {f"fm.{key}": {"$contains": value}}]}


def where_keys(clause: Mapping[str, Any] | None) -> set[str]:
    """The metadata keys a where clause filters on."""
    keys: set[str] = set()
    for key, value in (clause or {}).items():
        if key in ("$and", "$or"):
            for part in value:
                keys |= where_keys(part)
        else:
            keys.add(key)
    return keys


def _scalar(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            number = cast(value)
        except ValueError:
            continue
        if isinstance(number, float) and not math.isfinite(number):
            return value  # 'nan', 'inf': compared as text, never as a number no value can equal
        if isinstance(number, int) and not -2**63 <= number < 2**63:
            return value  # beyond what the index stores as a number
        return number
    return value
