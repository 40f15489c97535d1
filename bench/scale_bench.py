"""Scale benchmark: store throughput vs raw Chroma, query latency (cold and warm), HNSW recall vs brute force.

    python bench/scale_bench.py [--sizes 10000,100000] [--scifact ../shared/eval/scifact]

Vectors are pre-computed so the model is not the bottleneck. They come from the real SciFact index that
bench/scifact_eval.py builds (9,979 chunks of real abstracts embedded by the built-in model); larger sizes are
copies of the SciFact folder in which every text keeps its own real vector (a copy's first paragraph, which differs
by a marker, gets it with a small perturbation), so the index keeps the geometry of real text and the two hybrid
rankings agree as they do on real text. (Before 2026-11-24 a text got a real vector picked by a hash of the text:
real geometry, but unrelated to the words.) Recall is measured on the real 9,979 vectors only.

- throughput: docvec's ingest pipeline (scan, chunk, plan, windowed writes; its embedder looks the vector up)
  against raw `collection.add` of exactly the records docvec wrote, in batches of 5,000, into a fresh collection;
- cold query: a new `docvec query` process per question (15 questions), p50 / p95, vector and hybrid;
- warm query: 100 questions in one process through `docvec.query.search.search` (question embedding included), p50 / p95;
- recall@10 of Chroma's HNSW against exact brute force over the same vectors, for the 300 SciFact queries, at
  the default ef_search and tuned values.
Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docvec.chunker import ChunkParams, content_hash  # noqa: E402
from docvec.config import EmbeddingSettings  # noqa: E402
from docvec.embedders import make_embedder  # noqa: E402
from docvec.embedders.builtin import BuiltinEmbedder  # noqa: E402
from docvec.fingerprint import Fingerprint  # noqa: E402
from docvec.store import Store, StoreLocation  # noqa: E402
from docvec.ingest.pipeline import ingest, open_for_writing  # noqa: E402
from docvec.ingest.scan import ScanOptions  # noqa: E402

RESULTS = REPO / "bench" / "results"
COPY_MARKER = re.compile(r"Copy \d+\. ")
SCIFACT_INDEX = RESULTS / "scifact-index"


class LookupEmbedder:
    """Claims to be the built-in model (so `docvec query` can answer) but looks each text's vector up instead of
    computing it: a SciFact chunk's own vector (found by the content hash of its text without the copy marker),
    nudged by a small seeded perturbation when a copy's text differs by that marker; an identical text gets the
    identical vector, as docvec itself gives it. A text not found is embedded by the model."""

    def __init__(self, known: dict[str, np.ndarray], noise: float = 0.01) -> None:
        self._real = BuiltinEmbedder()
        self.info = self._real.info
        self._known = dict(known)
        self._noise = noise

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._real.count_tokens(texts)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([self._vector(t) for t in texts], dtype=np.float32)

    def _vector(self, text: str) -> np.ndarray:
        original = COPY_MARKER.sub("", text, count=1)
        h = content_hash(original)
        if h not in self._known:
            self._known[h] = np.asarray(self._real.embed_documents([original])[0], dtype=np.float32)
        vector = self._known[h]
        if original == text:
            return vector
        rng = np.random.default_rng(int(hashlib.md5(text.encode()).hexdigest()[:8], 16))
        nudged = vector + rng.normal(0, self._noise, vector.shape).astype(np.float32)
        return nudged / np.linalg.norm(nudged)

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self._real.embed_query(text)
        return vector


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--scifact", type=Path, default=REPO.parent / "shared" / "eval" / "scifact")
    parser.add_argument("--keep", action="store_true", help="keep each size's docs and index (prints where)")
    args = parser.parse_args()
    ids, vectors, texts = _scifact_vectors()
    questions = [json.loads(line)["query"] for line in (args.scifact / "queries.jsonl").read_text().splitlines()]
    result: dict[str, Any] = {"recall": _recall(vectors, questions), "sizes": {}}
    for size in (int(s) for s in args.sizes.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"docvec-scale-{size}-"))
        try:
            result["sizes"][size] = _one_size(size, work, args.scifact / "docs", vectors, questions)
        finally:
            if args.keep:
                print(f"kept {work}", flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(result["sizes"][size], indent=2), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def scifact_by_hash() -> dict[str, np.ndarray]:
    """The real SciFact vectors by the content hash of the text they embed."""
    ids, vectors, _ = _scifact_vectors()
    cache = RESULTS / "scifact-hashes.json"
    if not cache.exists():
        store = Store.open_for_reading(StoreLocation(SCIFACT_INDEX, "scifact"))
        meta = store.get_metadatas(ids)
        cache.write_text(json.dumps([str(meta[i]["hash"]) for i in ids]))
    return dict(zip(json.loads(cache.read_text()), vectors))


def _scifact_vectors() -> tuple[list[str], np.ndarray, list[str]]:
    """The real SciFact records (cached as .npz after the first read: Chroma's get of 10k vectors takes ~4 s)."""
    cache = RESULTS / "scifact-vectors.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return list(data["ids"]), data["vectors"], list(data["texts"])
    if not SCIFACT_INDEX.exists():
        raise SystemExit("run bench/scifact_eval.py first: it builds the SciFact index whose vectors this uses")
    store = Store.open(StoreLocation(SCIFACT_INDEX, "scifact"))
    ids = [rid for rid, _ in store.iter_metadata()]
    got = store.get_embeddings(ids)
    docs = store.get_documents(ids)
    vectors = np.asarray([got[i] for i in ids], dtype=np.float32)
    texts = [docs[i][0] for i in ids]
    np.savez(cache, ids=np.asarray(ids), vectors=vectors, texts=np.asarray(texts))
    return ids, vectors, texts


def _corpus(size: int, docs: Path, target: Path) -> None:
    """Copies of the SciFact folder until ~size chunks (9,979 per copy); in each copy but the first, the first
    paragraph of every file starts with the marker "Copy k. "; the file's other chunks are exact duplicates."""
    copies = max(1, round(size / 9979))
    for k in range(copies):
        folder = target / f"copy{k:03}"
        folder.mkdir(parents=True)
        for f in docs.iterdir():
            text = f.read_text(encoding="utf-8")
            (folder / f.name).write_text(text.replace("\n\n", f"\n\nCopy {k}. ", 1) if k else text, encoding="utf-8")


def _one_size(size: int, work: Path, scifact_docs: Path, vectors: np.ndarray, questions: list[str]) -> dict[str, Any]:
    docs = work / "docs"
    _corpus(size, scifact_docs, docs)
    embedder = LookupEmbedder(scifact_by_hash())
    location = StoreLocation(work / "index", "docvec")
    captured: list[tuple[list[str], list[Any], list[str], list[Any]]] = []
    original_add = Store.add
    write_s = [0.0]

    def add(self: Store, ids: Any, vecs: Any, documents: Any, metas: Any) -> None:
        captured.append((list(ids), [list(v) for v in vecs], list(documents), [dict(m) for m in metas]))
        t0 = time.perf_counter()
        original_add(self, ids, vecs, documents, metas)
        write_s[0] += time.perf_counter() - t0

    Store.add = add  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        store = open_for_writing(location, Fingerprint.build(embedder.info, ChunkParams()))
        report = ingest(store, embedder, ScanOptions(docs), ChunkParams())
        docvec_s = time.perf_counter() - t0
    finally:
        Store.add = original_add  # type: ignore[method-assign]
    raw_s, raw_collection, raw_vectors = _raw_chroma(work / "raw", captured)
    n = report.chunks_total
    out: dict[str, Any] = {
        "chunks": n, "docvec_ingest_s": round(docvec_s, 1), "docvec_chunks_per_s": round(n / docvec_s),
        "docvec_store_add_s": round(write_s[0], 1), "raw_chroma_add_s": round(raw_s, 1),
        "raw_chunks_per_s": round(n / raw_s), "overhead_total": round(docvec_s / raw_s - 1, 3),
        "overhead_store_writes": round(write_s[0] / raw_s - 1, 3),
        "recall_at_10_default_ef": _recall_at_10(raw_collection, BuiltinEmbedder().embed_documents(questions),
                                                 raw_vectors),
    }
    cfg = work / "config.yaml"
    cfg.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {location.path}\n")
    for mode in ("vector", "hybrid"):
        out[f"cold_{mode}"] = _cold(cfg, questions[:15], mode)
    out["warm"] = _warm(location, questions[:100])
    return out


def _raw_chroma(path: Path, captured: list[tuple[list[str], list[Any], list[str], list[Any]]]
                ) -> tuple[float, Any, np.ndarray]:
    """Seconds to add the captured records to a fresh collection (ids = row numbers), the collection, vectors."""
    import chromadb

    vecs = [v for c in captured for v in c[1]]
    ids = [str(i) for i in range(len(vecs))]
    docs = [d for c in captured for d in c[2]]
    metas = [m for c in captured for m in c[3]]
    t0 = time.perf_counter()
    collection = chromadb.PersistentClient(str(path)).create_collection(
        "raw", embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    for begin in range(0, len(ids), 5000):
        end = begin + 5000
        collection.add(ids=ids[begin:end], embeddings=vecs[begin:end], documents=docs[begin:end],
                       metadatas=metas[begin:end])
    return time.perf_counter() - t0, collection, np.asarray(vecs, dtype=np.float32)


def _cold(cfg: Path, questions: list[str], mode: str) -> dict[str, float]:
    docvec = Path(sys.executable).with_name("docvec")
    times = []
    for q in questions:
        t0 = time.perf_counter()
        subprocess.run([str(docvec), "query", q, "--config", str(cfg), "--mode", mode], check=True,
                       capture_output=True)
        times.append(time.perf_counter() - t0)
    return _percentiles(times)


def _warm(location: StoreLocation, questions: list[str]) -> dict[str, Any]:
    from docvec.keyword import KeywordIndex, sync_keyword_index
    from docvec.query.search import search

    store = Store.open(location)
    embedder = make_embedder(EmbeddingSettings())
    out: dict[str, Any] = {}
    with KeywordIndex.of(store) as keyword:
        sync_keyword_index(store, keyword)
        for mode in ("vector", "hybrid"):
            search(store, embedder, questions[0], 5, mode=mode, keyword=keyword)  # load everything once
            times, store_times = [], []
            for q in questions:
                vector = embedder.embed_query(q)
                t0 = time.perf_counter()
                search(store, embedder, q, 5, mode=mode, keyword=keyword, vector=vector)
                store_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                search(store, embedder, q, 5, mode=mode, keyword=keyword)
                times.append(time.perf_counter() - t0)
            out[mode] = {"with_embedding": _percentiles(times), "search_only": _percentiles(store_times)}
    return out


def _recall(vectors: np.ndarray, questions: list[str]) -> dict[str, Any]:
    """HNSW recall@10 against brute force on the real vectors, one fresh collection per ef_search value (set at
    creation: a loaded index may keep the ef it was loaded with)."""
    import chromadb

    queries = BuiltinEmbedder().embed_documents(questions)
    out: dict[str, Any] = {"vectors": len(vectors), "queries": len(questions)}
    path = Path(tempfile.mkdtemp(prefix="docvec-recall-"))
    try:
        client = chromadb.PersistentClient(str(path))
        for ef in (10, 50, 100, 200):
            collection = client.create_collection(f"recall-{ef}", embedding_function=None,
                                                  configuration={"hnsw": {"space": "cosine", "ef_search": ef}})
            ids = [str(i) for i in range(len(vectors))]
            for begin in range(0, len(ids), 5000):
                collection.add(ids=ids[begin:begin + 5000], embeddings=vectors[begin:begin + 5000])
            out[f"ef_search_{ef}"] = _recall_at_10(collection, queries, vectors)
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return out


def _recall_at_10(collection: Any, queries: np.ndarray, vectors: np.ndarray) -> float:
    """Mean share of the exact 10 nearest (brute-force cosine) that HNSW returns; ids are row numbers."""
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    found = collection.query(query_embeddings=queries, n_results=10, include=[])["ids"]
    return round(float(np.mean([len({int(i) for i in f} & set(e.tolist())) / 10 for f, e in zip(found, exact)])), 4)


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] * 1000, 1),
            "n": len(ordered)}


if __name__ == "__main__":
    main()
