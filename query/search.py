"""Answer a question from the index: vector, keyword or hybrid (reciprocal-rank fusion) ranking."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from docvec.embedders import Embedder, Vectors
from docvec.errors import ConfigError
from docvec.keyword import KeywordIndex
from docvec.store import Metadata, Store

MAX_QUERY_CHARS = 10_000
MODES = ("vector", "keyword", "hybrid")
FUSIONS = ("score", "rrf")


@dataclass(frozen=True)
class Fusion:
    """How hybrid mode fuses its two rankings.

    'score': a convex combination of the min-max normalised cosine similarity and bm25 score (a chunk absent from
    the keyword list scores 0 there); 'rrf': reciprocal-rank fusion, sum of weight / (rrf_k + rank). Measured on
    SciFact, score fusion wins (nDCG@10 0.739 vs 0.711 for RRF at its defaults): see bench/README.md.
    """

    method: str = "score"
    vector_weight: float = 0.6
    keyword_weight: float = 0.4
    rrf_k: int = 60
    candidates: int = 0  # per ranking; 0 = max(4 * top_k, 50)


@dataclass(frozen=True)
class Hit:
    """One ranked answer."""

    rank: int
    score: float  # cosine similarity between question and chunk: 1 is identical, higher is better
    id: str
    label: str
    source: str
    start_line: int
    end_line: int
    text: str
    metadata: Metadata
    vector_rank: int | None = None
    keyword_rank: int | None = None
    fused: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"rank": self.rank, "score": round(self.score, 6), "id": self.id, "label": self.label,
               "source": self.source, "line": self.start_line, "end_line": self.end_line, "text": self.text,
               "metadata": self.metadata}
        if self.fused is not None or self.keyword_rank is not None:
            out.update({"vector_rank": self.vector_rank, "keyword_rank": self.keyword_rank, "fused": self.fused})
        return out


@dataclass
class _Candidate:
    vector_rank: int | None = None
    keyword_rank: int | None = None
    keyword_score: float = 0.0
    similarity: float | None = None
    document: str | None = None
    metadata: Metadata = field(default_factory=dict)


def search(store: Store, embedder: Embedder | None, question: str, top_k: int, min_score: float = -1.0,
           where: Mapping[str, Any] | None = None, mode: str = "vector", keyword: KeywordIndex | None = None,
           fusion: Fusion = Fusion(), vector: Vectors | None = None) -> list[Hit]:
    """The top_k chunks for the question, ranked by `mode`; hits below min_score (cosine) are dropped.

    `vector` is the question's embedding when the caller already has it (the CLI computes it while the index
    opens). `embedder` may be None in keyword mode only (the model is unavailable): scores are then bm25's."""
    question = _check_question(question)
    if mode not in MODES:
        raise ConfigError(f"query mode '{mode}' is unknown; expected one of {', '.join(MODES)}")
    if fusion.method not in FUSIONS:
        raise ConfigError(f"fusion '{fusion.method}' is unknown; expected one of {', '.join(FUSIONS)}")
    if mode != "vector" and keyword is None:
        raise ConfigError(f"query mode '{mode}' needs the keyword index")
    if embedder is None and vector is None:
        if mode != "keyword":
            raise ConfigError(f"query mode '{mode}' needs the embedding model")
        return _keyword_only(store, keyword, question, top_k, where)
    if vector is None:
        assert embedder is not None  # checked above
        vector = embedder.embed_query(question)
    vector = np.asarray(vector, dtype=np.float32)
    n = fusion.candidates or max(4 * top_k, 50)
    pool: dict[str, _Candidate] = {}
    if mode in ("vector", "hybrid"):
        # Hybrid ranks many candidates; only the winners' text and metadata are read (Chroma's cost is per record).
        found = store.query(vector.tolist(), top_k if mode == "vector" else n, where, with_text=mode == "vector")
        for rank, r in enumerate(found, 1):
            pool[r.id] = _Candidate(rank, None, 0.0, r.similarity, r.document if mode == "vector" else None,
                                    r.metadata)
    if mode in ("keyword", "hybrid") and keyword is not None:
        _add_keyword_candidates(store, keyword, question, n, where, pool)
    _fill_similarities(store, vector, pool)
    return _rank(store, pool, mode, top_k, min_score, fusion)


def _keyword_only(store: Store, keyword: KeywordIndex | None, question: str, top_k: int,
                  where: Mapping[str, Any] | None) -> list[Hit]:
    """Keyword ranking without the model: the score shown is bm25's."""
    pool: dict[str, _Candidate] = {}
    if keyword is not None:
        _add_keyword_candidates(store, keyword, question, top_k, where, pool)
    for c in pool.values():
        c.similarity = c.keyword_score
    return _rank(store, pool, "keyword", top_k, -math.inf, Fusion())


def _check_question(question: str) -> str:
    question = question.strip()
    if not question:
        raise ConfigError("the query is empty: pass a question, e.g. docvec query \"how do I rotate a token?\"")
    if len(question) > MAX_QUERY_CHARS:
        raise ConfigError(f"the query is {len(question)} characters; the limit is {MAX_QUERY_CHARS}")
    return question


def _add_keyword_candidates(store: Store, keyword: KeywordIndex, question: str, n: int,
                            where: Mapping[str, Any] | None, pool: dict[str, _Candidate]) -> None:
    hits = keyword.search(question, n if not where else n * 4)
    if where and hits:
        allowed = store.filter_ids([h.id for h in hits], where)
        hits = [h for h in hits if h.id in allowed]
    for rank, h in enumerate(hits[:n], 1):
        candidate = pool.setdefault(h.id, _Candidate())
        candidate.keyword_rank, candidate.keyword_score = rank, h.score


def _fill_similarities(store: Store, vector: np.ndarray[Any, Any], pool: dict[str, _Candidate]) -> None:
    """Keyword-only candidates get their cosine similarity from their stored vector."""
    missing = [rid for rid, c in pool.items() if c.similarity is None]
    if not missing:
        return
    vectors = store.get_embeddings(missing)
    for rid in missing:
        if rid not in vectors:  # the keyword index is behind a concurrent ingest: skip the vanished chunk
            del pool[rid]
            continue
        pool[rid].similarity = float(np.dot(vector, np.asarray(vectors[rid], dtype=np.float32)))


def _rank(store: Store, pool: dict[str, _Candidate], mode: str, top_k: int, min_score: float,
          fusion: Fusion) -> list[Hit]:
    fused = _fused_scores(pool, fusion) if mode == "hybrid" else {}
    if mode == "vector":
        order = sorted(pool.items(), key=lambda kv: kv[1].vector_rank or 0)
    elif mode == "keyword":
        order = sorted(((k, c) for k, c in pool.items() if c.keyword_rank), key=lambda kv: kv[1].keyword_rank or 0)
    else:
        order = sorted(pool.items(), key=lambda kv: (-fused[kv[0]], kv[0]))
    chosen = [(rid, c) for rid, c in order if (c.similarity or 0.0) >= min_score][:top_k]
    _fill_documents(store, chosen)
    hits: list[Hit] = []
    for rid, c in chosen:
        if c.document is None:  # deleted by a concurrent ingest since it was ranked
            continue
        m = c.metadata
        hits.append(Hit(len(hits) + 1, c.similarity or 0.0, rid, str(m.get("label", "")), str(m.get("source", "")),
                        int(m.get("start_line", 0)), int(m.get("end_line", 0)), c.document, m,
                        c.vector_rank, c.keyword_rank, round(fused[rid], 6) if rid in fused else None))
    return hits


def _fill_documents(store: Store, chosen: list[tuple[str, _Candidate]]) -> None:
    """Text and metadata of the hits that will be shown, in one read."""
    missing = [rid for rid, c in chosen if c.document is None]
    docs = store.get_documents(missing) if missing else {}
    for rid, c in chosen:
        if rid in docs:
            c.document, c.metadata = docs[rid]


def _fused_scores(pool: dict[str, _Candidate], fusion: Fusion) -> dict[str, float]:
    if fusion.method == "rrf":
        return {rid: sum(w / (fusion.rrf_k + r) for w, r in ((fusion.vector_weight, c.vector_rank),
                                                             (fusion.keyword_weight, c.keyword_rank)) if r)
                for rid, c in pool.items()}
    cosine = _min_max({rid: c.similarity or 0.0 for rid, c in pool.items()})
    bm25 = _min_max({rid: c.keyword_score for rid, c in pool.items() if c.keyword_rank})
    total = (fusion.vector_weight + fusion.keyword_weight) or 1.0
    return {rid: (fusion.vector_weight * cosine[rid] + fusion.keyword_weight * bm25.get(rid, 0.0)) / total
            for rid in pool}


def _min_max(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    return {k: (v - low) / ((high - low) or 1.0) for k, v in scores.items()}


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
            number = cast(value)
        except ValueError:
            continue
        if isinstance(number, float) and not math.isfinite(number):
            return value  # 'nan', 'inf': compared as text, never as a number no value can equal
        if isinstance(number, int) and not -2**63 <= number < 2**63:
            return value  # beyond what the index stores as a number
        return number
    return value
