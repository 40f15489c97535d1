"""Searches of a served index while other processes ingest, reindex and roll back: every answer, never an error.

    python bench/concurrent_writes.py [--writes 20] [--clients 4] [--docs data/docs]

Starts `docvec serve` on a copy of the docs folder, then runs `--writes` writer commands in other processes, one
after another (edit a file + ingest, a chunking change + reindex, rollback, in turn), while `--clients` threads
send searches over HTTP until the writers are done. Prints queries, errors (with the first few) and seconds;
writes bench/results/concurrent_writes.json. The model is the built-in one (the sample docs embed in seconds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ("My API request keeps getting rejected even though I send a token.", "rate limits", "webhook retries",
             "pagination cursor", "idempotency key", "export data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--docs", type=Path, default=REPO / "data" / "docs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="docvec-concurrent-"))
    shutil.copytree(args.docs, work / "docs")
    config = work / "config.yaml"
    write_config(config, work, 256)
    docvec(["ingest", "-q"], config)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "docvec.cli", "--config", str(config), "serve", "--listen",
                               f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    done = threading.Event()
    results: list[tuple[int, str]] = []
    clients = [threading.Thread(target=client, args=(url, n, done, results)) for n in range(args.clients)]
    started = time.perf_counter()
    for c in clients:
        c.start()
    writes = run_writers(args.writes, config, work)
    done.set()
    for c in clients:
        c.join()
    server.terminate()
    server.wait(timeout=60)
    errors = [text for status, text in results if status != 200]
    out = {"queries": len(results), "errors": len(errors), "first_errors": errors[:5], "writer_runs": writes,
           "clients": args.clients, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(out, indent=1))
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "concurrent_writes.json").write_text(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors else 0)


def write_config(config: Path, work: Path, max_tokens: int) -> None:
    config.write_text(f"docs:\n  path: {work / 'docs'}\nstore:\n  path: {work / 'index'}\n"
                      f"chunking:\n  max_tokens: {max_tokens}\n")


def run_writers(count: int, config: Path, work: Path) -> list[str]:
    """Edit + ingest, reindex into another chunking, rollback, in turn (each a process of its own)."""
    done = []
    sizes = [256, 192]
    for n in range(count):
        kind = ("ingest", "reindex", "rollback")[n % 3]
        if kind == "ingest":
            page = next((work / "docs").rglob("*.md"))
            page.write_text(page.read_text() + f"\n\nEdit {n}: one more sentence about tokens.\n")
            docvec(["ingest", "-q", "--wait"], config)
        elif kind == "reindex":
            sizes.reverse()
            write_config(config, work, sizes[0])
            docvec(["reindex", "-q", "--wait", "--yes"], config)
        else:
            docvec(["rollback", "--wait"], config)
            sizes.reverse()
            write_config(config, work, sizes[0])
        done.append(kind)
    return done


def client(url: str, n: int, done: threading.Event, results: list[tuple[int, str]]) -> None:
    with httpx.Client(timeout=60) as http:
        i = n
        while not done.is_set():
            body = {"question": QUESTIONS[i % len(QUESTIONS)], "k": 5, "mode": ("hybrid", "vector", "keyword")[i % 3]}
            try:
                r = http.post(f"{url}/search", json=body)
                results.append((r.status_code, r.text[:300]))
            except httpx.HTTPError as exc:
                results.append((0, repr(exc)))
            i += 1


def docvec(args: list[str], config: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "docvec.cli", "--config", str(config), *args], capture_output=True,
                         text=True)
    if run.returncode != 0:
        raise SystemExit(f"docvec {' '.join(args)} failed: {run.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("docvec serve did not come up")


if __name__ == "__main__":
    main()
