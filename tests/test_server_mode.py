"""Every command behaves the same against an embedded index and a real `chroma run` server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from docvec.cli import cli

QUESTION = "My API request keeps getting rejected even though I send a token."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Chroma server on a free loopback port, for this module."""
    port = _free_port()
    chroma = Path(sys.executable).with_name("chroma")
    proc = subprocess.Popen([str(chroma), "run", "--path", str(tmp_path_factory.mktemp("server")), "--host",
                             "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("chroma run did not start within 60 s")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(params=["embedded", "server"])
def config(request: pytest.FixtureRequest, project: Path) -> Path:
    """The sample-docs project, with its index either in a local folder or on the Chroma server."""
    cfg = project / "config.yaml"
    if request.param == "server":
        port = request.getfixturevalue("chroma_server")
        collection = f"t{abs(hash(str(project))) % 10**9}"  # one server serves every test: own collection each
        cfg.write_text(cfg.read_text().replace("store:\n", f"store:\n  host: 127.0.0.1\n  port: {port}\n"
                                                          f"  collection: {collection}\n"))
    return cfg


def _run(args: list[str], cfg: Path) -> "object":
    return CliRunner().invoke(cli, [args[0], "--config", str(cfg), *args[1:]])


def test_the_whole_cycle_in_both_modes(config: Path) -> None:
    first = _run(["ingest", "--json", "-q"], config)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["files_added"] == 12
    hits = [json.loads(x) for x in _run(["query", QUESTION, "--json"], config).stdout.splitlines()]
    assert hits[0]["source"] == "guides/authentication-tokens.md"
    status = json.loads(_run(["status", "--json"], config).stdout)
    assert status["files"] == 12 and status["model"] == "all-MiniLM-L6-v2"

    docs = config.parent / "docs"
    (docs / "guides" / "sdks.md").unlink()
    page = docs / "guides" / "billing-limits.md"
    page.write_text(page.read_text().replace("VAT numbers added", "Tax numbers added"))
    sync = json.loads(_run(["ingest", "--json", "-q"], config).stdout)
    assert (sync["chunks_embedded"], sync["files_removed"], sync["files_changed"]) == (1, 1, 1)
    assert _run(["verify"], config).exit_code == 0

    config.write_text(config.read_text() + "chunking:\n  overlap_tokens: 0\n")
    refused = _run(["ingest"], config)
    assert refused.exit_code == 1 and "overlap_tokens: 32 → 0" in refused.output and "docvec reindex" in refused.output
    reindexed = _run(["reindex", "-q"], config)
    assert reindexed.exit_code == 0, reindexed.output
    assert _run(["rollback"], config).exit_code == 0
    assert _run(["prune", "--all"], config).exit_code == 0
    assert [json.loads(x)["source"] for x in _run(["query", QUESTION, "--json"], config).stdout.splitlines()][0] \
        == "guides/authentication-tokens.md"


def test_unreachable_server_names_host_and_port(project: Path) -> None:
    cfg = project / "config.yaml"
    port = _free_port()
    cfg.write_text(cfg.read_text().replace("store:\n", f"store:\n  host: 127.0.0.1\n  port: {port}\n"))
    result = _run(["query", QUESTION], cfg)
    assert result.exit_code == 1 and f"127.0.0.1:{port}" in result.output and "Traceback" not in result.output
