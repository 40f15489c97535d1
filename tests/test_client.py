"""The warm client: `docvec query` answered by a running server imports only the standard library, prints what
the full CLI prints, and leaves every unusual case to the full CLI."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import docvec
from docvec.query import client
from docvec.query.limits import MAX_K, MAX_QUERY_CHARS, MODES, SPAN_MODES
from tests.test_serve import QUESTION, served  # noqa: F401 - the fixture

Served = tuple[str, Path, subprocess.Popen[str]]
SCRIPT = "import sys; from docvec.entry import main; sys.argv[0] = 'docvec'; main()"  # what the script runs
FULL = "import sys; from docvec.cli import main; sys.argv[0] = 'docvec'; main()"  # the click CLI alone
INSTALLED = Path(docvec.__file__).resolve().parents[1]  # the repository, or site-packages for an installed wheel
HEAVY = ("numpy", "chromadb", "onnxruntime", "tantivy", "tokenizers", "click", "yaml", "typing", "http.client")


def _run(code: str, args: list[str], cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "100"})  # one width for both paths


def test_the_client_constants_are_the_search_s() -> None:
    assert (client.MAX_K, client.MODES, client.SPAN_MODES, client.MAX_QUERY_CHARS) == \
        (MAX_K, MODES, SPAN_MODES, MAX_QUERY_CHARS)


def test_a_served_query_imports_only_the_standard_library_and_answers_the_same(served: Served) -> None:
    _, project, _ = served
    args = ["query", QUESTION, "-k", "3"]
    first = _run(SCRIPT, args, project)  # the full CLI answers through the server and records the settings
    assert first.returncode == 0 and "webhooks.md" in first.stdout, first.stderr
    warm = _run(SCRIPT, args, project, "-X", "importtime")
    assert warm.returncode == 0 and warm.stdout == first.stdout, warm.stderr
    imported = _imported(warm.stderr)
    assert "docvec.query.client" in imported and "docvec.cli" not in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    # Without site (which imports pathlib and more for an editable install): what the client path imports itself
    bare = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", SCRIPT, *args], cwd=project,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "100", "PYTHONPATH": str(INSTALLED)})
    assert bare.returncode == 0 and bare.stdout == first.stdout, bare.stderr[-2000:]
    own = _imported(bare.stderr)
    assert not own & {*HEAVY, "pathlib", "hashlib", "shutil", "dataclasses"}, sorted(own & {*HEAVY, "pathlib"})


def _imported(importtime: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in importtime.splitlines() if line.startswith("import time")}


EXTRAS = [[], ["--json"], ["--files"], ["-k", "2", "--explain"], ["--mode", "keyword"],
          ["--where", "tag=auth", "--top-k=4"], ["--spans", "off", "--min-score", "0.2"],
          ["--per-file", "1", "--file-penalty", "0"]]


def test_the_fast_path_prints_what_the_full_cli_prints(served: Served) -> None:
    _, project, _ = served
    for extra in EXTRAS:  # one server for all: each start is seconds
        args = ["query", *QUESTION.split(), "--config", str(project / "config.yaml"), *extra]
        full = _run(FULL, args, project)
        assert full.returncode == 0 and full.stdout, full.stderr
        assert _fast(args[1:], project) == (0, full.stdout), extra


def _fast(argv: list[str], cwd: Path, environ: dict[str, str] | None = None) -> tuple[int | None, str]:
    out = io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out):
            code = client.fast_query(argv, environ if environ is not None else dict(os.environ))
    finally:
        os.chdir(previous)
        del os.environ["COLUMNS"]
    return code, out.getvalue()


UNUSUAL = [["--help"], [QUESTION, "--no-server"], [QUESTION, "-k", "0"], [QUESTION, "-k", "x"], [QUESTION, "-k"],
           [QUESTION, "-k5"], [QUESTION, "--mode", "fuzzy"], ["-"], [QUESTION, "--min-score", "nan"],
           [QUESTION, "--host", "chroma"], ["--", QUESTION], [QUESTION, "--config", "a.yaml", "--config", "b.yaml"],
           ["\udcff"], [QUESTION, "--where", ""], [QUESTION, "--where", "source=guides/"], ["x" * (MAX_QUERY_CHARS + 1)]]


def test_anything_unusual_is_left_to_the_full_cli(served: Served) -> None:
    _, project, _ = served
    assert _run(SCRIPT, ["query", QUESTION], project).returncode == 0  # the settings are recorded
    assert _fast([QUESTION], project)[0] == 0
    for argv in UNUSUAL:
        assert _fast(argv, project) == (None, ""), argv


def test_a_changed_config_or_environment_is_read_by_the_full_cli_again(served: Served) -> None:
    _, project, _ = served
    assert _run(SCRIPT, ["query", QUESTION], project).returncode == 0
    assert _fast([QUESTION], project)[0] == 0
    assert _fast([QUESTION], project, {**os.environ, "DOCVEC_QUERY_TOP_K": "1"}) == (None, "")
    config = project / "config.yaml"
    config.write_text(config.read_text() + "query:\n  top_k: 1\n")  # same size class, new content and times
    assert _fast([QUESTION], project) == (None, "")
    again = _run(SCRIPT, ["query", QUESTION, "--files"], project)  # the full CLI: one hit, and records it
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 1, again.stdout
    assert _fast([QUESTION, "--files"], project) == (0, again.stdout)


def test_a_cache_others_can_write_or_an_entry_pointing_elsewhere_is_not_used(served: Served,
                                                                            tmp_path: Path) -> None:
    _, project, _ = served
    assert _run(SCRIPT, ["query", QUESTION], project).returncode == 0
    cache = client.cache_dir(os.environ)
    assert cache is not None and _fast([QUESTION], project)[0] == 0
    folder = Path(cache)
    folder.chmod(0o777)
    try:
        assert _fast([QUESTION], project) == (None, "")
    finally:
        folder.chmod(0o700)
    (entry,) = [p for p in folder.glob("*.json") if json.loads(p.read_text())["key"][0] == str(project)]
    data: dict[str, Any] = json.loads(entry.read_text())
    entry.write_text(json.dumps({**data, "collection": "another"}))  # the server's answer is not that collection's
    assert _fast([QUESTION], project) == (None, "")
    entry.write_text(json.dumps({**data, "socket": str(tmp_path / "nothing.sock")}))
    assert _fast([QUESTION], project) == (None, "")


def test_output_that_cannot_be_written_ends_as_the_full_cli_s(served: Served) -> None:
    """A reader that stopped is exit 0, a full disk exit 1, a closed stdout the full CLI's: never a traceback."""
    _, project, _ = served
    assert _run(SCRIPT, ["query", QUESTION], project).returncode == 0  # recorded: the next ones are the fast path
    script = f"{sys.executable} -c \"{SCRIPT}\" query {QUESTION.split()[0]} -k 5 --json"
    for redirect, code in ((">/dev/full", 1), ("| head -c 10 >/dev/null; exit ${PIPESTATUS[0]}", 0), (">&-", 0)):
        run = subprocess.run(["bash", "-c", f"{script} {redirect}"], cwd=project, capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == code and "Traceback" not in run.stderr and not run.stderr.strip(), (redirect, run)
