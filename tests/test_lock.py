"""One writer per index: a second writer is refused naming the holder; a dead holder's lock is free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docvec.errors import LockHeld
from docvec.lock import writer_lock

HOLD = """
import sys, time
from pathlib import Path
from docvec.lock import writer_lock
with writer_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(lock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    lock = tmp_path / "idx" / ".docvec-x.lock"
    proc = _holder(lock)
    try:
        with pytest.raises(LockHeld, match=rf"pid {proc.pid} on .* since .*UTC.*--wait"):
            with writer_lock(lock):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_recovered(tmp_path: Path) -> None:
    lock = tmp_path / ".docvec-x.lock"
    proc = _holder(lock)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with writer_lock(lock):
        assert (tmp_path / ".docvec-x.holder").read_text().find(str(os.getpid())) > 0


def test_wait_gets_the_lock_when_the_holder_finishes(tmp_path: Path) -> None:
    lock = tmp_path / ".docvec-x.lock"
    proc = _holder(lock)
    started = time.monotonic()
    subprocess.Popen(["sh", "-c", f"sleep 1; kill {proc.pid}"])
    with writer_lock(lock, wait=True, timeout=30):
        assert proc.wait(timeout=30) is not None
    assert time.monotonic() - started < 30
