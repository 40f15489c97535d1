"""Every command behaves the same against an embedded index and a real `chroma run` server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from docvec.cli import cli
from docvec.config import load_settings
from docvec.keyword import KeywordIndex, keyword_differences, sync_keyword_index
from docvec.lock import ServerLease
from docvec.settings import store_location
from docvec.store import GENERATION_KEY, LeaseBoard, Store, StoreLocation

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
    return _on_server(cfg, request.getfixturevalue("chroma_server")) if request.param == "server" else cfg


@pytest.fixture
def server_config(chroma_server: int, project: Path) -> Path:
    """The sample-docs project with its index on the Chroma server."""
    return _on_server(project / "config.yaml", chroma_server)


def _on_server(cfg: Path, port: int) -> Path:
    collection = f"t{abs(hash(str(cfg))) % 10**9}"  # one server serves every test: own collection each
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


def test_something_else_on_the_port_is_named_not_an_empty_error(project: Path) -> None:
    """Chroma re-raises a 404 from a server that is not Chroma as ValueError(''): the reason is the 404."""
    import http.server

    class NotChroma(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotChroma)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = project / "config.yaml"
        cfg.write_text(cfg.read_text().replace("store:\n", f"store:\n  host: http://127.0.0.1:{server.server_port}\n"))
        result = _run(["status"], cfg)
    finally:
        server.shutdown()
    assert result.exit_code == 1 and "404 Not Found" in result.output, result.output
    assert f"http://127.0.0.1:{server.server_port}:" in result.output  # the URL was taken apart, not doubled


def _location(cfg: Path) -> StoreLocation:
    from docvec.cli import load
    from docvec.settings import store_location

    return store_location(load(cfg, {}))


def test_a_writer_on_another_machine_is_refused_while_the_lease_is_held(server_config: Path) -> None:
    config = server_config
    board = LeaseBoard(_location(config))
    other = ServerLease(board)  # "machine A": nothing shared with this run but the Chroma server
    other.acquire(wait=False)
    board.write({**other._meta(), "pid": 4242, "host": "machine-a"})  # as machine A's own process wrote it
    refused = _run(["ingest", "-q"], config)
    assert refused.exit_code == 1
    assert "another docvec process is writing this index (pid 4242 on machine-a since " in refused.output
    # A holder that died stops renewing: the message says when its lease runs out and what --wait does then.
    assert "its lease expires at" in refused.output and "with --wait this run takes it over then" in refused.output
    other.release()
    assert _run(["ingest", "-q"], config).exit_code == 0
    assert board.read() is None  # released after the run
    assert json.loads(_run(["status", "--json"], config).output)["writer"] is None
    other = ServerLease(board)
    other.acquire(wait=False)
    assert json.loads(_run(["status", "--json"], config).output)["writer"].startswith(f"pid {os.getpid()} on ")
    other.release()


def test_a_dead_holders_lease_is_taken_over_after_it_expires(server_config: Path) -> None:
    config = server_config
    board = LeaseBoard(_location(config))
    board.create({"docvec:token": "dead", "pid": 1, "host": "crashed-box", "since": time.time() - 600,
                  "expires": time.time() - 1})
    result = _run(["ingest", "-q"], config)
    assert result.exit_code == 0, result.output
    assert board.read() is None


def test_a_lost_lease_is_noticed_on_the_next_heartbeat(server_config: Path) -> None:
    config = server_config
    board = LeaseBoard(_location(config))
    first = ServerLease(board, seconds=0.5)
    first.acquire(wait=False)
    assert first.beat() and first.lost is None
    time.sleep(0.6)  # first was paused longer than its lease: a second writer may take over
    second = ServerLease(board)
    second.acquire(wait=False)
    assert not first.beat()
    assert first.lost is not None and first.lost.startswith(f"taken by pid {os.getpid()}")
    first.release()  # must not release the new holder's lease
    assert board.read() is not None and board.read()["docvec:token"] == second.token  # type: ignore[index]
    waiter = ServerLease(board)
    threading.Timer(1.0, second.release).start()
    waiter.acquire(wait=True, poll=0.2)  # --wait: returns once the holder is done
    waiter.release()


def test_hnsw_settings_in_both_modes(config: Path) -> None:
    base = config.read_text()
    config.write_text(base.replace("store:\n", "store:\n  hnsw_ef_search: 50\n"))
    assert _run(["ingest", "-q"], config).exit_code == 0
    config.write_text(base.replace("store:\n", "store:\n  hnsw_ef_search: 80\n  hnsw_max_neighbors: 32\n"))
    changed = _run(["ingest", "-q"], config)
    assert changed.exit_code == 0, changed.output
    assert "hnsw ef_search 50 → 80" in changed.output
    assert "max_neighbors 16 → 32" in changed.output and "docvec reindex" in changed.output
    rebuilt = _run(["reindex", "-q", "--json"], config)
    assert rebuilt.exit_code == 0, rebuilt.output
    report = json.loads(rebuilt.stdout)
    assert report["switched"] and report["ingest"]["chunks_embedded"] == 0  # vectors copied, not re-embedded
    assert report["live"].endswith("-hnsw100x32")
    status = json.loads(_run(["status", "--json"], config).stdout)
    assert status["hnsw"]["max_neighbors"] == 32 and status["hnsw"]["ef_search"] == 80
    hits = [json.loads(x) for x in _run(["query", QUESTION, "--json"], config).stdout.splitlines()]
    assert hits[0]["source"] == "guides/authentication-tokens.md"
    assert "reindex" not in _run(["ingest", "-q"], config).output  # settled


def test_unknown_tenant_is_named(chroma_server: int, project: Path) -> None:
    cfg = project / "config.yaml"
    cfg.write_text(cfg.read_text().replace("store:\n", "store:\n  tenant: nope\n"))
    result = _run(["ingest", "-q", "--host", "127.0.0.1", "--port", str(chroma_server)], cfg)
    assert result.exit_code == 1
    assert f"at http://127.0.0.1:{chroma_server} (tenant nope, database default_database)" in result.output


def test_python_api_answers_from_an_embedded_index_and_a_chroma_server_alike(config: Path) -> None:
    import docvec

    assert _run(["ingest", "-q"], config).exit_code == 0  # type: ignore[attr-defined]
    with docvec.open(str(config)) as idx:
        hits = idx.search("How long are failed webhook deliveries retried?", k=2, mode="hybrid")
        assert hits[0].source == "guides/webhooks.md" and hits[0].answer_lines is not None
        assert idx.get("guides/webhooks.md", 1, 2).text.startswith("---")
        assert idx.status()["chunks"] > 0 and idx.status()["docs_root"]
        docs = Path(idx.status()["docs_root"])
        (docs / "guides" / "okapi.md").write_text("# Okapi\n\nThe okapi eats the leaves of tall trees.\n")
        report = idx.sync()
        assert report.files_added == ["guides/okapi.md"]
        assert idx.search("okapi leaves tall trees", k=1, mode="keyword")[0].source == "guides/okapi.md"


def _machine(cfg: Path, name: str) -> Path:
    """The same server index seen from another machine: its own folder for the writer lock and keyword index."""
    other = cfg.with_name(f"config-{name}.yaml")
    other.write_text(cfg.read_text().replace(f"path: {cfg.parent / 'index'}", f"path: {cfg.parent / name}"))
    assert other.read_text() != cfg.read_text()
    return other


def _open(cfg: Path) -> tuple[Store, KeywordIndex]:
    store = Store.open(store_location(load_settings(cfg, {})))
    return store, KeywordIndex.of(store)


def _another_machine_edits(cfg: Path) -> None:
    """Machine A (cfg) adds a word to one page and removes another, then syncs."""
    pages = sorted((cfg.parent / "docs").rglob("*.md"))
    pages[0].write_text(pages[0].read_text() + "\n\nThe zqxjournal paragraph was written on machine A.\n")
    pages[-1].unlink()
    result = _run(["ingest", "-q", "--yes"], cfg)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]


def test_another_machines_sync_reaches_a_keyword_index_by_the_ids_it_touched(
        server_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client's keyword index catches up with another machine's sync by the chunk ids that sync touched (the
    server's journal), not by reading every record: at a million chunks a 1 % sync costs 1 % of a comparison."""
    assert _run(["ingest", "-q"], server_config).exit_code == 0  # type: ignore[attr-defined]
    b = _machine(server_config, "machine-b")
    store, index = _open(b)
    with index:
        assert sync_keyword_index(store, index) == store.count()  # B's first build reads every record
    _another_machine_edits(server_config)
    full_reads: list[int] = []
    every = Store.iter_metadata
    monkeypatch.setattr(Store, "iter_metadata", lambda self: full_reads.append(1) or every(self))
    store, index = _open(b)
    with index:
        changed = sync_keyword_index(store, index)
        assert full_reads == [] and 0 < changed < store.count()
        assert [h.id for h in index.search("zqxjournal", 3)]
        monkeypatch.setattr(Store, "iter_metadata", every)
        assert keyword_differences(store, index) == ([], [])  # exactly the collection's rows, as a full compare


def test_a_sync_the_journal_does_not_cover_is_caught_up_by_comparing_every_record(
        server_config: Path) -> None:
    """A generation without a complete journal entry (an entry lost, a run after one that died, a writer that does
    not know what it touched) is never trusted: the client compares every record and ends exact."""
    assert _run(["ingest", "-q"], server_config).exit_code == 0  # type: ignore[attr-defined]
    b = _machine(server_config, "machine-b")
    store, index = _open(b)
    with index:
        sync_keyword_index(store, index)
    _another_machine_edits(server_config)
    store, index = _open(b)
    journal = store._journal_collection(create=False)
    generation = int(store.collection_metadata()[GENERATION_KEY])
    assert store.touched_between(generation - 1, generation)  # the edit's entry is there ...
    journal.delete(ids=[f"{generation}-0"])  # ... until part of it is lost
    assert store.touched_between(generation - 1, generation) is None
    with index:
        assert sync_keyword_index(store, index) > 0
        assert [h.id for h in index.search("zqxjournal", 3)]
        assert keyword_differences(store, index) == ([], [])


def test_a_dead_runs_journal_entry_is_replaced_by_the_next_runs(server_config: Path) -> None:
    """A run killed after its journal entry but before its generation leaves an entry for a generation that the
    next run makes: that run's own entry replaces it (the next writer after a dead run records none)."""
    assert _run(["ingest", "-q"], server_config).exit_code == 0  # type: ignore[attr-defined]
    store, _ = _open(server_config)
    generation = int(store.collection_metadata()[GENERATION_KEY])
    store._journal(generation + 1, ["0" * 32, "f" * 32])  # what a killed run wrote
    _another_machine_edits(server_config)
    store, _ = _open(server_config)
    assert int(store.collection_metadata()[GENERATION_KEY]) == generation + 1
    touched = store.touched_between(generation, generation + 1)
    assert touched and not {"0" * 32, "f" * 32} & touched
