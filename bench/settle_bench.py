"""What exactness costs: keyword settling, the residue sweep and the clean-build verify, on SciFact (~10k chunks).

    python bench/settle_bench.py [--scifact ../shared/eval/scifact] [--edits 5]

The model is not what is measured: vectors come from the tests' bag-of-words embedder (tokens are counted with
the real tokenizer, so chunks are the real ones). For a first build, then `--edits` syncs that each change one
file, then one sync that changes 1 % of the files: seconds of the whole sync, of keyword settling (rewriting the
tantivy segments that hold deleted rows, so bm25 counts none) and rows it rewrote, of the residue sweep, and of
`verify`. Writes bench/results/settle.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docvec.keyword import KeywordIndex  # noqa: E402
from docvec.store import Store, StoreLocation  # noqa: E402
from docvec.ingest.scan import ScanOptions  # noqa: E402
from docvec.ingest.sync import sync_index  # noqa: E402
from docvec.ingest.verify import verify  # noqa: E402
from tests.conftest import RecordingEmbedder  # noqa: E402
from tests.convergence import ALL, PARAMS  # noqa: E402

TIMES: dict[str, float] = {}
ROWS: dict[str, int] = {}


def timed(cls: Any, name: str) -> None:
    """Add the seconds (and rows returned) of every call of cls.name to TIMES[name] (ROWS[name])."""
    original: Callable[..., Any] = getattr(cls, name)

    def wrapper(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = original(*a, **kw)
        TIMES[name] = TIMES.get(name, 0.0) + time.perf_counter() - t0
        if isinstance(out, int):
            ROWS[name] = ROWS.get(name, 0) + out
        elif isinstance(out, dict):
            ROWS[name] = ROWS.get(name, 0) + sum(out.values())
        return out
    setattr(cls, name, wrapper)


def sync(location: StoreLocation, docs: Path, embedder: RecordingEmbedder, what: str) -> dict[str, Any]:
    TIMES.clear()
    ROWS.clear()
    t0 = time.perf_counter()
    report = sync_index(location, embedder, ScanOptions(docs), PARAMS[0], ALL)
    row = {"run": what, "seconds": round(time.perf_counter() - t0, 3), "chunks": report.chunks_total,
           "files_changed": len(report.files_changed), "chunks_written": report.chunks_written,
           "settle_seconds": round(TIMES.get("settle", 0.0), 3), "settle_rows": ROWS.get("settle", 0),
           "sweep_seconds": round(TIMES.get("sweep_residue", 0.0), 4)}
    store = Store.open(location)
    with KeywordIndex.of(store, read_only=True) as index:
        row["keyword_deleted_rows"] = index.deleted_rows()
        row["keyword_segments"] = len(index._segments())
        row["keyword_bytes"] = sum(p.stat().st_size for p in index.path.iterdir() if p.is_file())
    print(json.dumps(row), flush=True)
    return row


def edit(path: Path, n: int) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text.rstrip("\n") + f"\n\nEdited ({n}): a sentence added to this abstract.\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, default=REPO.parent / "shared" / "eval" / "scifact")
    parser.add_argument("--edits", type=int, default=5)
    args = parser.parse_args()
    timed(KeywordIndex, "settle")
    timed(Store, "sweep_residue")
    work = Path(tempfile.mkdtemp(prefix="docvec-settle-"))
    docs = work / "docs"
    shutil.copytree(args.scifact / "docs", docs)
    files = sorted(docs.glob("*.md"))
    location = StoreLocation(work / "index", "docvec")
    embedder = RecordingEmbedder()
    rows = [sync(location, docs, embedder, "first build")]
    for n in range(args.edits):
        edit(files[(n * 997) % len(files)], n)
        rows.append(sync(location, docs, embedder, "1 file edited"))
    for path in files[::100]:
        edit(path, 99)
    rows.append(sync(location, docs, embedder, "1 % of files edited"))
    rows.append(sync(location, docs, embedder, "no-op"))
    store = Store.open(location)
    t0 = time.perf_counter()
    found = verify(store, embedder.count_tokens, store.fingerprint(), ScanOptions(docs), ALL)
    rows.append({"run": "verify", "seconds": round(time.perf_counter() - t0, 3), "problems": found.problems,
                 "chunks": found.chunks_checked})
    print(json.dumps(rows[-1]), flush=True)
    out = REPO / "bench" / "results" / "settle.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
