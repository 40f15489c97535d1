"""Ingest benchmark: full ingest, embedder-alone time, no-op re-ingest, one-section edit.

    python bench/ingest_bench.py ../shared/corpora/fastapi-docs-en

Reports chunks, chunks/s, the ratio of total ingest time to the embedder alone on the same texts (goal <= 1.10),
peak memory, the no-op re-ingest time as a share of the full ingest (goal <= 2 %) and what a one-section edit
embeds. Writes bench/results/ingest-<corpus>.json.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docvec.chunker import ChunkParams, chunk_markdown  # noqa: E402
from docvec.config import EmbeddingSettings  # noqa: E402
from docvec.embedders import make_embedder  # noqa: E402
from docvec.fingerprint import Fingerprint  # noqa: E402
from docvec.store import StoreLocation  # noqa: E402
from docvec.ingest.pipeline import EMBED_SLICE, ingest, open_for_writing  # noqa: E402
from docvec.ingest.scan import ScanOptions, read_markdown, scan  # noqa: E402


def main(corpus: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="docvec-bench-"))
    docs = work / "docs"
    shutil.copytree(corpus, docs)
    params = ChunkParams()
    embedder = make_embedder(EmbeddingSettings())
    embedder.embed_documents(["warm up"])  # model load is not ingest work
    location = StoreLocation(work / "index", "bench")
    options = ScanOptions(docs)

    t0 = time.perf_counter()
    store = open_for_writing(location, Fingerprint.build(embedder.info, params))
    full = ingest(store, embedder, options, params)
    full_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    texts = _chunk_texts(docs, embedder, params)
    t0 = time.perf_counter()
    for begin in range(0, len(texts), EMBED_SLICE):
        embedder.embed_documents(texts[begin:begin + EMBED_SLICE])
    embed_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    noop = ingest(store, embedder, options, params)
    noop_s = time.perf_counter() - t0

    edited = _edit_one_section(docs)
    edit = ingest(store, embedder, options, params)
    result = {
        "corpus": corpus.name, "files": full.files_seen, "chunks": full.chunks_total,
        "chunks_embedded": full.chunks_embedded, "full_ingest_s": round(full_s, 2),
        "chunks_per_s": round(full.chunks_embedded / full_s, 2), "embedder_alone_s": round(embed_s, 2),
        "ratio_total_to_embedder": round(full_s / embed_s, 3), "peak_rss_mb": round(peak_mb, 1),
        "noop_s": round(noop_s, 3), "noop_share": round(noop_s / full_s, 4), "noop_embedded": noop.chunks_embedded,
        "edit_file": edited, "edit_embedded": edit.chunks_embedded, "edit_kept": edit.chunks_kept,
        "edit_deleted": edit.chunks_deleted,
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"ingest-{corpus.name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(work)


def _chunk_texts(docs: Path, embedder: object, params: ChunkParams) -> list[str]:
    """The distinct texts a full ingest embeds, sorted by length as the pipeline sorts them."""
    texts: set[str] = set()
    for f in scan(ScanOptions(docs))[0]:
        text, _ = read_markdown(f.path)
        texts.update(c.embed_text for c in chunk_markdown(text, embedder.count_tokens, params).chunks)  # type: ignore[attr-defined]
    return sorted(texts, key=len)


def _edit_one_section(docs: Path) -> str:
    """Append a sentence to the first paragraph under the first '## ' heading of the largest file."""
    target = max(docs.rglob("*.md"), key=lambda p: p.stat().st_size)
    lines = target.read_text(encoding="utf-8").split("\n")
    heading = next(i for i, line in enumerate(lines) if line.startswith("## "))
    para = next(i for i in range(heading + 1, len(lines)) if lines[i].strip() and not lines[i].startswith(("#", "`", "{", "|", "-", "*")))
    lines[para] += " This sentence was added by the benchmark."
    target.write_text("\n".join(lines), encoding="utf-8")
    return target.relative_to(docs).as_posix()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
