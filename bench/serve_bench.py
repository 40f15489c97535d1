"""A warm docvec: `docvec query` with and without a running server, warm HTTP latency, concurrency, idle RSS, watch.

    python bench/serve_bench.py [--sizes 10000,100000] [--watch-corpus ../shared/corpora/fastapi-docs-en]

- 10k chunks: the real SciFact index of bench/scifact_eval.py (9,977 chunks, built-in model).
- 100k chunks: ten copies of SciFact, each text with its own real vector, built once like bench/scale_bench.py
  (no embedding): nine in ten chunks have exact duplicates, which hybrid search folds into one hit.
For each size a real `docvec serve` runs; measured side by side in one run: `docvec query` through it vs
`--no-server` and `python -c pass`, the floor (median wall of 31 alternating runs each), warm POST /search p50/p95 (vector, hybrid; 100 questions
each, answer pointing by words as by default), 20 concurrent clients x 50 questions (errors, p50/p95), idle RSS.
Watch: `docvec serve --watch` on a copy of a real docs folder: median seconds from saving an edit to the edited
text being searchable, and how many syncs a 1,000-file burst causes. Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

RESULTS = REPO / "bench" / "results"
SCIFACT = REPO.parent / "shared" / "eval" / "scifact"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--watch-corpus", type=Path, default=REPO.parent / "shared" / "corpora" / "fastapi-docs-en")
    parser.add_argument("--index", action="append", default=[], metavar="NAME=CONFIG",
                        help="also measure the index of CONFIG, reported as NAME (repeatable)")
    parser.add_argument("--no-watch", action="store_true", help="skip the watch measurement")
    ns = parser.parse_args()
    questions = [json.loads(line)["query"] for line in (SCIFACT / "queries.jsonl").read_text().splitlines()]
    target = RESULTS / "serve.json"
    out: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}  # --sizes "": watch only
    for size in (int(s) for s in ns.sizes.split(",") if s):
        cfg = RESULTS / "scifact.yaml" if size <= 10_000 else _big_index(size)
        out[f"{size}"] = _one_size(cfg, questions)
        print(size, json.dumps(out[f"{size}"]), flush=True)
    for item in ns.index:
        name, _, config = item.partition("=")
        out[name] = _one_size(Path(config), questions)
        print(name, json.dumps(out[name]), flush=True)
    if not ns.no_watch:
        out["watch"] = _watch(ns.watch_corpus)
        print("watch", json.dumps(out["watch"]), flush=True)
    target.write_text(json.dumps(out, indent=1))


def _big_index(size: int) -> Path:
    """A ~size-chunk index of SciFact copies, each text with its own real vector (built once, then reused)."""
    from docvec.chunker import ChunkParams
    from docvec.fingerprint import Fingerprint
    from docvec.store import StoreLocation
    from docvec.ingest.pipeline import ingest, open_for_writing
    from docvec.ingest.scan import ScanOptions
    from scale_bench import LookupEmbedder, _corpus, scifact_by_hash

    work = RESULTS / f"serve-{size}"
    cfg = work / "config.yaml"
    if cfg.exists():
        return cfg
    shutil.rmtree(work, ignore_errors=True)
    _corpus(size, SCIFACT / "docs", work / "docs")
    embedder = LookupEmbedder(scifact_by_hash())
    store = open_for_writing(StoreLocation(work / "index", "docvec"), Fingerprint.build(embedder.info, ChunkParams()))
    ingest(store, embedder, ScanOptions(work / "docs"), ChunkParams())
    cfg.write_text(f"docs:\n  path: {work / 'docs'}\nstore:\n  path: {work / 'index'}\n")
    return cfg


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(cfg: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "docvec.cli", "serve", "--config", str(cfg), "--listen",
                             f"127.0.0.1:{port}", *extra], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/healthz", "docvec serve", 120)
    return proc, url


def wait_until_up(url: str, what: str, seconds: float) -> None:
    """Poll `url` until it answers 200; SystemExit naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _one_size(cfg: Path, questions: list[str]) -> dict[str, Any]:
    proc, url = _serve(cfg)
    try:
        for q in questions[:5]:  # warm-up: first searches load the HNSW index and the keyword segments
            httpx.post(f"{url}/search", json={"question": q, "k": 5}, timeout=60)
        out: dict[str, Any] = {"idle_rss_mb": _rss_mb(proc.pid)}
        for mode in ("vector", "hybrid"):
            out[f"http_{mode}"] = _latencies(url, questions[5:105], mode)
        out["concurrent_20x50_hybrid"] = _concurrent(url, questions, 20, 50)
        out["throughput_hybrid"] = _throughput(url, questions)
        out["cli"] = _cli(cfg, questions[200:231])
        out["rss_after_mb"] = _rss_mb(proc.pid)
    finally:
        _stop(proc)
    return out


def _latencies(url: str, questions: list[str], mode: str) -> dict[str, float]:
    times = []
    with httpx.Client(timeout=60) as client:
        for q in questions:
            t0 = time.perf_counter()
            r = client.post(f"{url}/search", json={"question": q, "k": 10, "mode": mode})
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
    return _pct(times)


def _concurrent(url: str, questions: list[str], clients: int, each: int,
                serial: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """`clients` threads, each asking `each` questions one after another: latency, throughput, errors, and how many
    answers differ from the serial answer of the same question (`serial`: question -> hit ids)."""
    def run(c: int) -> tuple[list[float], int, int]:
        times, errors, differ = [], 0, 0
        with httpx.Client(timeout=120) as client:
            for i in range(each):
                q = questions[(c * each + i) % len(questions)]
                t0 = time.perf_counter()
                try:
                    answer = client.post(f"{url}/search", json={"question": q, "k": 10})
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                times.append(time.perf_counter() - t0)
                errors += not ok
                if ok and serial is not None:
                    differ += [h["id"] for h in answer.json()["hits"]] != serial[q]
        return times, errors, differ

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(run, range(clients)))
    wall = time.perf_counter() - started
    times = [t for ts, _, _ in results for t in ts]
    return {"clients": clients, "requests": len(times), "errors": sum(e for _, e, _ in results),
            "differ_from_serial": sum(d for _, _, d in results), "per_s": round(len(times) / wall, 1), **_pct(times)}


def _throughput(url: str, questions: list[str]) -> dict[str, Any]:
    """Hybrid searches per second with 1, 2, 4 and 20 clients (the same 80 questions each time), answers checked
    against serial ones; speed-up relative to one client."""
    asked = questions[105:185]
    with httpx.Client(timeout=120) as client:
        serial = {q: [h["id"] for h in client.post(f"{url}/search", json={"question": q, "k": 10}).json()["hits"]]
                  for q in asked}
    runs = [_concurrent(url, asked, n, len(asked) // n, serial) for n in (1, 2, 4, 20)]
    for r in runs:
        r["speedup"] = round(r["per_s"] / runs[0]["per_s"], 2)
    return {f"{r['clients']}_clients": r for r in runs}


def _cli(cfg: Path, questions: list[str]) -> dict[str, float]:
    """Median wall of `docvec query` through the server (the installed script: the warm client), in-process
    (--no-server), and of `python -c pass` (the floor of any Python client), alternating."""
    script = Path(sys.executable).with_name("docvec")
    docvec = [str(script)] if script.exists() else [sys.executable, "-m", "docvec.cli"]
    subprocess.run([*docvec, "query", questions[0], "--config", str(cfg)], capture_output=True, check=True)  # records
    runs: dict[str, list[float]] = {"via": [], "local": [], "floor": []}
    for q in questions:
        for name, cmd in (("via", [*docvec, "query", q, "--config", str(cfg)]),
                          ("local", [*docvec, "query", q, "--config", str(cfg), "--no-server"]),
                          ("floor", [sys.executable, "-c", "pass"])):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            runs[name].append(time.perf_counter() - t0)
    return {"via_server_median_s": round(statistics.median(runs["via"]), 3),
            "no_server_median_s": round(statistics.median(runs["local"]), 3),
            "python_c_pass_median_s": round(statistics.median(runs["floor"]), 3), "runs": len(questions)}


def _pct(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1)}


def _watch(corpus: Path) -> dict[str, Any]:
    work = RESULTS / "serve-watch"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(corpus, work / "docs")
    cfg = work / "config.yaml"
    cfg.write_text(f"docs:\n  path: {work / 'docs'}\nstore:\n  path: {work / 'index'}\nserve:\n  debounce_ms: 300\n")
    subprocess.run([sys.executable, "-m", "docvec.cli", "ingest", "-q", "--config", str(cfg)], check=True)
    proc, url = _serve(cfg, "--watch")
    files = sorted((work / "docs").rglob("*.md"))
    delays = []
    try:
        time.sleep(3)
        for n, path in enumerate(files[:15]):
            word = f"zqx{n}marker"
            with path.open("a", encoding="utf-8") as f:
                f.write(f"\n\nThe {word} paragraph was just added.\n")
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 120:
                r = httpx.post(f"{url}/search", json={"question": word, "k": 1, "mode": "keyword"}).json()
                if r.get("hits") and word in r["hits"][0]["text"]:
                    break
                time.sleep(0.02)
            delays.append(time.perf_counter() - t0)
        burst = work / "docs" / "burst"
        burst.mkdir()
        for i in range(1000):
            (burst / f"p{i:04d}.md").write_text(f"# Page {i}\n\nBurst page {i} of a checkout.\n")
        t0 = time.perf_counter()
        while httpx.get(f"{url}/status").json()["files"] < len(files) + 1000 and time.perf_counter() - t0 < 600:
            time.sleep(0.5)
        burst_s = time.perf_counter() - t0
        time.sleep(2)
    finally:
        err = _stop(proc)
    adding = [m for m in re.findall(r"synced: (\d+) added", err) if int(m) > 0]  # edits change, the burst adds
    return {"corpus": corpus.name, "files": len(files),
            "edit_to_searchable_median_s": round(statistics.median(delays), 2),
            "edit_to_searchable_max_s": round(max(delays), 2), "burst_files": 1000,
            "syncs_for_burst": len(adding), "burst_added_per_sync": [int(m) for m in adding],
            "burst_indexed_s": round(burst_s, 1)}


if __name__ == "__main__":
    main()
