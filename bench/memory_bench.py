"""Peak memory of a full ingest at 10k and 100k chunks, and of a no-op re-ingest: it must not grow with the corpus.

    python bench/memory_bench.py [--sizes 10000,100000] [--repo PATH] [--label NAME]

Corpora: SciFact itself (~10k chunks) and ten copies of it (~100k chunks, the folder bench/serve_bench.py builds).
Each ingest runs in a fresh process through docvec's own pipeline (`docvec.ingest.pipeline.ingest`); the built-in model is
loaded for token counting, as in a real run, but vectors come from a hash of the text, so the figure is the
pipeline's memory and a 100k run takes minutes, not hours. Peak RSS is the child's ru_maxrss (os.wait4).
`--repo` measures another checkout's code (e.g. a worktree of an older commit) with this same script.
Writes bench/results/memory.json under --label (default: the repo's commit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CORPORA = {10_000: HERE.parents[1] / "shared" / "eval" / "scifact" / "docs", 100_000: RESULTS / "serve-100000" / "docs"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    parser.add_argument("--label", default="")
    parser.add_argument("--child", nargs=2, metavar=("DOCS", "INDEX"), help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        return _child(ns.repo, Path(ns.child[0]), Path(ns.child[1]))
    label = ns.label or subprocess.run(["git", "-C", str(ns.repo), "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True, check=True).stdout.strip()
    target = RESULTS / "memory.json"
    out: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    for size in (int(s) for s in ns.sizes.split(",")):
        if not CORPORA[size].exists():
            raise SystemExit(f"{CORPORA[size]} is missing: run bench/serve_bench.py (it builds the 100k corpus)")
        with tempfile.TemporaryDirectory(prefix="docvec-memory-") as tmp:
            full = _measure(ns.repo, CORPORA[size], Path(tmp) / "index")
            noop = _measure(ns.repo, CORPORA[size], Path(tmp) / "index")
        out.setdefault(label, {})[str(size)] = {"full_ingest": full, "noop_reingest": noop}
        print(label, size, json.dumps(out[label][str(size)]), flush=True)
        target.write_text(json.dumps(out, indent=1))


def _measure(repo: Path, docs: Path, index: Path) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--repo", str(repo), "--child", str(docs), str(index)],
                            stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    assert proc.stdout is not None
    report = json.loads(proc.stdout.read())
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("the ingest failed")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(time.perf_counter() - start, 1),
            "chunks_total": report["chunks_total"], "chunks_written": report["chunks_written"]}


def _child(repo: Path, docs: Path, index: Path) -> None:
    sys.path.insert(0, str(repo.resolve()))
    import numpy as np

    from docvec.chunker import ChunkParams
    from docvec.embedders.builtin import BuiltinEmbedder
    from docvec.fingerprint import Fingerprint
    from docvec.store import StoreLocation
    from docvec.ingest.pipeline import ingest, open_for_writing
    from docvec.ingest.scan import ScanOptions

    class HashEmbedder:
        """The built-in model's tokenizer and identity; a text's vector is drawn from a hash of it."""

        def __init__(self) -> None:
            self._real = BuiltinEmbedder()
            self.info = self._real.info

        def count_tokens(self, texts: Sequence[str]) -> list[int]:
            return self._real.count_tokens(texts)

        def embed_documents(self, texts: Sequence[str]) -> Any:
            rows = [np.random.default_rng(int(hashlib.md5(t.encode()).hexdigest()[:8], 16)).normal(size=384)
                    for t in texts]
            return np.asarray([r / np.linalg.norm(r) for r in rows], dtype=np.float32)

        def embed_query(self, text: str) -> Any:
            return self._real.embed_query(text)

    embedder = HashEmbedder()
    store = open_for_writing(StoreLocation(index, "docvec"), Fingerprint.build(embedder.info, ChunkParams()))
    report = ingest(store, embedder, ScanOptions(docs), ChunkParams())  # type: ignore[arg-type]
    print(json.dumps({"chunks_total": report.chunks_total, "chunks_written": report.chunks_written}))


if __name__ == "__main__":
    main()
