"""The Ollama provider: the real `ollama` client against a loopback server speaking Ollama's API, faults included."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner, Result

from docvec.cli import cli
from docvec.config import load_settings
from docvec.embedders.ollama import prefixes_for
from tests.ollama_server import FakeModel, FakeOllama

QUESTION = "My API request keeps getting rejected even though I send a token."


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    srv = FakeOllama("hash").start()
    srv.add(FakeModel("all-minilm:latest"))
    srv.add(FakeModel("nomic-embed-text:latest", family="nomic-bert", context=2048, dimension=768))
    srv.add(FakeModel("llama3.2:latest", family="llama", dimension=3072, capabilities=["completion", "tools"]))
    yield srv
    srv.stop()


def _configure(project: Path, host: str, model: str = "all-minilm", **embedding: object) -> Path:
    cfg = project / "config.yaml"
    data = {"docs": {"path": str(project / "docs")}, "store": {"path": str(project / "index")},
            "embedding": {"provider": "ollama", "model": model, "host": host, "retries": 2, "batch_size": 8,
                          **embedding}}
    cfg.write_text(json.dumps(data))  # JSON is YAML
    return cfg


def _run(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [args[0], "--config", str(cfg), *args[1:]])


def _ingest(cfg: Path) -> tuple[Result, dict[str, object]]:
    result = _run(cfg, "ingest", "--json")
    line = result.stdout.strip().splitlines()[0] if result.stdout.strip() else "{}"
    return result, json.loads(line) if line.startswith("{") else {}


def _records(cfg: Path) -> dict[str, object]:
    from docvec.store import Store, StoreLocation

    index = json.loads(cfg.read_text())["store"]["path"]
    store = Store.open(StoreLocation(Path(index), "docvec"))
    return {rid: meta for rid, meta in store.iter_metadata()}


def test_ingest_and_query_through_ollama(project: Path, server: FakeOllama) -> None:
    cfg = _configure(project, server.url, keep_alive="10m")
    result, report = _ingest(cfg)
    assert result.exit_code == 0, result.output
    assert report["chunks_embedded"] == report["chunks_total"] > 0
    assert all(r["truncate"] is False and r["keep_alive"] == "10m" for r in server.requests)
    assert max(len(r["input"]) for r in server.requests) <= 8  # batch_size
    status = json.loads(_run(cfg, "status", "--json").stdout)
    assert (status["provider"], status["model"]) == ("ollama", "all-minilm:latest")
    assert status["fingerprint"]["digest"] == server.models["all-minilm:latest"].digest
    assert status["fingerprint"]["truncation"] == 512  # the context /api/show reported
    before = server.embed_count()
    query = _run(cfg, "query", QUESTION, "--json", "--mode", "vector")
    assert query.exit_code == 0, query.output
    assert server.embed_count() == before + 1
    rerun, again = _ingest(cfg)
    assert again["chunks_embedded"] == 0 and server.embed_count() == before + 1  # a no-op sync sends nothing


def test_family_prefixes_reach_the_server_and_the_fingerprint(project: Path, server: FakeOllama) -> None:
    cfg = _configure(project, server.url, model="nomic-embed-text")
    assert _ingest(cfg)[0].exit_code == 0
    assert all(t.startswith("search_document: ") for r in server.requests for t in r["input"])
    assert _run(cfg, "query", QUESTION, "--mode", "vector").exit_code == 0
    assert server.requests[-1]["input"] == [f"search_query: {QUESTION}"]
    # Another prefix would give other vectors: the index refuses to mix them.
    changed = _configure(project, server.url, model="nomic-embed-text", document_prefix="passage: ")
    result = _run(changed, "ingest")
    assert result.exit_code == 1 and "document_prefix" in result.output and "reindex" in result.output


def test_prefix_table() -> None:
    assert prefixes_for("embeddinggemma:300m", None, None) == ("task: search result | query: ", "title: none | text: ")
    assert prefixes_for("mxbai-embed-large", None, None)[1] == ""
    assert prefixes_for("snowflake-arctic-embed2:568m", None, None) == ("query: ", "")
    assert prefixes_for("jeffh/intfloat-multilingual-e5-large:f16", None, None) == ("query: ", "passage: ")
    assert prefixes_for("qwen3-embedding:0.6b", None, None)[0].startswith("Instruct: ")
    assert prefixes_for("bge-m3", None, None) == ("", "")
    assert prefixes_for("nomic-embed-text", "", "doc: ") == ("", "doc: ")  # config overrides the table


def test_ollama_host_variable_ranks_below_docvec_settings(tmp_path: Path) -> None:
    env = {"OLLAMA_HOST": "http://gpu-box:11434"}
    assert load_settings(None, env, cwd=tmp_path).embedding.host == "http://gpu-box:11434"
    assert load_settings(None, {}, cwd=tmp_path).embedding.host == "http://127.0.0.1:11434"
    (tmp_path / "config.yaml").write_text("embedding:\n  host: http://other:1\n")
    assert load_settings(None, env, cwd=tmp_path).embedding.host == "http://other:1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_down_is_one_line_naming_the_host(project: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    result = _run(_configure(project, url), "ingest")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: cannot reach Ollama at {url}: start it (`ollama serve`) or point embedding.host (or OLLAMA_HOST) "
        f"at it")
    assert not (project / "index").exists()


def test_model_not_pulled_and_chat_model_are_refused(project: Path, server: FakeOllama) -> None:
    result = _run(_configure(project, server.url, model="mxbai-embed-large"), "ingest")
    assert result.exit_code == 1 and "run `ollama pull mxbai-embed-large`" in result.output
    result = _run(_configure(project, server.url, model="llama3.2"), "ingest")
    assert result.exit_code == 1 and "not an embedding model (capabilities: completion, tools)" in result.output
    assert "allow_chat_models" in result.output
    # Explicitly allowed, the server's own refusal to embed comes through as one line.
    result = _run(_configure(project, server.url, model="llama3.2", allow_chat_models=True, concurrency=1),
                  "ingest")
    assert result.exit_code == 1 and "does not support embeddings" in result.output
    assert server.embed_count() == 1  # the refusal is not retried


def test_transient_500_and_dropped_connection_are_retried(project: Path, server: FakeOllama) -> None:
    cfg = _configure(project, server.url)
    server.faults.fail_embeds, server.faults.drop_embeds = 2, 1
    result, report = _ingest(cfg)
    assert result.exit_code == 0, result.output
    assert report["chunks_embedded"] == report["chunks_total"]
    assert server.faults.fail_embeds == 0 and server.faults.drop_embeds == 0  # the faults happened


def test_server_failing_mid_run_keeps_what_was_done_and_resumes(project: Path, server: FakeOllama) -> None:
    for i in range(40):  # enough chunks for several write windows
        (project / "docs" / f"extra-{i:02}.md").write_text(
            f"# Extra page {i}\n\n" + "\n\n".join(f"Paragraph {j} of page {i}: " + "filler words here " * 30
                                                  for j in range(8)))
    cfg = _configure(project, server.url, batch_size=16)
    server.faults.fail_after = 12  # the GPU box goes away after 12 requests
    result, _ = _ingest(cfg)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: Ollama at {server.url} failed to embed")
    kept = _records(cfg)
    assert 0 < len(kept)
    server.faults.fail_after = None
    result, report = _ingest(cfg)
    assert result.exit_code == 0, result.output
    assert report["chunks_embedded"] == report["chunks_total"] - len(kept)  # nothing embedded twice
    assert _run(cfg, "verify").exit_code == 0


def test_slow_server_names_the_timeout_setting(project: Path, server: FakeOllama) -> None:
    cfg = _configure(project, server.url, timeout=0.3, retries=0)
    server.faults.delay = 1.0
    result = _run(cfg, "ingest")
    assert result.exit_code == 1
    assert "did not answer within 0.3 s (embedding.timeout)" in result.output
    assert "raise embedding.timeout" in result.output
    assert not (project / "index").exists()  # nothing was written, and a failed first run leaves no empty index


def test_over_context_chunk_is_reported_never_truncated(project: Path, server: FakeOllama) -> None:
    # /api/show says 512, the runner really takes 120 tokens (as Ollama's num_ctx / batch limits do).
    server.add(FakeModel("tight:latest", context=512, enforced=120))
    cfg = _configure(project, server.url, model="tight")
    docs = project / "docs"
    shutil.rmtree(docs)
    docs.mkdir()
    (docs / "short.md").write_text("# Short\n\nA page that fits easily.\n")
    (docs / "other.md").write_text("# Other\n\nAnother page that fits.\n")
    long_para = " ".join(f"word{i}" for i in range(150))
    (docs / "long.md").write_text(f"# Long\n\nShort intro.\n\n## Body\n\n{long_para}\n")
    result, report = _ingest(cfg)
    assert result.exit_code == 0, result.output
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}  # type: ignore[union-attr]
    assert list(skipped) == ["long.md"] and "line 7 ('Long > Body')" in skipped["long.md"]
    assert "lower chunking.max_tokens" in skipped["long.md"]
    sources = {m["source"] for m in _records(cfg).values()}  # type: ignore[index]
    assert "long.md" not in sources and len(sources) == report["files_seen"] - 1
    assert not any(len(server.tokens(list(r["input"]))) and max(server.tokens(list(r["input"]))) > 120
                   and r.get("truncate", True) for r in server.requests)


def test_one_poisoned_input_is_bisected_and_reported(project: Path, server: FakeOllama) -> None:
    (project / "docs" / "bad.md").write_text("# Bad\n\nThis paragraph carries the POISON marker.\n")
    server.faults.poison = "POISON"
    cfg = _configure(project, server.url, retries=1)
    result, report = _ingest(cfg)
    assert result.exit_code == 0, result.output
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}  # type: ignore[union-attr]
    assert "Ollama fails on it every time (HTTP 500: llama runner process has terminated" in reasons["bad.md"]
    assert list(reasons) == ["bad.md"] and "line 1 ('Bad')" in reasons["bad.md"]
    assert report["chunks_total"] == report["chunks_embedded"] > 0
    assert len(server.requests) < 40  # bisection, not one request per text


def test_seed_question_through_ollama_with_the_real_model(project: Path) -> None:
    srv = FakeOllama("builtin").start()  # the built-in MiniLM behind Ollama's API, as `ollama pull all-minilm`
    try:
        srv.add(FakeModel("all-minilm:latest"))
        cfg = _configure(project, srv.url)
        assert _ingest(cfg)[0].exit_code == 0
        result = _run(cfg, "query", QUESTION, "--json", "--mode", "vector")
        hits = [json.loads(line) for line in result.stdout.splitlines()]
        assert hits[0]["source"] == "guides/authentication-tokens.md"
    finally:
        srv.stop()
