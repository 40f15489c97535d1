"""Embed a question the way the index was built and return its nearest chunks, best first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from docvec.embedders import Embedder
from docvec.errors import ConfigError
from docvec.store import Metadata, Store

MAX_QUERY_CHARS = 10_000


@dataclass(frozen=True)
class Hit:
    """One ranked answer."""

    rank: int
    score: float  # cosine similarity: 1 is identical, higher is better
    id: str
    label: str
    source: str
    start_line: int
    end_line: int
    text: str
    metadata: Metadata

    def as_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), "id": self.id, "label": self.label,
                "source": self.source, "line": self.start_line, "end_line": self.end_line, "text": self.text,
                "metadata": self.metadata}


def search(store: Store, embedder: Embedder, question: str, top_k: int, min_score: float = -1.0,
           where: Mapping[str, Any] | None = None) -> list[Hit]:
    """The top_k chunks most similar to the question, weaker than min_score dropped."""
    question = question.strip()
    if not question:
        raise ConfigError("the query is empty: pass a question, e.g. docvec query \"how do I rotate a token?\"")
    if len(question) > MAX_QUERY_CHARS:
        raise ConfigError(f"the query is {len(question)} characters; the limit is {MAX_QUERY_CHARS}")
    vector = embedder.embed_query(question)
    results = store.query([float(x) for x in vector], top_k, where)
    hits: list[Hit] = []
    for r in results:
        if r.similarity < min_score:
            continue
        meta = r.metadata
        hits.append(Hit(len(hits) + 1, r.similarity, r.id, str(meta.get("label", "")), str(meta.get("source", "")),
                        int(meta.get("start_line", 0)), int(meta.get("end_line", 0)), r.document, meta))
    return hits


def parse_where(filters: list[str]) -> dict[str, Any] | None:
    """`source=guides/` (a file or a folder), `tag=auth`, `KEY=VALUE` (front matter) -> a Chroma where clause."""
    clauses: list[dict[str, Any]] = []
    for item in filters:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--where '{item}': expected KEY=VALUE, e.g. source=guides/ or tag=auth")
        clauses.append(_clause(key, value))
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _clause(key: str, value: str) -> dict[str, Any]:
    if key == "source":
        folder = value.rstrip("/")
        if value.endswith("/"):
            return {"dirs": {"$contains": folder}}
        return {"$or": [{"source": value}, {"dirs": {"$contains": folder}}]}
    if key in ("tag", "tags"):
        return {"fm.tags": {"$contains": value}}
    return {f"fm.{key}": _scalar(value)}


def _scalar(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
