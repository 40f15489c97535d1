"""Where a warm search's time goes: `python bench/search_breakdown.py CONFIG [--mode hybrid] [--questions 100]`.

Opens the index in-process (docvec.open), answers 5 questions to warm it, then times each of the next SciFact
questions whole and by part: the question's embedding, Chroma's vector query, Chroma's reads by id (texts,
vectors, metadata), the keyword index's search and score look-ups, and the rest (docvec's own ranking, answer
lines). Prints p50/p95 of each part and how many calls of each a question made (deeper reads show as more calls).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
QUESTIONS = REPO.parent / "shared" / "eval" / "scifact" / "queries.jsonl"

PARTS = {  # part -> (module, class, methods)
    "embed question": ("docvec.embedders.builtin", "BuiltinEmbedder", ("embed_query",)),
    "chroma vector query": ("docvec.store", "Store", ("query",)),
    "chroma reads by id": ("docvec.store", "Store", ("get_documents", "get_texts", "get_embeddings", "get_metadatas",
                                                     "filter_ids")),
    "keyword index": ("docvec.keyword", "KeywordIndex", ("search", "scores")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--mode", default="hybrid", choices=("vector", "keyword", "hybrid"))
    parser.add_argument("--questions", type=int, default=100)
    ns = parser.parse_args()
    import docvec
    from serve_bench import _pct

    questions = [json.loads(line)["query"] for line in QUESTIONS.read_text().splitlines()]
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for part, (module, cls, methods) in PARTS.items():
        owner = getattr(__import__(module, fromlist=[cls]), cls)
        for name in (m for m in methods if hasattr(owner, m)):  # (an older commit may lack one: A/B runs)
            setattr(owner, name, _timed(getattr(owner, name), part, spent, calls))
    index = docvec.open(str(ns.config))
    for q in questions[:5]:
        index.search(q, k=10, mode=ns.mode)
    rows: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(list)
    for q in questions[5:5 + ns.questions]:
        spent.clear()
        calls.clear()
        t0 = time.perf_counter()
        index.search(q, k=10, mode=ns.mode)
        total = time.perf_counter() - t0
        rows["whole search"].append(total)
        for part in PARTS:
            rows[part].append(spent[part])
            counts[part].append(calls[part])
        rows["the rest (docvec's ranking, answer lines)"].append(total - sum(spent.values()))
    print(f"{ns.mode}, {ns.questions} questions, {ns.config}")
    print("| part | p50 ms | p95 ms | mean ms | calls per question (mean / max) |")
    print("|---|---|---|---|---|")
    for part, values in rows.items():
        c = counts.get(part)
        per = f"{sum(c) / len(c):.1f} / {max(c)}" if c else "–"
        pct = _pct(values)  # the serve bench's percentiles, so the two tables compare
        print(f"| {part} | {pct['p50_ms']} | {pct['p95_ms']} | {1000 * sum(values) / len(values):.1f} | {per} |")


_INSIDE: set[str] = set()  # parts being timed: a timed method calling another of its part counts once


def _timed(fn: Callable[..., Any], part: str, spent: dict[str, float], calls: dict[str, int]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if part in _INSIDE:
            return fn(*args, **kwargs)
        _INSIDE.add(part)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _INSIDE.discard(part)
            spent[part] += time.perf_counter() - t0
            calls[part] += 1
    return wrapper


if __name__ == "__main__":
    main()
