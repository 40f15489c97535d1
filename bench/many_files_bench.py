"""Many small files: ingest, no-op re-ingest, status and verify, with wall time and peak RSS of each command.

    python bench/many_files_bench.py [N_FILES]      (default 50,000; writes bench/results/many_files.json)

Each command runs in its own process (as a user runs it); peak RSS is the child's ru_maxrss.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "token key request quota webhook retry cursor page error limit secret rotate header region".split()


def corpus(root: Path, n: int) -> None:
    rng = random.Random(0)
    for i in range(n):
        folder = root / f"d{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        (folder / f"page{i:06d}.md").write_text(f"# Page {i}\n\n{body}.\n")


def timed(args: list[str], cfg: Path) -> dict[str, float]:
    """Wall time and peak RSS of one docvec command in its own process (os.wait4 gives that child's rusage)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "docvec.cli", args[0], "--config", str(cfg), *args[1:]],
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{args} failed: {err.read()[-500:].decode()}")
    return {"seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus(root / "docs", n)
        cfg = root / "config.yaml"
        cfg.write_text(f"docs:\n  path: {root / 'docs'}\nstore:\n  path: {root / 'index'}\n")
        results: dict[str, object] = {"files": n}
        for name, args in (("ingest", ["ingest", "-q"]), ("noop_ingest", ["ingest", "-q"]),
                           ("status", ["status"]), ("verify", ["verify"])):
            results[name] = timed(args, cfg)
            print(name, results[name], flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "many_files.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
