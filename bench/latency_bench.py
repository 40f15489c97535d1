"""Re-measure cold and warm query latency on indexes kept by `scale_bench.py --keep` (no re-ingest).

    python bench/latency_bench.py /tmp/docvec-scale-10000-XXXX [/tmp/docvec-scale-100000-YYYY ...]

Writes bench/results/latency.json: per index, cold `docvec query` p50/p95 (vector, hybrid) and warm p50/p95.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_bench import RESULTS, _cold, _warm  # noqa: E402

from docvec.keyword import KeywordIndex  # noqa: E402
from docvec.store import Store, StoreLocation  # noqa: E402


def main(kept: list[Path]) -> None:
    scifact = Path(__file__).resolve().parents[2] / "shared" / "eval" / "scifact" / "queries.jsonl"
    questions = [json.loads(line)["query"] for line in scifact.read_text().splitlines()]
    out = {}
    for work in kept:
        location = StoreLocation(work / "index", "docvec")
        store = Store.open(location)
        with KeywordIndex.of(store) as keyword:
            keyword.optimize()  # what a sync of this size does now
        cfg = work / "config.yaml"
        out[str(store.count())] = {"cold_vector": _cold(cfg, questions[:15], "vector"),
                                   "cold_hybrid": _cold(cfg, questions[:15], "hybrid"),
                                   "warm": _warm(location, questions[:100])}
        print(json.dumps(out, indent=2), flush=True)
    (RESULTS / "latency.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
