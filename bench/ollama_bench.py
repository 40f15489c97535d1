"""Ollama benchmark: docvec's ingest vs the seeds' one-request-per-text loop vs Chroma's OllamaEmbeddingFunction.

    python bench/ollama_bench.py ../shared/corpora/fastapi-docs-en

A loopback server speaking Ollama's API (tests/ollama_server.py, in its own process) serves all-minilm with the
built-in MiniLM model behind it, so the three clients compete for the same model. All three write the same chunks
(docvec's chunker) into a fresh Chroma collection:

- docvec: `docvec ingest` with provider ollama (batches packed by size, truncate: false), with 2 requests in
  flight (the default) and with 1 (the server here is CPU-bound: two requests compete for the same 2 cores);
- seeds: one `/api/embed` request per text, then Chroma adds in batches of 500 (generous to the loop);
- chroma-ef: a collection with Chroma's OllamaEmbeddingFunction, fed (a) every chunk in one `add`, as Chroma's
  docs show it (one request; its client times out after 60 s), and (b) `add` in batches of 64.

Reports wall seconds and chunks/s of each, and their ratios to docvec. Writes bench/results/ollama-<corpus>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docvec.chunker import ChunkParams, chunk_markdown  # noqa: E402
from docvec.embedders.builtin import BuiltinEmbedder  # noqa: E402
from docvec.ingest.scan import ScanOptions, read_markdown, scan  # noqa: E402

MODEL = "all-minilm:latest"
RESULTS = REPO / "bench" / "results"


PARTS = ("docvec", "docvec_concurrency_1", "seeds_loop", "chroma_ef_batches_64", "chroma_ef_one_add")


def main(corpus: Path, parts: tuple[str, ...] = PARTS) -> None:
    work = Path(tempfile.mkdtemp(prefix="docvec-ollama-bench-"))
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "ollama_server.py"), "--port", str(port),
                               "--backend", "builtin", "--model", MODEL], stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        server.stdout.readline()  # type: ignore[union-attr]  # "fake Ollama on ..." once it listens
        texts, ids = _chunks(corpus)
        _warm(url)
        saved = RESULTS / f"ollama-{corpus.name}.json"
        results = json.loads(saved.read_text()) if saved.exists() and parts != PARTS else {}
        results.update({"corpus": corpus.name, "chunks": len(texts), "cpu_cores": os.cpu_count()})
        runs: dict[str, Callable[[], Any]] = {
            "docvec": lambda: _docvec(corpus, work / "a", url, 2),
            "docvec_concurrency_1": lambda: _docvec(corpus, work / "b", url, 1),
            "seeds_loop": lambda: _timed(len(texts), lambda: _seeds(url, texts, ids, work / "seeds")),
            "chroma_ef_batches_64": lambda: _timed(len(texts), lambda: _chroma_ef(url, texts, ids, work / "ef64", 64)),
            # Last: after its client times out, the server still works through the whole request.
            "chroma_ef_one_add": lambda: _timed(len(texts), lambda: _chroma_ef(url, texts, ids, work / "ef1", None)),
        }
        for part in parts:
            results[part] = runs[part]()
        base = results["docvec"]["chunks_per_s"]
        for key in PARTS[2:]:
            if key in results and results[key].get("chunks_per_s"):
                results[key]["docvec_speedup"] = round(base / results[key]["chunks_per_s"], 2)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ollama-{corpus.name}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def _chunks(corpus: Path) -> tuple[list[str], list[str]]:
    """docvec's chunks of the corpus (distinct texts), so every client embeds exactly the same inputs."""
    counter = BuiltinEmbedder().count_tokens
    texts: dict[str, None] = {}
    for f in scan(ScanOptions(corpus))[0]:
        text, _ = read_markdown(f.path)
        texts.update((c.embed_text, None) for c in chunk_markdown(text, counter, ChunkParams()).chunks)
    return list(texts), [f"c{i}" for i in range(len(texts))]


def _warm(url: str) -> None:
    import ollama

    ollama.Client(host=url).embed(model=MODEL, input=["warm up"])


def _docvec(corpus: Path, work: Path, url: str, concurrency: int) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "docvec.yaml"
    cfg.write_text(json.dumps({"docs": {"path": str(corpus)}, "store": {"path": str(work / "docvec-index")},
                               "embedding": {"provider": "ollama", "model": "all-minilm", "host": url,
                                             "concurrency": concurrency}}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "docvec.cli", "ingest", "--config", str(cfg), "--json"],
                          capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"docvec ingest failed: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.splitlines()[0])
    return {"seconds": round(seconds, 1), "chunks_embedded": report["chunks_embedded"],
            "chunks_per_s": round(report["chunks_embedded"] / seconds, 2)}


def _seeds(url: str, texts: list[str], ids: list[str], path: Path) -> None:
    import chromadb
    import ollama

    client = ollama.Client(host=url)
    vectors = [client.embed(model=MODEL, input=t).embeddings[0] for t in texts]
    collection = chromadb.PersistentClient(str(path)).create_collection("seeds", embedding_function=None,
                                                                       configuration={"hnsw": {"space": "cosine"}})
    for begin in range(0, len(texts), 500):
        collection.add(ids=ids[begin:begin + 500], documents=texts[begin:begin + 500],
                       embeddings=vectors[begin:begin + 500])


def _chroma_ef(url: str, texts: list[str], ids: list[str], path: Path, batch: int | None) -> None:
    import chromadb
    from chromadb.utils.embedding_functions import OllamaEmbeddingFunction

    ef = OllamaEmbeddingFunction(url=url, model_name=MODEL)
    collection = chromadb.PersistentClient(str(path)).create_collection("chroma-ef", embedding_function=ef)
    step = batch or len(texts)
    for begin in range(0, len(texts), step):
        collection.add(ids=ids[begin:begin + step], documents=texts[begin:begin + step])


def _timed(chunks: int, run: Callable[[], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - the failure is the measurement
        return {"seconds": round(time.perf_counter() - t0, 1), "failed": f"{type(exc).__name__}: {exc}"[:300]}
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 1), "chunks_per_s": round(chunks / seconds, 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", type=Path, default=Path("../shared/corpora/fastapi-docs-en"))
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)} "
                        "(the others are kept from the last results file)")
    args = parser.parse_args()
    main(args.corpus.resolve(), tuple(args.parts.split(",")))
