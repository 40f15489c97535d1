"""Retrieval quality on BEIR SciFact (test split, 300 queries): nDCG@10 and recall@100 per mode.

    python bench/scifact_eval.py [../shared/eval/scifact] [--index DIR]

Ingests the 5,183 abstracts with the built-in model (once; the index is kept in bench/results/scifact-index and
re-used, re-running is a no-op sync), then runs `docvec eval` for vector, keyword and hybrid and writes
bench/results/scifact.json: once as `docvec query -k 10` returns hits (the default of `docvec eval`), once
--deep (100 documents per query, recall@100). Published reference figures are in the data set's SOURCE.txt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(data: Path, index: Path) -> None:
    config = HERE / "results" / "scifact.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(f"docs:\n  path: {data.resolve() / 'docs'}\nstore:\n  path: {index.resolve()}\n"
                      "  collection: scifact\n")
    t0 = time.perf_counter()
    ingest = _docvec(["ingest", "--json", "-q"], config)
    ingest_s = time.perf_counter() - t0
    modes = ["--mode", "vector", "--mode", "keyword", "--mode", "hybrid"]
    rrf = config.with_name("scifact-rrf.yaml")
    rrf.write_text(config.read_text() + "query:\n  fusion: rrf\n  vector_weight: 1.0\n  keyword_weight: 1.0\n")
    result: dict[str, object] = {"ingest": json.loads(ingest), "ingest_s": round(ingest_s, 1)}
    for name, extra in (("as `docvec query -k 10` returns it", []), ("deep (100 documents)", ["--deep"])):
        out = _docvec(["eval", str(data / "queries.jsonl"), *modes, "--json", *extra], config)
        out += _docvec(["eval", str(data / "queries.jsonl"), "--mode", "hybrid", "--json", *extra], rrf).replace(
            '"name": "hybrid"', '"name": "hybrid (rrf)"')
        reports = [json.loads(line) for line in out.splitlines()]
        result[name] = {r["name"]: {k: v for k, v in r["means"].items()} for r in reports}
    (HERE / "results" / "scifact.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "ingest"}, indent=2))


def _docvec(args: list[str], config: Path) -> str:
    cmd = [sys.executable, "-m", "docvec.cli", args[0], "--config", str(config), *args[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=HERE.parent.parent / "shared" / "eval" / "scifact")
    parser.add_argument("--index", type=Path, default=HERE / "results" / "scifact-index")
    ns = parser.parse_args()
    main(ns.data, ns.index)
