"""Disk faults on a real small filesystem: a full disk and a read-only index folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from tests.test_crash import _corpus

QUESTION = "My API request keeps getting rejected even though I send a token."


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs (root only: skipped where mounting is not allowed)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.exit_code, self.stdout, self.output = proc.returncode, proc.stdout, proc.stdout + proc.stderr


def _cli(args: list[str], cfg: Path) -> Result:
    """Each command in its own process, as a user runs them (Chroma caches its client per path in-process)."""
    return Result(subprocess.run([sys.executable, "-m", "docvec.cli", args[0], "--config", str(cfg), *args[1:]],
                                 capture_output=True, text=True, timeout=300))


def _answers(cfg: Path, mode: str = "hybrid") -> list[dict[str, object]]:
    return [json.loads(line) for line in _cli(["query", QUESTION, "--json", "--mode", mode], cfg).stdout.splitlines()]


def _config(tmp_path: Path, docs: Path, index: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {index}\n")
    return cfg


def test_full_disk_is_one_line_and_the_index_keeps_answering(tmp_path: Path, docs: Path, small_fs: Path) -> None:
    cfg = _config(tmp_path, docs, small_fs / "index")
    assert _cli(["ingest"], cfg).exit_code == 0
    before = _answers(cfg, "vector")
    _corpus(docs / "bulk", 400, seed=9)  # far more than the 3 MB left
    full = _cli(["ingest", "-q"], cfg)
    assert full.exit_code == 1 and "Traceback" not in full.output
    assert "full" in full.stdout.lower() or "full" in full.output.lower()
    assert len([line for line in full.output.strip().splitlines() if line.startswith("Error")]) == 1
    # What was indexed is intact (cosine scores do not depend on the windows written before the disk filled;
    # bm25's do, as those windows are searchable by keyword too).
    assert _answers(cfg, "vector") == before
    assert _answers(cfg)  # hybrid answers as well
    subprocess.run(["mount", "-o", "remount,size=60m", str(small_fs)], check=True)
    assert _cli(["ingest", "-q"], cfg).exit_code == 0  # with space again, the next run finishes
    assert _cli(["verify"], cfg).exit_code == 0


def test_read_only_index_folder(tmp_path: Path, docs: Path, small_fs: Path) -> None:
    cfg = _config(tmp_path, docs, small_fs / "index")
    assert _cli(["ingest"], cfg).exit_code == 0
    before = _answers(cfg)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    assert _answers(cfg) == before  # queries answer from an index they cannot write to (read from a copy)
    for args in (["status"], ["verify"], ["query", QUESTION, "--mode", "keyword"]):
        assert _cli(args, cfg).exit_code == 0, args
    (docs / "guides" / "new.md").write_text("# New\n\nA new page.\n")
    result = _cli(["ingest"], cfg)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Read-only file system" in result.output and "must be writable" in result.output
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert _cli(["verify"], cfg).exit_code == 1  # the new page is missing, nothing else
    assert _cli(["ingest"], cfg).exit_code == 0
