"""Reads on a client's behalf stay beneath the docs folder, whatever is swapped in while they run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import docvec
from docvec.cli import cli
from docvec.confined import read_beneath
from docvec.errors import ConfigError, DocvecError, IndexNotFound

SECRET = "password=hunter2\n"


def test_reads_a_regular_file_and_refuses_links_fifos_and_big_files(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "a.md").write_text("# A\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.md").write_text(SECRET)
    assert read_beneath(root, "guides/a.md", 100) == b"# A\n"
    (root / "link.md").symlink_to(outside / "a.md")
    (root / "inner.md").symlink_to(root / "guides" / "a.md")  # even a link that stays inside
    (root / "away").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "pipe.md")
    for rel in ("link.md", "inner.md", "away/a.md", "pipe.md", "missing.md", "guides", "guides/a.md/x"):
        with pytest.raises(IndexNotFound):
            read_beneath(root, rel, 100)
    for rel in ("../outside/a.md", "/etc/passwd", "guides/../../outside/a.md", ""):
        with pytest.raises(ConfigError):
            read_beneath(root, rel, 100)
    with pytest.raises(ConfigError, match="larger than"):
        read_beneath(root, "guides/a.md", 2)


def test_get_never_leaks_a_file_swapped_in_while_it_reads(tmp_path: Path) -> None:
    """A file and a folder of the index flipped between themselves and symlinks out, as fast as the machine goes,
    while `get` reads them: 2,000 reads, nothing from outside, only docvec's own refusals."""
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "victim.md").write_text("# Victim\n\nAn ordinary page.\n")
    (docs / "guides" / "inner.md").write_text("# Inner\n\nAnother ordinary page.\n")
    outside = tmp_path / "outside"
    (outside / "guides").mkdir(parents=True)
    for path in (outside / "victim.md", outside / "guides" / "inner.md"):
        path.write_text(SECRET)
    config = tmp_path / "config.yaml"
    config.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n")
    assert CliRunner().invoke(cli, ["--config", str(config), "ingest", "-q"]).exit_code == 0
    index = docvec.open(config=str(config))
    stop = threading.Event()
    flipper = threading.Thread(target=_flip, args=(docs, outside, stop), daemon=True)
    flipper.start()
    leaks = answers = refusals = 0
    try:
        for n in range(2000):
            try:
                text = index.get("victim.md" if n % 2 else "guides/inner.md").text
            except DocvecError:
                refusals += 1
                continue
            answers += 1
            leaks += "hunter2" in text
    finally:
        stop.set()
        flipper.join()
    assert leaks == 0 and answers > 0 and refusals > 0, (leaks, answers, refusals)


def _flip(docs: Path, outside: Path, stop: threading.Event) -> None:
    """Swap each path between the real thing and a symlink out of the folder: gone, a link out, real again."""
    pairs = [(docs / "victim.md", outside / "victim.md"), (docs / "guides", outside / "guides")]
    while not stop.is_set():
        for path, out in pairs:
            real = path.with_name(path.name + ".real")
            os.rename(path, real)
            path.symlink_to(out)
            path.unlink()
            os.rename(real, path)
