"""Sweep hybrid fusion settings on SciFact from cached rankings (run bench/scifact_eval.py first).

    python bench/fusion_sweep.py [../shared/eval/scifact]

Each query's vector and keyword chunk rankings are computed once; every fusion setting is then scored offline
with the same document-level metrics as `docvec eval`. Writes bench/results/fusion-sweep.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from docvec.keyword import KeywordIndex, keyword_path  # noqa: E402
from docvec.store import Store, StoreLocation  # noqa: E402
from docvec.config import EmbeddingSettings  # noqa: E402
from docvec.embedders import make_embedder  # noqa: E402
from query.evaluate import load_queries, score_query  # noqa: E402
from query.search import Fusion, Hit, search  # noqa: E402

DEPTH = 300


def main(data: Path) -> None:
    location = StoreLocation(HERE / "results" / "scifact-index", "scifact")
    store = Store.open(location)
    embedder = make_embedder(EmbeddingSettings())
    keyword = KeywordIndex(keyword_path(location, store.name))
    queries = load_queries(data / "queries.jsonl")
    pools = []
    for q in queries:  # one candidate pool per query: both rankings, as deep as hybrid mode takes them
        hits = search(store, embedder, q.query, DEPTH, -1.0, None, "hybrid", keyword,
                      Fusion(candidates=4 * DEPTH))
        pools.append(hits)
    results = []
    for rrf_k in (1, 5, 10, 20, 30, 60, 100):
        for kw in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
            scores = [score_query(q, _fuse(p, rrf_k, 1.0, kw), 10).metrics for q, p in zip(queries, pools)]
            ndcg = sum(s["ndcg@10"] for s in scores) / len(scores)
            recall = sum(s["recall@100"] for s in scores) / len(scores)
            results.append({"rrf_k": rrf_k, "keyword_weight": kw, "ndcg@10": round(ndcg, 4),
                            "recall@100": round(recall, 4)})
    results.sort(key=lambda r: -r["ndcg@10"])
    (HERE / "results" / "fusion-sweep.json").write_text(json.dumps(results, indent=1))
    for r in results[:10]:
        print(r)


def _fuse(pool: list[Hit], rrf_k: int, vw: float, kw: float) -> list[Hit]:
    def fused(h: Hit) -> float:
        return (vw / (rrf_k + h.vector_rank) if h.vector_rank else 0.0) + (
            kw / (rrf_k + h.keyword_rank) if h.keyword_rank else 0.0)
    return sorted(pool, key=lambda h: -fused(h))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared" / "eval" / "scifact")
