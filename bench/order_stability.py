"""Does asking for more hits reorder the first ones? Order stability over -k on SciFact, and how much HNSW misses.

    python bench/order_stability.py      # after bench/scifact_eval.py has built bench/results/scifact-index

For each of the 300 SciFact questions and each mode, searches with -k 1, 5, 10, 20, 100 and 400 (the default
store.hnsw_ef_search) and counts the questions where a shorter list is not the start of the -k 400 list. Also
measures the vector index's beam against brute force (how many of the exact 400 nearest chunks one 400-deep read
misses) and how many hybrid top 10s hold a chunk the beam missed (`similarity_counted`).
Writes bench/results/order-stability.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from docvec.cli import load  # noqa: E402
from docvec.embedders import make_embedder  # noqa: E402
from docvec.keyword import KeywordIndex  # noqa: E402
from docvec.settings import store_location  # noqa: E402
from docvec.store import Store  # noqa: E402
from docvec.query.search import search  # noqa: E402

KS = (1, 5, 10, 20, 100, 400)


def all_vectors(store: Store) -> tuple[list[str], np.ndarray]:
    ids = [rid for rid, _ in store.iter_metadata()]
    vectors = store.get_embeddings(ids)
    return ids, np.stack([vectors[i] for i in ids])


def main() -> None:
    settings = load(HERE / "results" / "scifact.yaml", {})
    store = Store.open_for_reading(store_location(settings))
    embedder = make_embedder(settings.embedding)
    data = HERE.parent.parent / "shared" / "eval" / "scifact" / "queries.jsonl"
    questions = [json.loads(line)["query"] for line in data.read_text().splitlines() if line]
    vectors = [embedder.embed_query(q) for q in questions]
    ids, matrix = all_vectors(store)
    beam = store.beam()
    changed = {"vector": 0, "hybrid": 0}
    missed_in_beam = counted_top10 = 0
    t0 = time.perf_counter()
    with KeywordIndex.of(store, read_only=True) as keyword:
        for question, vector in zip(questions, vectors):
            exact = {ids[i] for i in np.argsort(-(matrix @ vector))[:beam]}
            missed_in_beam += len(exact - {r.id for r in store.query(vector.tolist(), beam, with_text=False)})
            for mode in changed:
                lists = [search(store, None, question, k, mode=mode, keyword=keyword, vector=vector) for k in KS]
                longest = [h.id for h in lists[-1]]
                changed[mode] += any([h.id for h in hits] != longest[:len(hits)] for hits in lists)
                if mode == "hybrid":
                    counted_top10 += any(h.counted_similarity is not None for h in lists[2])
    out = {"chunks": len(ids), "questions": len(questions), "ks": list(KS), "hnsw_ef_search": beam,
           "questions whose shorter lists are not the start of the longest": changed,
           f"exact {beam} nearest missed by one {beam}-deep read (mean)": round(missed_in_beam / len(questions), 2),
           "hybrid top 10s holding a chunk the beam missed": counted_top10,
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))
    (HERE / "results" / "order-stability.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
