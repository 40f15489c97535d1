"""Deleting a backup collection from a local index: record by record, then `delete_collection` (docvec before
session 24, what it still does on a server), against `delete_collection` and a sweep of what it leaves (local now).

    python bench/prune_bench.py --sizes 100000,200000,400000 [--pages 1000] [--work /tmp/docvec-prune]

Per size, in a fresh index: a live collection of 10,000 records and a backup of `size` records, both with
docvec's metadata keys (15, two of them lists) and a ~300-character text, random 384-d vectors. Each way runs in
its own index (built alike) and its own process, one after another. Results: bench/results/prune.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "prune.json"
LIVE = 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--pages", type=int, default=1000, help="records a call, record by record")
    parser.add_argument("--ways", default="whole,pages")
    parser.add_argument("--work", type=Path, default=Path("/tmp/docvec-prune"))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        return print(json.dumps(_child(Path(ns.child[0]), int(ns.child[1]), ns.child[2], int(ns.child[3]))))
    out: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for size in (int(s) for s in ns.sizes.split(",")):
        for way in ns.ways.split(","):
            index = ns.work / f"{way}-{size}"
            shutil.rmtree(index, ignore_errors=True)
            try:
                done = subprocess.run([sys.executable, __file__, "--child", str(index), str(size), way,
                                       str(ns.pages)], capture_output=True, text=True, check=True)
            finally:
                shutil.rmtree(index, ignore_errors=True)
            figures = json.loads(done.stdout.splitlines()[-1])
            out.setdefault(str(size), {})[way] = figures
            print(size, way, figures, flush=True)
            RESULTS.write_text(json.dumps(out, indent=1) + "\n")


def _child(index: Path, size: int, way: str, pages: int) -> dict[str, Any]:
    import chromadb
    import numpy as np

    from docvec.residue import find, sweep
    from docvec.store import WRITE_BATCH  # Chroma's largest add, as docvec writes

    client = chromadb.PersistentClient(str(index))
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for name, count in (("live", LIVE), ("backup", size)):
        col = client.create_collection(name, embedding_function=None)
        for begin in range(0, count, WRITE_BATCH):
            span = range(begin, min(count, begin + WRITE_BATCH))
            col.add(ids=[f"{name}-{i}" for i in span], embeddings=rng.normal(size=(len(span), 384)).astype(np.float32),
                    documents=[f"Paragraph {i} of the docs. " * 12 for i in span], metadatas=[_meta(i) for i in span])
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    calls = 0
    if way == "pages":
        col = client.get_collection("backup")
        while ids := col.get(include=[], limit=pages)["ids"]:
            col.delete(ids=ids)
            calls += 1
    client.delete_collection("backup")
    deleted = time.perf_counter() - t0
    t0 = time.perf_counter()
    swept = sweep(index, always=True)
    sweep_s = time.perf_counter() - t0
    return {"build_s": round(built, 1), "delete_s": round(deleted, 1), "delete_calls": calls,
            "sweep_s": round(sweep_s, 1), "total_s": round(deleted + sweep_s, 1), "swept": swept,
            "left": find(index), "pages": pages if way == "pages" else None}


def _meta(i: int) -> dict[str, Any]:
    """docvec's keys for a chunk (values alike in shape)."""
    return {"source": f"guide/page{i // 8}.md", "label": f"Page {i // 8} > Part {i % 8}", "trail": f"Part {i % 8}",
            "title": f"Page {i // 8}", "start_line": i % 97, "end_line": i % 97 + 9, "start_char": i % 997,
            "end_char": i % 997 + 300, "chunk_index": i % 8, "chunks_in_file": 8, "tokens": 80,
            "hash": f"{i:040x}", "file_hash": f"{i // 8:040x}", "fp": "a1b2c3d4e5f6", "dirs": ["guide"],
            "fm.tags": ["ops", f"t{i % 5}"]}


if __name__ == "__main__":
    main()
