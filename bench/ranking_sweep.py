"""Choose hybrid mode's fusion rule by measurement: exact scores of deep candidate pools, every rule scored offline.

    python bench/ranking_sweep.py CONFIG QUERIES [--depth 200] [--k 10]

For each labelled question the vector and keyword rankings are read DEPTH deep and every candidate gets both its
exact cosine similarity and its exact bm25 score, so each rule below orders the same pool as `docvec query` would.
Metrics are computed from the chunk hits a user sees (`-k` chunks, aggregated to documents as `docvec eval` does).
Writes bench/results/ranking-sweep-<queries>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from docvec.cli import load  # noqa: E402
from docvec.settings import store_location  # noqa: E402
from docvec.embedders import make_embedder  # noqa: E402
from docvec.keyword import KeywordIndex  # noqa: E402
from docvec.store import Store  # noqa: E402
from docvec.query.evaluate import load_queries, score_query  # noqa: E402
from docvec.query.hits import Hit  # noqa: E402

Pool = list[tuple[str, float, float]]  # (id, cosine, bm25)
Rule = Callable[..., float]  # (cosine, bm25, best cosine, best bm25, cosine at rank D, bm25 at rank D) -> score


def pools(config: Path, queries_file: Path, depth: int) -> tuple[list[Pool], dict[str, dict[str, object]]]:
    settings = load(config, {})
    store = Store.open_for_reading(store_location(settings))
    embedder = make_embedder(settings.embedding)
    out: list[Pool] = []
    meta: dict[str, dict[str, object]] = {}
    with KeywordIndex.of(store, read_only=True) as keyword:
        for q in load_queries(queries_file):
            vec = np.asarray(embedder.embed_query(q.query), dtype=np.float32)
            sims = {r.id: r.similarity for r in store.query(vec.tolist(), depth, with_text=False)}
            kws = {h.id: h.score for h in keyword.search(q.query, depth)}
            kws.update(keyword.scores(q.query, [i for i in sims if i not in kws]))
            missing = [i for i in kws if i not in sims]
            for rid, v in store.get_embeddings(missing).items():
                sims[rid] = float(np.dot(vec, v))
            out.append([(rid, sims[rid], kws.get(rid, 0.0)) for rid in sims])
        ids = sorted({rid for p in out for rid, _, _ in p})
        meta = {rid: m for rid, m in store.get_metadatas(ids).items()}
    return out, meta


def rules() -> dict[str, Rule]:
    found = {"vector": lambda s, b, ts, tb, fs, fb: s, "keyword": lambda s, b, ts, tb, fs, fb: b}
    for w in (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7):
        found[f"relative w_kw={w}"] = lambda s, b, ts, tb, fs, fb, w=w: (1 - w) * max(s, 0) / ts + w * (
            b / tb if tb else 0)
        found[f"cosine+relative w_kw={w}"] = lambda s, b, ts, tb, fs, fb, w=w: (1 - w) * s + w * (b / tb if tb else 0)
        found[f"gated w_kw={w}"] = lambda s, b, ts, tb, fs, fb, w=w: max(s, 0) / ts * (
            (1 - w) + w * (b / tb if tb else 0))
        found[f"floor@D w_kw={w}"] = lambda s, b, ts, tb, fs, fb, w=w: (1 - w) * (s - fs) / ((ts - fs) or 1) + w * (
            (max(b, fb) - fb) / ((tb - fb) or 1) if tb else 0)
    return found


def pool_minmax(pool: Pool, w: float, n: int) -> list[str]:
    """The 0.1 rule: min-max normalisation within the top-n of each ranking (depends on n)."""
    vec = sorted(pool, key=lambda r: -r[1])[:n]
    kw = [r for r in sorted(pool, key=lambda r: -r[2]) if r[2] > 0][:n]
    cand = {r[0]: r for r in vec + kw}
    kw_ids = {r[0] for r in kw}

    def mm(values: dict[str, float]) -> dict[str, float]:
        lo, hi = min(values.values()), max(values.values())
        return {k: (v - lo) / ((hi - lo) or 1) for k, v in values.items()}
    cs = mm({k: r[1] for k, r in cand.items()})
    bs = mm({k: r[2] for k, r in cand.items() if k in kw_ids}) if kw_ids else {}
    return sorted(cand, key=lambda k: (-((1 - w) * cs[k] + w * bs.get(k, 0.0)), k))


def order(pool: Pool, rule: Rule, floor_depth: int) -> list[str]:
    sims = sorted((s for _, s, _ in pool), reverse=True)
    kws = sorted((b for _, _, b in pool), reverse=True)
    ts, tb = (sims[0] if sims else 1.0) or 1.0, kws[0] if kws else 0.0
    fs, fb = sims[min(floor_depth, len(sims)) - 1], kws[min(floor_depth, len(kws)) - 1]
    return [rid for _, rid in sorted((-rule(s, b, ts, tb, fs, fb), rid) for rid, s, b in pool)]


def hits(ids: list[str], meta: dict[str, dict[str, object]], k: int, per_file: int) -> list[Hit]:
    """The first k chunks, at most per_file (0: any number) from one file."""
    seen: dict[str, int] = {}
    kept = []
    for rid in ids:
        source = str(meta[rid]["source"])
        if per_file and seen.get(source, 0) >= per_file:
            continue
        seen[source] = seen.get(source, 0) + 1
        kept.append(rid)
        if len(kept) == k:
            break
    return [Hit(n, 0.0, rid, str(meta[rid].get("label", "")), str(meta[rid]["source"]), 0, 0, "", meta[rid])
            for n, rid in enumerate(kept, 1)]  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("queries", type=Path)
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--per-file", type=int, default=0)
    ns = parser.parse_args()
    labelled = load_queries(ns.queries)
    all_pools, meta = pools(ns.config, ns.queries, ns.depth)
    results = {}
    candidates: dict[str, Callable[[Pool], list[str]]] = {}
    for name, r in rules().items():
        for d in ((50, 100) if name.startswith("floor") else (50,)):
            candidates[name.replace("@D", f"@{d}")] = lambda p, r=r, d=d: order(p, r, d)
    candidates["0.1 pool min-max w_kw=0.4 (k=10)"] = lambda p: pool_minmax(p, 0.4, 50)
    for name, rank in candidates.items():
        scores = [score_query(q, hits(rank(p), meta, ns.k, ns.per_file), ns.k).metrics for q, p in zip(labelled, all_pools)]
        results[name] = {m: round(sum(s[m] for s in scores) / len(scores), 4)
                         for m in ("hit@1", f"hit@{ns.k}", "mrr@10", "ndcg@10")}
    out = HERE / "results" / f"ranking-sweep-{ns.queries.stem}-per-file-{ns.per_file}.json"
    out.write_text(json.dumps(results, indent=1))
    for name, r in sorted(results.items(), key=lambda kv: -kv[1]["ndcg@10"]):
        print(f"{name:36s} " + "  ".join(f"{m} {v:.4f}" for m, v in r.items()))


if __name__ == "__main__":
    main()
