"""`docvec serve` as a real subprocess: the HTTP API through httpx, MCP through the official client over stdio,
`docvec query` through the server, the security gate, the life cycle, and watch mode."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import anyio
import httpx
import pytest
from click.testing import CliRunner

import docvec
from docvec.cli import cli
from docvec.query.limits import MAX_K
from tests.conftest import REPO

QUESTION = "How long are failed webhook deliveries retried?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "docvec.cli", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not come up")


def _docvec(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A docvec command in its own process: this one's Chroma cache predates what the server wrote."""
    return subprocess.run([sys.executable, "-m", "docvec.cli", *args], cwd=cwd, capture_output=True, text=True)


def _stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> str:
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return err


@pytest.fixture
def served(project: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    """The sample docs indexed, and `docvec serve` running on them."""
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    port = _free_port()
    proc = _start(["serve", "--config", str(project / "config.yaml"), "--listen", f"127.0.0.1:{port}"], project)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc)
    yield url, project, proc
    if proc.poll() is None:
        _stop(proc)


def test_http_search_status_and_get(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, project, _ = served
    found = httpx.post(f"{url}/search", json={"question": QUESTION, "k": 3, "where": {"source": "guides/"}})
    assert found.status_code == 200, found.text
    hits = found.json()["hits"]
    assert found.json()["docs_root"] == str(project / "docs")
    assert hits[0]["source"] == "guides/webhooks.md" and len(hits) == 3
    assert all(h["source"].startswith("guides/") for h in hits)
    first, last = hits[0]["answer_lines"]
    passage = httpx.post(f"{url}/get", json={"source": "guides/webhooks.md", "start_line": first,
                                              "end_line": last}).json()
    assert "three days" in passage["text"] and passage["start_line"] == first
    status = httpx.get(f"{url}/status").json()
    assert status["chunks"] > 0 and status["docs_root"] == str(project / "docs")


def test_http_errors_are_one_line_json_with_fitting_codes(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, _, _ = served
    cases: list[tuple[Any, int, str]] = [
        ({"question": ""}, 400, "question"),
        ({"question": "x", "k": 0}, 400, "'k'"),
        ({"question": "x", "colour": 1}, 400, "unknown field 'colour'"),
        ({"question": "x", "mode": "fuzzy"}, 400, "mode 'fuzzy' is unknown"),
        ({"question": "x", "where": ["oops"]}, 400, "KEY=VALUE"),
        ({"question": "x", "min_score": 7}, 400, "min_score"),
        ({"question": "x" * 10_001}, 413, ""),
    ]
    for body, code, words in cases:
        r = httpx.post(f"{url}/search", json=body)
        assert r.status_code == code and words in r.json()["error"] and "\n" not in r.json()["error"], (body, r.text)
    bad = httpx.post(f"{url}/search", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    huge = httpx.post(f"{url}/search", content=b"x" * 70_000)
    assert huge.status_code == 413


def test_get_reads_only_indexed_files_inside_the_docs_folder(served: tuple[str, Path, subprocess.Popen[str]],
                                                             tmp_path: Path) -> None:
    url, project, _ = served
    secret = tmp_path / "secret.md"
    secret.write_text("# Secret\n\npassword=hunter2\n")
    for source in ("../config.yaml", "/etc/passwd", str(secret), "guides/../../config.yaml", "nope.md",
                   "guides\\webhooks.md", "~/.ssh/id_rsa"):
        r = httpx.post(f"{url}/get", json={"source": source})
        assert r.status_code in (400, 404) and "hunter2" not in r.text, (source, r.text)
    # an indexed file later replaced by a symlink that leads out of the docs folder
    indexed = project / "docs" / "guides" / "sdks.md"
    indexed.unlink()
    indexed.symlink_to(secret)
    r = httpx.post(f"{url}/get", json={"source": "guides/sdks.md"})
    assert r.status_code == 404 and "hunter2" not in r.text


def test_gate_refuses_foreign_host_and_origin(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, _, _ = served
    assert httpx.get(f"{url}/status", headers={"Host": "attacker.example"}).status_code == 421
    assert httpx.get(f"{url}/status", headers={"Origin": "http://attacker.example"}).status_code == 403
    port = url.rsplit(":", 1)[1]
    assert httpx.get(f"{url}/status", headers={"Origin": f"http://localhost:{port}"}).status_code == 200
    mcp = httpx.post(f"{url}/mcp", headers={"Host": "attacker.example", "Accept": "application/json"},
                     json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    assert mcp.status_code == 421  # the MCP endpoint sits behind the same gate


def test_query_through_the_server_equals_in_process_and_loads_no_chroma(
        served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    _, project, _ = served
    cfg = str(project / "config.yaml")
    block = ("import sys; sys.modules['chromadb'] = None; sys.modules['onnxruntime'] = None; "
             "from docvec.cli import main; sys.argv = ['docvec'] + sys.argv[1:]; main()")
    for extra in ([], ["--mode", "keyword"], ["--where", "tag=auth", "-k", "2"], ["--spans", "off"]):
        args = ["query", QUESTION, "--config", cfg, "--json", *extra]
        via = subprocess.run([sys.executable, "-c", block, *args], cwd=project, capture_output=True, text=True)
        assert via.returncode == 0, via.stderr  # answered without importing Chroma or onnxruntime
        local = subprocess.run([sys.executable, "-m", "docvec.cli", *args, "--no-server"], cwd=project,
                               capture_output=True, text=True)
        assert local.returncode == 0 and via.stdout == local.stdout and via.stdout


def test_a_lone_surrogate_in_json_is_a_replacement_character_not_a_500(
        served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, _, _ = served
    body = '{"question": "rotate a leaked \\ud800 key", "where": ["tag=\\udcff"]}'
    for where in (body, body.replace(', "where": ["tag=\\udcff"]', "")):
        found = httpx.post(f"{url}/search", content=where, headers={"Content-Type": "application/json"})
        assert found.status_code == 200, found.text
    quoted = httpx.post(f"{url}/search", content='{"question": "x", "\\ud800": 1}',
                        headers={"Content-Type": "application/json"})
    assert quoted.status_code == 400 and "unknown field" in quoted.json()["error"], quoted.text
    read = httpx.post(f"{url}/get", content='{"source": "guides/webhooks\\ud800.md"}',
                      headers={"Content-Type": "application/json"})
    assert read.status_code == 404 and "is not a file of this index" in read.json()["error"], read.text


def test_query_through_the_server_shows_the_files_of_the_indexed_folder(
        served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    """A client whose configuration names another docs folder still prints the paths of the indexed files."""
    _, project, _ = served
    other = project / "other.yaml"
    other.write_text(f"docs:\n  path: {project / 'elsewhere'}\nstore:\n  path: {project / 'index'}\n")
    block = "import sys; sys.modules['chromadb'] = None; from docvec.cli import main; main()"
    via = subprocess.run([sys.executable, "-c", block, "query", QUESTION, "--config", str(other), "--files", "-k", "1"],
                         cwd=project, capture_output=True, text=True)
    assert via.returncode == 0, via.stderr  # the server answered (Chroma cannot be imported here)
    assert via.stdout.split()[1].startswith("docs/guides/"), via.stdout


def test_second_serve_is_refused_naming_the_first(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, project, first = served
    second = _start(["serve", "--config", str(project / "config.yaml"), "--listen", f"127.0.0.1:{_free_port()}"],
                    project)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1 and "already running" in err and str(first.pid) in err and url in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # SIGHUP: the terminal was closed
def test_sigterm_stops_cleanly_and_removes_the_advert(served: tuple[str, Path, subprocess.Popen[str]],
                                                      signum: int) -> None:
    _, project, proc = served
    adverts = list((project / "index").glob("docvec-serve-*.json"))
    assert len(adverts) == 1 and json.loads(adverts[0].read_text())["pid"] == proc.pid
    _stop(proc, signum)
    assert not adverts[0].exists()
    run = _docvec(["query", QUESTION, "--config", str(project / "config.yaml"), "-k", "1"], project)
    assert run.returncode == 0 and "webhooks.md" in run.stdout  # no server: answered in-process


def test_watch_refuses_to_start_on_an_index_built_from_another_folder(project: Path, tmp_path: Path) -> None:
    """It could only fail, forever ("sync failed, will retry" every minute while serving): say so at start."""
    other = tmp_path / "other-docs"
    other.mkdir()
    (other / "page.md").write_text("# Other\n\nAnother folder's page.\n")
    assert CliRunner().invoke(cli, ["ingest", str(other), "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    proc = _start(["serve", "--watch", "--config", str(project / "config.yaml"), "--listen",
                   f"127.0.0.1:{_free_port()}"], project)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and f"built from {other.resolve()}" in err and "docs.path" in err, err
    status = json.loads(_docvec(["status", "--json", "--config", str(project / "config.yaml")], project).stdout)
    assert status["files"] == 1  # untouched


def test_a_reindex_by_another_process_is_picked_up(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, project, _ = served
    before = httpx.post(f"{url}/search", json={"question": QUESTION, "k": 1}).json()["live"]
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text() + "chunking:\n  max_tokens: 128\n")
    assert _docvec(["reindex", "--config", str(cfg), "-q"], project).returncode == 0
    after = httpx.post(f"{url}/search", json={"question": QUESTION, "k": 1}).json()
    assert after["live"] != before and after["hits"][0]["source"] == "guides/webhooks.md"


def test_non_loopback_bind_needs_a_token_and_checks_it(project: Path) -> None:
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    port = _free_port()
    refused = _start(["serve", "--config", str(project / "config.yaml"), "--listen", f"0.0.0.0:{port}"], project)
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "token" in err
    for weak in ("   ", "abc123", "sixteen chars ok"):  # blank, short, a space: refused, never shown
        result = CliRunner().invoke(cli, ["serve", "--config", str(project / "config.yaml"), "--listen",
                                          f"0.0.0.0:{port}"], env={"DOCVEC_SERVE_TOKEN": weak})
        assert result.exit_code == 2 and "'serve.token'" in result.output, weak
        assert not weak.strip() or weak not in result.output
    token = "s3cret-token-value"
    proc = _start(["serve", "--config", str(project / "config.yaml"), "--listen", f"0.0.0.0:{port}"], project,
                  {"DOCVEC_SERVE_TOKEN": token})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        assert httpx.get(f"{url}/status").status_code == 401
        assert httpx.get(f"{url}/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(f"{url}/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and token not in ok.text
        for scheme in ("bearer", "BEARER", "Bearer  "):  # the scheme is case-insensitive (RFC 9110)
            assert httpx.get(f"{url}/status", headers={"Authorization": f"{scheme} {token}"}).status_code == 200
        assert httpx.get(f"{url}/status", headers={"Authorization": f"Basic {token}"}).status_code == 401
        via = CliRunner().invoke(cli, ["query", QUESTION, "--config", str(project / "config.yaml"), "-k", "1"],
                                 env={"DOCVEC_SERVE_TOKEN": token})
        assert via.exit_code == 0 and "webhooks.md" in via.output
    finally:
        err = _stop(proc)
    assert token not in err


def test_mcp_over_stdio_with_the_official_client(project: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    # The README's registration form: the configuration named by DOCVEC_CONFIG, started from another folder.
    params = StdioServerParameters(command=str(Path(sys.executable).with_name("docvec")), cwd="/",
                                   args=["serve", "--mcp"],
                                   env={**os.environ, "DOCVEC_CONFIG": str(project / "config.yaml")})

    async def session() -> tuple[Any, Any, Any, Any, Any]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            listed = (await s.list_tools()).tools
            found = await s.call_tool("search", {"question": QUESTION, "k": 2})
            got = await s.call_tool("get", {"source": "guides/webhooks.md", "start_line": 1, "end_line": 3})
            bad = await s.call_tool("get", {"source": "../config.yaml"})
            too_many = await s.call_tool("search", {"question": QUESTION, "k": 1001})
            return listed, found, got, bad, too_many

    listed, found, got, bad, too_many = anyio.run(session)
    assert {t.name for t in listed} == {"search", "get", "status"}
    k = next(t for t in listed if t.name == "search").input_schema["properties"]["k"]
    assert (k["minimum"], k["maximum"]) == (1, MAX_K)  # the limits of the CLI, HTTP and the API, in the schema
    assert too_many.is_error and "pydantic" not in too_many.content[0].text
    assert too_many.content[0].text.splitlines() == ["'k': input should be less than or equal to 1000 (got 1001)"]
    hits = found.structured_content["result"]
    assert hits[0]["source"] == "guides/webhooks.md" and "answer_lines" in hits[0] and "score" in hits[0]
    assert got.structured_content["text"].startswith("---") and not got.is_error
    assert bad.is_error and "relative to the docs folder" in bad.content[0].text


def _search_sources(url: str, question: str) -> list[str]:
    r = httpx.post(f"{url}/search", json={"question": question, "k": 3, "mode": "keyword"})
    return [h["source"] for h in r.json()["hits"]] if r.status_code == 200 else []


def _until(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("the index did not follow the folder in time")


def _watching(project: Path, debounce_ms: int) -> tuple[Path, subprocess.Popen[str], str]:
    """The sample docs indexed, and `docvec serve --watch` running on them: (config, process, url)."""
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text() + f"serve:\n  debounce_ms: {debounce_ms}\n")
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(cfg)]).exit_code == 0
    port = _free_port()
    proc = _start(["serve", "--watch", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"], project)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, proc)
    return cfg, proc, url


def test_watch_follows_edits_renames_deletes_and_temp_files(project: Path) -> None:
    cfg, proc, url = _watching(project, 200)
    docs = project / "docs"
    try:
        (docs / "zebra.md").write_text("# Zebra care\n\nFeed the zebra quinoa twice a day.\n")
        (docs / ".zebra.md.swp").write_text("editor swap file")
        _until(lambda: _search_sources(url, "zebra quinoa") == ["zebra.md"])
        tmp = docs / "guides" / ".zebra2.md.tmp"  # an editor's atomic save: write a temp file, rename over
        tmp.write_text("# Zebra care\n\nFeed the zebra oats instead.\n")
        os.replace(tmp, docs / "guides" / "zebra2.md")
        (docs / "zebra.md").unlink()
        _until(lambda: _search_sources(url, "zebra oats") == ["guides/zebra2.md"]
               and "zebra.md" not in _search_sources(url, "zebra quinoa"))
        (docs / "wombat.mdx").write_text("import X from './x';\n\n# Wombats\n\n<Note>Wombats dig burrows.</Note>\n")
        _until(lambda: _search_sources(url, "wombats dig burrows") == ["wombat.mdx"])  # every indexed ending
    finally:
        err = _stop(proc)
    assert "sync failed" not in err
    verify = _docvec(["verify", "--config", str(cfg), "--json"], project)
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stderr + err


def test_a_burst_of_a_thousand_files_is_one_sync(project: Path) -> None:
    _, proc, url = _watching(project, 1000)
    burst = project / "docs" / "burst"
    try:
        burst.mkdir()
        for i in range(1000):  # like a git checkout: many files at once (same text: embedded once, reused)
            (burst / f"page-{i:04d}.md").write_text("# Burst page\n\nThe aardvark ledger reconciles nightly.\n")
        _until(lambda: httpx.get(f"{url}/status").json()["files"] == 1000 + 12, timeout=180)
        time.sleep(1.5)  # a second sync would start within one quiet period
    finally:
        err = _stop(proc)
    syncs = [line for line in err.splitlines() if "synced:" in line]
    assert len(syncs) == 2 and "1000 added" in syncs[1], err  # the startup sync, then exactly one for the burst


def test_sigterm_during_a_watch_sync_leaves_a_consistent_index(project: Path) -> None:
    """SIGTERM lands just before the watch sync's first write (tests/termpoint.py): that window is written, the
    sync stops there, the server exits 0, and the index holds whole files only."""
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text() + "serve:\n  debounce_ms: 100\n")
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(cfg)]).exit_code == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.termpoint", "serve", "--watch", "--config", str(cfg),
                             "--listen", f"127.0.0.1:{port}"], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _wait_healthy(f"http://127.0.0.1:{port}", proc)
    more = project / "docs" / "more"
    more.mkdir()
    for i in range(150):  # distinct texts, more than one write window (128 chunks)
        (more / f"note-{i}.md").write_text(f"# Note {i}\n\n" + f"Item {i} covers topic {i * 7919 % 1009}. " * 30)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    report = json.loads(_docvec(["verify", "--config", str(cfg), "--json"], project).stdout)
    damage = {k: v for k, v in report.items() if isinstance(v, list) and v and k != "missing"}
    assert damage == {}, damage  # only not-yet-indexed files; nothing half-written or out of sync
    assert report["missing"], "the sync was meant to be stopped part-way"
    assert _docvec(["ingest", "-q", "--config", str(cfg)], project).returncode == 0
    assert json.loads(_docvec(["verify", "--config", str(cfg), "--json"], project).stdout)["ok"]


def test_every_command_has_help_including_serve() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "--mcp" in result.output and "--watch" in result.output
    assert (REPO / "serve" / "cli.py").exists()


def test_a_sync_by_another_process_is_seen_by_the_running_server(
        served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    url, project, _ = served
    (project / "docs" / "okapi.md").write_text("# Okapi\n\nThe okapi eats the leaves of tall trees.\n")
    assert _docvec(["ingest", "-q", "--config", str(project / "config.yaml")], project).returncode == 0
    for mode in ("hybrid", "vector", "keyword"):
        r = httpx.post(f"{url}/search", json={"question": "okapi leaves tall trees", "k": 1, "mode": mode})
        assert r.status_code == 200 and r.json()["hits"][0]["source"] == "okapi.md", (mode, r.text)
    (project / "docs" / "okapi.md").unlink()
    assert _docvec(["ingest", "-q", "--config", str(project / "config.yaml")], project).returncode == 0
    r = httpx.post(f"{url}/search", json={"question": "okapi leaves tall trees", "k": 3, "mode": "vector"})
    assert "okapi.md" not in [h["source"] for h in r.json()["hits"]]


def test_eval_through_the_server_equals_in_process(served: tuple[str, Path, subprocess.Popen[str]]) -> None:
    _, project, _ = served
    block = ("import sys; sys.modules['chromadb'] = None; sys.modules['onnxruntime'] = None; "
             "from docvec.cli import main; sys.argv = ['docvec'] + sys.argv[1:]; main()")
    args = ["eval", str(REPO / "data" / "eval.yaml"), "--config", str(project / "config.yaml"), "--json",
            "--mode", "hybrid", "--mode", "keyword"]
    via = subprocess.run([sys.executable, "-c", block, *args], cwd=project, capture_output=True, text=True)
    local = subprocess.run([sys.executable, "-m", "docvec.cli", *args, "--no-server"], cwd=project,
                           capture_output=True, text=True)
    assert "Traceback" not in via.stderr and via.returncode == local.returncode  # keyword misses 2 expectations
    assert via.stdout == local.stdout and len(via.stdout.splitlines()) == 2


def test_a_watch_sync_refused_by_a_manual_ingest_is_retried(project: Path) -> None:
    from docvec.lock import lock_path_for, writer_lock

    cfg, proc, url = _watching(project, 100)
    try:
        with writer_lock(lock_path_for(project / "index", "docvec")):  # a manual ingest holds the index
            (project / "docs" / "yak.md").write_text("# Yak grooming\n\nBrush the yak's winter coat weekly.\n")
            time.sleep(3)
            assert _search_sources(url, "yak winter coat") != ["yak.md"]
        _until(lambda: _search_sources(url, "yak winter coat") == ["yak.md"])  # retried once the lock is free
    finally:
        err = _stop(proc)
    assert "sync failed, will retry: another docvec process is writing this index" in err  # then the retry


def test_listen_is_judged_by_the_addresses_a_name_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """'localhost' that /etc/hosts maps to 0.0.0.0 is every interface: it needs a token like 0.0.0.0 does."""
    import socket as socket_module

    from docvec.errors import ConfigError
    from docvec.serve.cli import bind

    def every_interface(host: str, port: int, *a: object, **kw: object) -> list[tuple[object, ...]]:
        return [(socket_module.AF_INET, socket_module.SOCK_STREAM, 6, "", ("0.0.0.0", port))]

    monkeypatch.setattr(socket_module, "getaddrinfo", every_interface)  # the resolver is the network's edge
    with pytest.raises(ConfigError, match=r"localhost \(0\.0\.0\.0\).*token"):
        bind("localhost", 0, None)
    bind("localhost", 0, "a-token-of-16-chars").close()


def test_listen_on_port_0_serves_and_advertises_the_real_port(project: Path) -> None:
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    proc = _start(["serve", "--config", str(project / "config.yaml"), "--listen", "127.0.0.1:0"], project)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        while "http://" not in line and proc.poll() is None:
            line = proc.stderr.readline() if proc.stderr else ""
        port = int(line.split("http://127.0.0.1:", 1)[1].split(" ", 1)[0])
        assert port != 0
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/status").status_code == 200
        from docvec.remote import advert_path, read_advert

        advert = read_advert(advert_path(project / "index", "docvec")) or {}
        assert advert.get("url") == f"http://127.0.0.1:{port}", advert
    finally:
        _stop(proc)


def test_a_busy_port_is_one_line_naming_it_and_the_fix(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--config", str(project / "config.yaml"), "--listen",
                                          f"127.0.0.1:{port}"])
    assert result.exit_code != 0 and f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--listen" in result.output and "Traceback" not in result.output


def test_errors_never_carry_the_control_characters_of_the_request(served: tuple[str, Path, subprocess.Popen[str]]
                                                                   ) -> None:
    url, _, _ = served
    for source in ("\x1b[2Jevil.md", "a\x00b.md", "x\x9b31m.md"):
        r = httpx.post(f"{url}/get", json={"source": source})
        error = r.json()["error"]
        assert r.status_code in (400, 404) and not any(c in error for c in "\x1b\x00\x9b"), error


def test_every_http_answer_is_json_even_for_what_no_handler_expects(served: tuple[str, Path, subprocess.Popen[str]]
                                                                     ) -> None:
    url, _, _ = served
    deep = b'{"question":"token","where":' + b'{"$and":[' * 3000 + b"{}" + b"]}" * 3000 + b"}"
    answers = [httpx.post(f"{url}/search", content=deep, headers={"content-type": "application/json"}),
               httpx.get(f"{url}/nope"), httpx.get(f"{url}/search"), httpx.delete(f"{url}/status"),
               httpx.post(f"{url}/search", json={"question": "token", "where": {"source=guides/": "x"}}),
               httpx.post(f"{url}/search", json={"question": "token", "where": {"source": {"$in": ["guides/"]}}}),
               httpx.post(f"{url}/search", content=b'{"question":"token","k":1' + b"0" * 400 + b"}")]
    for r in answers:
        assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text[:100])
        assert 400 <= r.status_code < 500 and r.json()["error"], r.text[:200]
    assert "is not a key" in answers[4].json()["error"]


def test_the_api_refuses_where_keys_and_values_it_would_misread(project: Path) -> None:
    from docvec.errors import ConfigError

    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    index = docvec.open(config=str(project / "config.yaml"))
    for where in ({"source=guides/": "x"}, {"": "x"}, {"source": {"$ne": "guides/"}}, {"tag": ["auth"]}):
        with pytest.raises(ConfigError, match="where"):
            index.search("token", where=where)


def test_a_read_that_another_process_write_broke_is_read_again(project: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """Chroma fails a read whose vector index is behind another process's write ("Error finding id"; 1 query in
    ~600 under bench/concurrent_writes.py): the Index reopens what is stored and answers."""
    from docvec.errors import StoreError
    from docvec.store import Store

    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    index = docvec.open(config=str(project / "config.yaml"))
    expected = [h.id for h in index.search(QUESTION, k=5, mode="vector")]
    original = Store.query
    failures = [2]

    def behind(self: Store, *args: Any, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("reading vectors failed on collection 'docvec': Error finding id")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "query", behind)
    assert [h.id for h in index.search(QUESTION, k=5, mode="vector")] == expected and failures == [0]


def test_serve_watch_builds_a_missing_index_first(project: Path) -> None:
    port = _free_port()
    proc = _start(["serve", "--watch", "--config", str(project / "config.yaml"), "--listen", f"127.0.0.1:{port}"],
                  project)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        found = httpx.post(f"http://127.0.0.1:{port}/search", json={"question": QUESTION, "k": 1})
        assert found.status_code == 200 and found.json()["hits"], found.text
    finally:
        err = _stop(proc)
    assert "no index at" in err and "building it" in err and "docvec ingest" not in err


class _FakeLocalServer:
    """Something listening on the index's socket path that is not this index's docvec serve: it answers `reply`
    (bytes, sent `drip_s` apart one byte at a time when set)."""

    def __init__(self, path: Path, reply: bytes, drip_s: float = 0.0, mode: int = 0o600) -> None:
        import threading

        self.path, self.reply, self.drip_s = path, reply, drip_s
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, mode)
        self.sock.listen(4)
        self.asked = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.asked += 1
            with conn, contextlib.suppress(OSError):  # the client gave up on a dripping answer: its pipe is gone
                conn.recv(65536)
                for i in range(len(self.reply)) if self.drip_s else [None]:
                    conn.sendall(self.reply if i is None else self.reply[i:i + 1])
                    if self.drip_s:
                        time.sleep(self.drip_s)

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def _http(body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)


FORGED_HIT = {"rank": 1, "score": 0.99, "id": "x", "label": "root", "source": "../../../../etc/shadow", "line": 1,
              "end_line": 1, "text": "root:$6$forged"}


@pytest.mark.parametrize("case", ["open to others", "forged hits", "another collection", "drips", "no server"])
def test_query_talks_only_to_this_index_s_own_server(project: Path, case: str) -> None:
    """A socket that is not owner-only, an answer with forged hits or of another collection, a server that drips
    its answer: each is one note on stderr and an in-process answer, within seconds. No URL is ever followed."""
    from docvec.remote import socket_path, write_advert

    cfg = str(project / "config.yaml")
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", cfg]).exit_code == 0
    path = socket_path(project / "index", "docvec")
    fake = None
    if case != "no server":
        reply = _http({"hits": [FORGED_HIT], "live": "docvec--x" if case != "another collection" else "other--x",
                       "docs_root": "/etc"})
        fake = _FakeLocalServer(path, reply, drip_s=1.0 if case == "drips" else 0.0,
                                mode=0o666 if case == "open to others" else 0o600)
    else:  # an advert naming a URL, as anyone who can write the index folder could leave
        write_advert(project / "index" / "docvec-serve-docvec.json", "http://127.0.0.1:9", False,
                     str(project / "index"))
    try:
        started = time.monotonic()
        run = _docvec(["query", QUESTION, "--config", cfg, "-k", "3", "--json"], project)
        took = time.monotonic() - started
    finally:
        if fake is not None:
            fake.close()
    assert run.returncode == 0, run.stderr
    hits = [json.loads(line) for line in run.stdout.splitlines()]
    assert hits and all(not h["source"].startswith("..") and "forged" not in h["text"] for h in hits)
    assert took < 15
    notes = [line for line in run.stderr.splitlines() if line.startswith("note:")]
    if case == "no server":
        assert not notes
    else:
        assert len(notes) == 1 and "answering in this process" in notes[0], run.stderr
    if case == "open to others":
        assert fake is not None and fake.asked == 0


def test_mcp_over_stdio_answers_every_line_it_cannot_read(project: Path) -> None:
    """Malformed JSON, a batch, deep nesting, a 5,000-digit number, a lone surrogate: each gets a JSON-RPC error
    answer (the SDK dropped such lines and the client waited forever), and the session goes on."""
    import selectors

    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(project / "config.yaml")]).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "docvec.cli", "--config", str(project / "config.yaml"), "serve",
                             "--mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(line: bytes) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + b"\n")
        proc.stdin.flush()
        with selectors.DefaultSelector() as waiting:  # epoll: select() refuses the high fds of a long test run
            waiting.register(proc.stdout, selectors.EVENT_READ)
            assert waiting.select(timeout=30), f"no answer to {line[:60]!r}"
        return dict(json.loads(proc.stdout.readline()))

    try:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
        assert "result" in ask(json.dumps(init).encode())
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        for line in (b"{not json", json.dumps([{"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]).encode(),
                     b'{"jsonrpc":"2.0","id":3,"method":"ping","params":' + b"[" * 5000 + b"]" * 5000 + b"}",
                     b'{"jsonrpc":"2.0","id":' + b"1" * 5000 + b',"method":"tools/list"}',
                     b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"search","arguments":'
                     b'{"question":"\\ud800 token"}}}'):
            answer = ask(line)
            assert answer["error"]["code"] == -32700 and answer["id"] is None, answer
        assert "tools" in ask(b'{"jsonrpc":"2.0","id":6,"method":"tools/list"}')["result"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_hostile_adverts_and_watch_states_are_not_read(tmp_path: Path) -> None:
    """A symlink to /dev/zero, a FIFO, a huge file or a pid no process can have: refused without reading."""
    from docvec.remote import read_advert
    from docvec.watchstate import read as read_watch

    (tmp_path / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "huge.json").write_text('{"pid": 1, "url": "http://x", "pad": "' + "x" * 3_000_000 + '"}')
    (tmp_path / "pid.json").write_text('{"pid": ' + "9" * 40 + ', "url": "http://x", "state": "watching"}')
    for name in ("zero.json", "fifo.json", "huge.json", "pid.json"):
        assert read_advert(tmp_path / name) is None, name
    for name in ("zero.json", "fifo.json", "huge.json"):
        assert read_watch(tmp_path / name) is None, name
    assert (read_watch(tmp_path / "pid.json") or {}).get("state") == "stopped"


def test_serve_without_watch_refuses_a_missing_index_in_one_line(project: Path) -> None:
    done = _docvec(["serve", "--config", str(project / "config.yaml"), "--listen", f"127.0.0.1:{_free_port()}"],
                   project)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: no collection 'docvec' at {project / 'index'}: build it with `docvec ingest`, or start "
        "`docvec serve --watch`, which builds it first"]
