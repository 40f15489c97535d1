"""Metrics are the standard ones, aggregated to documents; YAML expectations gate CI through the exit code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from docvec.cli import cli
from docvec.errors import ConfigError
from docvec.query.evaluate import LabelledQuery, Relevant, load_queries, score_query
from docvec.query.hits import Hit
from tests.conftest import REPO


def _hit(source: str, trail: str = "") -> Hit:
    return Hit(0, 0.5, source + trail, "", source, 1, 1, "", {"trail": trail})


def test_chunks_aggregate_to_documents_before_scoring() -> None:
    hits = [_hit("a.md"), _hit("a.md"), _hit("b.md"), _hit("docs/31715818.md"), _hit("c.md")]
    q = LabelledQuery("1", "q", (Relevant("31715818"), Relevant("c.md")))
    s = score_query(q, hits, k=3)
    assert s.ranks == (3, 4)  # documents a, b, 31715818, c: the repeated a.md chunk does not push ranks down
    assert s.metrics["hit@1"] == 0 and s.metrics["hit@3"] == 1 and s.metrics["recall@3"] == 0.5
    assert s.metrics["mrr@10"] == pytest.approx(1 / 3)
    ideal = 1 + 1 / math.log2(3)
    assert s.metrics["ndcg@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / ideal)


def test_heading_relevance_counts_only_chunks_under_it() -> None:
    hits = [_hit("a.md", "A > Intro"), _hit("b.md"), _hit("a.md", "A > Tokens")]
    s = score_query(LabelledQuery("1", "q", (Relevant("a.md", "Tokens"),)), hits, k=10)
    assert s.ranks == (1,)  # the document's rank, reached through the chunk under the heading
    miss = score_query(LabelledQuery("1", "q", (Relevant("a.md", "Billing"),)), hits, k=10)
    assert miss.ranks == (None,) and miss.metrics["ndcg@10"] == 0


def test_loading_jsonl_and_yaml(tmp_path: Path) -> None:
    jl = tmp_path / "q.jsonl"
    jl.write_text(json.dumps({"id": "7", "query": "x", "relevant": ["d1", {"doc": "d2", "heading": "H"}]}) + "\n")
    assert load_queries(jl)[0].relevant == (Relevant("d1"), Relevant("d2", "H"))
    y = tmp_path / "e.yaml"
    y.write_text("- query: x\n  expect: a.md\n  within: 3\n")
    assert load_queries(y)[0].within == 3
    y.write_text("- query: x\n")
    with pytest.raises(ConfigError, match="item 1: expected keys 'query' and 'expect'"):
        load_queries(y)
    jl.write_text("{not json}\n")
    with pytest.raises(ConfigError, match="line 1"):
        load_queries(jl)


def test_eval_command_gates_on_expectations(project: Path) -> None:
    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", *cfg]).exit_code == 0
    good = project / "good.yaml"
    good.write_text('- query: "My API request keeps getting rejected even though I send a token."\n'
                    "  expect: guides/authentication-tokens.md\n")
    result = CliRunner().invoke(cli, ["eval", str(good), *cfg, "--mode", "vector", "--mode", "hybrid"])
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output and "vector" in result.output and "hybrid" in result.output
    bad = project / "bad.yaml"
    bad.write_text('- query: "My API request keeps getting rejected even though I send a token."\n'
                   "  expect: guides/billing-limits.md\n")
    result = CliRunner().invoke(cli, ["eval", str(bad), *cfg])
    assert result.exit_code == 1 and "FAIL" in result.output and "1 expectation(s) failed" in result.output
    as_json = CliRunner().invoke(cli, ["eval", str(good), *cfg, "--json"])
    assert json.loads(as_json.stdout.splitlines()[0])["means"]["hit@1"] == 1.0


def test_eval_compares_two_configurations_side_by_side(project: Path) -> None:
    cfg = project / "config.yaml"
    assert CliRunner().invoke(cli, ["ingest", "--config", str(cfg)]).exit_code == 0
    other = project / "other.yaml"
    other.write_text(cfg.read_text() + "query:\n  mode: keyword\n")
    good = project / "good.yaml"
    good.write_text('- query: "rotate a leaked key"\n  expect: guides/api-keys.md\n  within: 3\n')
    result = CliRunner().invoke(cli, ["eval", str(good), "--config", str(cfg), "--against", str(other), "--json"])
    assert result.exit_code == 0, result.output
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert names == ["hybrid (config.yaml)", "keyword (other.yaml)"]


def test_the_sample_eval_file_passes_on_a_fresh_index(project: Path) -> None:
    """README calls data/eval.yaml a CI gate: it must pass with the defaults, every time."""
    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", "-q", *cfg]).exit_code == 0
    result = CliRunner().invoke(cli, ["eval", str(REPO / "data" / "eval.yaml"), *cfg, "--per-query"])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output


def test_eval_scores_what_query_prints_unless_deep(project: Path) -> None:
    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", "-q", *cfg]).exit_code == 0
    question = "How do I page through a long list of results?"
    labelled = project / "q.jsonl"
    labelled.write_text(json.dumps({"id": "p", "query": question, "relevant": ["reference/pagination.md"]}) + "\n")
    printed = CliRunner().invoke(cli, ["query", question, "-k", "2", "--json", *cfg])
    docs = list(dict.fromkeys(json.loads(line)["source"] for line in printed.stdout.splitlines()))
    report = json.loads(CliRunner().invoke(cli, ["eval", str(labelled), "-k", "2", "--json", *cfg]).stdout)
    assert report["per_query"][0]["top"] == docs  # the same hits as `docvec query -k 2`
    assert "recall@100" not in report["means"]
    deep = json.loads(CliRunner().invoke(cli, ["eval", str(labelled), "-k", "2", "--deep", "--json", *cfg]).stdout)
    assert "recall@100" in deep["means"] and len(deep["per_query"][0]["top"]) > len(docs)
