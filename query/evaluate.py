"""Labelled queries -> retrieval metrics (hit@1, hit@k, recall@k, MRR@10, nDCG@10; recall@100 when deep).

By default the hits scored are exactly what `docvec query -k K` prints; `deep` ranks DEPTH documents instead (the
figure published IR results, BEIR's among them, report). Chunk hits are aggregated to documents (a document ranks
where its best chunk ranks). A relevant item names a document by source path, or by file name with or
without `.md` (BEIR ids); it may also name a heading, and then only chunks under that heading count.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import yaml

from docvec.config import load_yaml
from docvec.errors import ConfigError
from docvec.query.hits import Hit

DEPTH = 100  # documents ranked per query when deep: recall@100 needs them


@dataclass(frozen=True)
class Relevant:
    """A relevant document, optionally narrowed to a heading."""

    doc: str
    heading: str | None = None

    def matches(self, hit: Hit) -> bool:
        source = PurePosixPath(hit.source)
        names = {hit.source, str(source.with_suffix("")), source.stem, source.name}
        if self.doc not in names:
            return False
        return self.heading is None or self.heading in str(hit.metadata.get("trail", "")).split(" > ")


@dataclass(frozen=True)
class LabelledQuery:
    """A question and what should answer it; `within` makes it a pass/fail expectation."""

    id: str
    query: str
    relevant: tuple[Relevant, ...]
    within: int | None = None


@dataclass(frozen=True)
class QueryScore:
    """One query's metrics and the ranks (1-based, document level) of its relevant items."""

    id: str
    query: str
    ranks: tuple[int | None, ...]
    metrics: dict[str, float]
    top: tuple[str, ...]
    passed: bool | None = None


@dataclass
class EvalReport:
    """Mean metrics over all queries, and each query's own."""

    name: str
    k: int
    means: dict[str, float] = field(default_factory=dict)
    queries: list[QueryScore] = field(default_factory=list)

    @property
    def failures(self) -> list[QueryScore]:
        return [q for q in self.queries if q.passed is False]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "queries": len(self.queries), "means": self.means,
                "failures": [q.id for q in self.failures],
                "per_query": [{"id": q.id, "query": q.query, "ranks": list(q.ranks), "passed": q.passed,
                               **q.metrics, "top": list(q.top)} for q in self.queries]}


def load_queries(path: Path) -> list[LabelledQuery]:
    """JSONL {"id", "query", "relevant": [...]} or YAML [{query, expect, within}] expectations."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read queries file {path}: {exc.strerror}") from exc
    queries = _from_yaml(path, text) if path.suffix in (".yaml", ".yml") else _from_jsonl(path, text)
    if not queries:  # an empty file would pass any CI gate
        raise ConfigError(f"{path} holds no queries: add at least one (JSONL {{\"id\", \"query\", \"relevant\"}} "
                          f"lines, or a YAML list of {{query, expect, within}})")
    return queries


def _from_jsonl(path: Path, text: str) -> list[LabelledQuery]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row["query"], str) or not row["query"].strip():
                raise ValueError(f"'query' must be a question, got {row['query']!r}")
            out.append(LabelledQuery(str(row.get("id", n)), str(row["query"]), _relevant(row["relevant"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} line {n}: expected {{\"id\", \"query\", \"relevant\": [...]}} ({exc})") from exc
    return out


def _from_yaml(path: Path, text: str) -> list[LabelledQuery]:
    try:
        rows = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: malformed YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise ConfigError(f"{path}: expected a list of {{query, expect, within}} items")
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "query" not in row or "expect" not in row:
            raise ConfigError(f"{path} item {n}: expected keys 'query' and 'expect' (and optionally 'within')")
        within = row.get("within", 1)
        if not isinstance(within, int) or within < 1:
            raise ConfigError(f"{path} item {n}: 'within' must be a rank of 1 or more, got {within!r}")
        unknown = sorted(set(row) - {"id", "query", "expect", "within"})
        if unknown:
            raise ConfigError(f"{path} item {n}: unknown key '{unknown[0]}' — expected query, expect, within, id")
        if not isinstance(row["query"], (str, int, float)) or not str(row["query"]).strip():
            raise ConfigError(f"{path} item {n}: 'query' must be a question, got {row['query']!r}")
        expect = row["expect"] if isinstance(row["expect"], list) else [row["expect"]]
        try:
            out.append(LabelledQuery(str(row.get("id", n)), str(row["query"]), _relevant(expect), within))
        except ValueError as exc:
            raise ConfigError(f"{path} item {n}: {exc}") from exc
    return out


def _relevant(items: list[Any]) -> tuple[Relevant, ...]:
    """Relevant items: a document path (or name), or {doc, heading}; raises ValueError naming what is wrong."""
    out = []
    for item in items:
        if isinstance(item, dict):
            if "doc" not in item or set(item) - {"doc", "heading"}:
                raise ValueError(f"a relevant item must be a path or {{doc: PATH, heading: TEXT}}, got {item!r}")
            out.append(Relevant(str(item["doc"]), str(item["heading"]) if item.get("heading") else None))
        elif isinstance(item, (str, int)) and str(item).strip():
            out.append(Relevant(str(item)))
        else:
            raise ValueError(f"a relevant item must be a path or {{doc: PATH, heading: TEXT}}, got {item!r}")
    if not out:
        raise ValueError("no relevant items")
    return tuple(out)


def evaluate(name: str, queries: list[LabelledQuery], retrieve: Callable[[str], list[Hit]], k: int = 10,
             on_progress: Callable[[int, int], None] | None = None, deep: bool = False) -> EvalReport:
    """Score every query; `retrieve` returns chunk hits, best first (deep: enough for DEPTH documents)."""
    report = EvalReport(name, k)
    for n, q in enumerate(queries, 1):
        report.queries.append(score_query(q, retrieve(q.query), k, deep))
        if on_progress:
            on_progress(n, len(queries))
    keys = report.queries[0].metrics.keys() if report.queries else []
    report.means = {m: round(sum(q.metrics[m] for q in report.queries) / len(report.queries), 4) for m in keys}
    return report


def score_query(q: LabelledQuery, hits: list[Hit], k: int, deep: bool = False) -> QueryScore:
    """Metrics of one query from its chunk hits."""
    docs: list[str] = []
    doc_rank: dict[str, int] = {}
    for hit in hits:
        if hit.source not in doc_rank:
            docs.append(hit.source)
            doc_rank[hit.source] = len(docs)
    ranks = tuple(next((doc_rank[h.source] for h in hits if r.matches(h)), None) for r in q.relevant)
    found = sorted(r for r in ranks if r is not None)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(ranks), 10)))
    metrics = {
        "hit@1": float(bool(found) and found[0] == 1),
        f"hit@{k}": float(bool(found) and found[0] <= k),
        f"recall@{k}": sum(1 for r in found if r <= k) / len(ranks),
        "mrr@10": 1 / found[0] if found and found[0] <= 10 else 0.0,
        "ndcg@10": sum(1 / math.log2(r + 1) for r in found if r <= 10) / ideal,
    }
    if deep:
        metrics["recall@100"] = sum(1 for r in found if r <= 100) / len(ranks)
    passed = None if q.within is None else bool(found) and found[0] <= q.within
    return QueryScore(q.id, q.query, ranks, metrics, tuple(docs[:10]), passed)
