"""Reindex after a chunking change with the same model: what is embedded again, and how long it takes.

    python bench/reindex_bench.py ../shared/corpora/fastapi-docs-en

Full ingest of a copy of the corpus with the built-in model, then three reindexes, each beside the live index:
a new chunker version that cuts the same texts (what a docvec upgrade that changes the chunker asks for),
min_tokens 48 → 32 (a few small chunks merge differently), and max_tokens 256 → 128 (every long chunk changes).
Texts the live index already embedded are copied from it. Writes bench/results/reindex-<corpus>.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docvec.fingerprint  # noqa: E402
from docvec.chunker import ChunkParams  # noqa: E402
from docvec.config import EmbeddingSettings  # noqa: E402
from docvec.embedders import make_embedder  # noqa: E402
from docvec.fingerprint import Fingerprint  # noqa: E402
from docvec.store import StoreLocation  # noqa: E402
from docvec.ingest.pipeline import ingest, open_for_writing  # noqa: E402
from docvec.ingest.reindex import reindex  # noqa: E402
from docvec.ingest.scan import ScanOptions  # noqa: E402


def _run(name: str, action: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    report = action()
    seconds = time.perf_counter() - t0
    ing = getattr(report, "ingest", None) or report
    row = {"step": name, "seconds": round(seconds, 1), "chunks": ing.chunks_total,
           "embedded": ing.chunks_embedded, "copied_or_reused": ing.chunks_reused}
    print(json.dumps(row), flush=True)
    return row


def main(corpus: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="docvec-bench-"))
    docs = work / "docs"
    shutil.copytree(corpus, docs)
    params = ChunkParams()
    embedder = make_embedder(EmbeddingSettings())
    embedder.embed_documents(["warm up"])  # model load is not reindex work
    location = StoreLocation(work / "index", "bench")
    options = ScanOptions(docs)
    store = open_for_writing(location, Fingerprint.build(embedder.info, params))
    rows = [_run("full ingest", lambda: ingest(store, embedder, options, params))]
    version = docvec.fingerprint.CHUNKER_VERSION
    docvec.fingerprint.CHUNKER_VERSION = version + "-bench"  # Fingerprint.build reads it from this module
    rows.append(_run("new chunker version", lambda: reindex(location, embedder, options, params)))
    smaller_min = replace(params, min_tokens=32)
    rows.append(_run("min_tokens 48 -> 32", lambda: reindex(location, embedder, options, smaller_min)))
    smaller = replace(smaller_min, max_tokens=128)
    rows.append(_run("max_tokens 256 -> 128", lambda: reindex(location, embedder, options, smaller)))
    out = Path(__file__).parent / "results" / f"reindex-{corpus.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    shutil.rmtree(work)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
