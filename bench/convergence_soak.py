"""Soak profile of the model-based proof (tests/convergence.py): many more sequences than CI, and longer ones.

    python bench/convergence_soak.py [--sequences 500] [--steps 25] [--server]

Each sequence is a new docs folder and index; its steps create, edit, rename and delete pages, change front
matter, and run ingest, reindex, rollback, prune, prune --all and verify --repair, each possibly killed before
any write boundary. After every step: `verify` ok means equal to a clean build; after every completed run, equal
and ok. Prints what ran and the number of divergences (a divergence stops the run with the shrunk sequence).
--server runs against a real `chroma run` started here.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from tests.convergence import SERVER, STATS, Convergence  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=500)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--server", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped soak stops its chroma server too
    server = _start_server() if args.server else None
    started = time.perf_counter()
    divergences = 0
    try:
        soak = settings(max_examples=args.sequences, stateful_step_count=args.steps, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck))
        try:
            run_state_machine_as_test(Convergence, settings=soak)
        except AssertionError as exc:
            divergences = 1
            print(f"DIVERGENCE: {exc}", file=sys.stderr)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    out = {"store": "chroma server" if args.server else "local", "sequences_asked": args.sequences,
           "steps_per_sequence_max": args.steps, "divergences": divergences,
           "seconds": round(time.perf_counter() - started, 1), **dict(STATS)}
    print(json.dumps(out, indent=1))
    sys.exit(1 if divergences else 0)


def _start_server() -> subprocess.Popen[bytes]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    chroma = Path(sys.executable).with_name("chroma")
    proc = subprocess.Popen([str(chroma), "run", "--path", tempfile.mkdtemp(prefix="docvec-soak-server-"),
                             "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                SERVER.update(host="127.0.0.1", port=port)
                return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("chroma run did not start within 60 s")


if __name__ == "__main__":
    main()
