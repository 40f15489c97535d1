"""The command line, end to end, with the real built-in model and a real Chroma folder in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from docvec.cli import SUBCOMMANDS, cli

QUESTION = "My API request keeps getting rejected even though I send a token."


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real ingest of the sample docs, shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("indexed")
    repo_docs = Path(__file__).resolve().parents[1] / "data" / "docs"
    (root / "config.yaml").write_text(f"docs:\n  path: {repo_docs}\nstore:\n  path: {root / 'index'}\n")
    result = CliRunner().invoke(cli, ["ingest", "--config", str(root / "config.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    return root


def _run(args: list[str], project: Path) -> "object":
    return CliRunner().invoke(cli, [*args[:1], "--config", str(project / "config.yaml"), *args[1:]])


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    assert len(result.output.split("\n\n")[1].strip()) > 10  # a real description


def test_root_help_lists_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and all(name in result.output for name in SUBCOMMANDS)


def test_token_question_finds_the_auth_article_first(indexed: Path) -> None:
    result = _run(["query", QUESTION, "-k", "20", "--json"], indexed)
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.splitlines()]
    sources = [h["source"] for h in hits]
    assert sources[0] == "guides/authentication-tokens.md"
    assert hits[0]["label"].startswith("Fix invalid API authentication tokens")
    first = {s: sources.index(s) for s in reversed(sources)}
    assert first["guides/api-keys.md"] < first["guides/billing-limits.md"]
    assert hits[0]["score"] >= hits[-1]["score"] and -1 <= hits[-1]["score"] <= 1


def test_query_text_output(indexed: Path) -> None:
    result = _run(["query", QUESTION, "-k", "2"], indexed)
    assert result.exit_code == 0
    assert result.output.startswith("1. 0.") and "guides/authentication-tokens.md:" in result.output
    assert "\n2. " in result.output and "\n3. " not in result.output


def test_where_filters_and_min_score(indexed: Path) -> None:
    result = _run(["query", QUESTION, "--where", "source=reference/", "--json"], indexed)
    assert {json.loads(x)["source"].split("/")[0] for x in result.output.splitlines()} == {"reference"}
    result = _run(["query", QUESTION, "--where", "tag=billing", "--json"], indexed)
    assert {json.loads(x)["source"] for x in result.output.splitlines()} == {"guides/billing-limits.md"}
    result = _run(["query", QUESTION, "--min-score", "0.99"], indexed)
    assert result.exit_code == 0 and "no results" in result.output


def test_status(indexed: Path) -> None:
    result = _run(["status", "--json"], indexed)
    data = json.loads(result.output)
    assert data["model"] == "all-MiniLM-L6-v2" and data["dimension"] == 384 and data["files"] == 12
    assert data["chunks"] > 12 and data["size_bytes"] > 0
    assert data["fingerprint"]["digest"] and data["fingerprint"]["max_tokens"] == 256
    text = _run(["status"], indexed).output
    assert "builtin:all-MiniLM-L6-v2" in text and "12 files" in text


def test_status_reads_no_record(indexed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any read of a record makes local Chroma load the collection's whole vector index (~2.5 KB a chunk), so
    status answers from the counts the last sync recorded; after an interrupted run it counts the records."""
    from docvec.store import Store

    exact = Store.count
    counted: list[int] = []
    monkeypatch.setattr(Store, "count", lambda self: counted.append(1) or exact(self))
    data = json.loads(_run(["status", "--json"], indexed).output)
    assert data["chunks"] > 12 and data["collections"][0]["chunks"] == data["chunks"] and not counted
    monkeypatch.setattr(Store, "writing", lambda self: True)
    assert json.loads(_run(["status", "--json"], indexed).output)["chunks"] == data["chunks"] and counted


def test_ingest_json_report_and_noop_rerun(project: Path) -> None:
    first = _run(["ingest", "--json"], project)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["files_added"] == 12 and report["chunks_embedded"] == report["chunks_total"] > 0
    again = json.loads(_run(["ingest", "--json"], project).stdout)
    assert again["files_unchanged"] == 12 and again["chunks_embedded"] == 0


def test_dry_run_on_a_new_index_creates_nothing(project: Path) -> None:
    result = _run(["ingest", "--dry-run"], project)
    assert result.exit_code == 0 and "dry run: nothing changed" in result.output
    assert not (project / "index").exists()


def test_skipped_files_are_reported_and_good_ones_indexed(project: Path) -> None:
    docs = project / "docs"
    (docs / "bad.md").write_bytes(b"\xff\xfe\x00garbage\x00\x00\xd8")
    (docs / "latin1.md").write_bytes(b"caf\xe9")
    result = _run(["ingest"], project)
    assert result.exit_code == 0
    assert "skipped latin1.md: not UTF-8" in result.output and "12 added" in result.output


def test_nothing_indexable_is_an_error(project: Path) -> None:
    empty = project / "empty"
    empty.mkdir()
    (empty / "a.md").write_text("   ")
    result = _run(["ingest", str(empty)], project)
    assert result.exit_code == 1 and "none of the 1 files" in result.output


@pytest.mark.parametrize("args, code, message", [
    (["query", "   "], 2, "the question is empty"),
    (["query", "x", "-k", "0"], 2, "0 is not in the range"),
    (["query", "x", "-k", "1000000000"], 2, "not in the range"),
    (["query", "x"], 1, "build it with `docvec ingest`"),
    (["status"], 1, "build it with `docvec ingest`"),
    (["ingest", "/nonexistent/docs"], 1, "does not exist"),
])
def test_errors_are_one_line_with_click_exit_codes(project: Path, args: list[str], code: int, message: str) -> None:
    result = _run(args, project)
    assert result.exit_code == code and message in result.output
    assert "Traceback" not in result.output


def test_bad_config_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("store:\n  paht: x\n")
    result = CliRunner().invoke(cli, ["status", "--config", str(tmp_path / "config.yaml")])
    assert result.exit_code == 2 and "did you mean 'path'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_huge_query_is_a_usage_error(indexed: Path) -> None:
    result = _run(["query", "word " * 200_000], indexed)
    assert result.exit_code == 2 and "the limit is 10000" in result.output


def test_stage_modules_run_with_python_m(indexed: Path) -> None:
    env = {**os.environ, "DOCVEC_CONFIG": str(indexed / "config.yaml")}
    q = subprocess.run([sys.executable, "-m", "docvec.query", QUESTION, "-k", "1", "--json"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout)["source"] == "guides/authentication-tokens.md"
    i = subprocess.run([sys.executable, "-m", "docvec.ingest", "--json"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert i.returncode == 0 and json.loads(i.stdout)["files_unchanged"] == 12


def test_stages_do_not_import_each_other() -> None:
    root = Path(__file__).resolve().parents[1]
    for stage, other in (("ingest", "query"), ("query", "ingest")):
        for path in (root / stage).glob("*.py"):
            text = path.read_text()
            assert f"from {other}" not in text and f"import {other}" not in text, path
    for path in list((root / "docvec").rglob("*.py")) + list((root / "ingest").glob("*.py")) + list(
            (root / "query").glob("*.py")):
        text = path.read_text()
        if path.name != "store.py":
            assert "import chromadb" not in text and "from chromadb" not in text, path
        if path.name != "cli.py":
            assert "import click" not in text and "from tqdm" not in text, path


def test_chunk_limit_above_the_model_context_is_refused(project: Path) -> None:
    (project / "config.yaml").write_text((project / "config.yaml").read_text() + "chunking:\n  max_tokens: 512\n")
    result = _run(["ingest"], project)
    assert result.exit_code == 2
    assert "chunking.max_tokens is 512 but all-MiniLM-L6-v2 reads at most 256 tokens" in result.output


def test_index_and_collection_flags_override_the_config(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    result = _run(["ingest", "--index", str(other), "--collection", "flagged", "--json"], project)
    assert result.exit_code == 0, result.output
    assert (other / ".docvec-flagged.lock").exists() and not (project / "index").exists()
    status = json.loads(_run(["status", "--index", str(other), "--collection", "flagged", "--json"], project).stdout)
    assert status["live"].startswith("flagged--") and status["files"] == 12


def test_query_shows_the_files_of_the_folder_the_index_was_built_from(project: Path, tmp_path: Path) -> None:
    """An index of another folder than the configured one prints that folder's paths, not the configured one's."""
    site = tmp_path / "site-docs"
    site.mkdir()
    (site / "keys.md").write_text("# Rotating keys\n\nRotate a leaked signing key at once.\n")
    index = tmp_path / "idx-site"
    assert _run(["ingest", str(site), "--index", str(index), "-q"], project).exit_code == 0
    for args in (["--files"], []):
        result = _run(["query", "rotate a leaked key", "--index", str(index), "-k", "1", *args], project)
        assert result.exit_code == 0, result.output
        shown = result.stdout.split()[1] if args else result.stdout.splitlines()[1].strip()
        assert Path(shown.rsplit(":", 1)[0]).resolve() == (site / "keys.md").resolve(), result.stdout
