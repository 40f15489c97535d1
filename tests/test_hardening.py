"""Hardening round 2: each class of defect an outside attack found, tested on real folders and a real index."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from docvec.cli import cli
from docvec.system import available_cpus, cgroup_quota
from tests.test_crash import _corpus, signal_while_indexing

REPO = Path(__file__).resolve().parents[1]


def _cfg(root: Path, docs: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "config.yaml"
    cfg.write_text(f"docs:\n  path: {docs}\n{extra}store:\n  path: {root / 'index'}\n")
    return cfg


def _run(args: list[str], cfg: Path, input: str | None = None) -> "object":
    return CliRunner().invoke(cli, [*args[:1], "--config", str(cfg), *args[1:]], input=input)


def _strict_json(text: str) -> list[object]:
    """Parse NDJSON the way JSON.parse does: NaN and Infinity are errors."""
    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line.strip()]


# --- 0. the index remembers its docs folder; no run deletes most of it unasked -----------------------------------


def test_an_index_refuses_another_docs_folder_and_verify_takes_the_folder(tmp_path: Path, docs: Path) -> None:
    site = tmp_path / "site-docs"
    _corpus(site, 6, seed=3)
    cfg = _cfg(tmp_path / "p", docs)  # the config names the sample docs; the index is built from site-docs
    assert _run(["ingest", str(site), "-q"], cfg).exit_code == 0
    for args in (["verify"], ["verify", "--repair"], ["ingest", "--dry-run"], ["ingest"], ["reindex"]):
        result = _run(args, cfg)
        assert result.exit_code == 1, (args, result.output)
        assert f"was built from {site.resolve()}, not {docs.resolve()}" in result.output, result.output
        assert "--docs-moved" in result.output
        # What the message says works for this very command (reindex took no DOCS_DIR while told to pass one).
        assert f"pass {site.resolve()} as DOCS_DIR" in result.output
        assert _run([*args, str(site.resolve()), "-q" if args[0] != "verify" else "--wait"], cfg).exit_code == 0, args
    assert _run(["verify", str(site)], cfg).exit_code == 0  # verify takes the folder like ingest
    status = json.loads(_run(["status", "--json"], cfg).output)
    assert status["chunks"] > 0 and status["docs_root"] == str(site.resolve()) and status["files"] == 6
    moved = tmp_path / "moved-docs"
    shutil.copytree(site, moved)
    assert _run(["ingest", str(moved), "-q"], cfg).exit_code == 1
    assert _run(["ingest", str(moved), "-q", "--docs-moved"], cfg).exit_code == 0  # re-bound, nothing re-embedded
    assert json.loads(_run(["status", "--json"], cfg).output)["docs_root"] == str(moved.resolve())


def test_a_run_that_would_delete_most_of_the_index_asks_for_yes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 10, seed=4)
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    for f in sorted(docs.glob("*.md"))[:7]:
        f.unlink()  # an unmounted volume, a wrong checkout: most files are gone
    before = json.loads(_run(["status", "--json"], cfg).output)["chunks"]
    result = _run(["ingest", "-q"], cfg)
    assert result.exit_code == 1 and "--yes" in result.output and "nothing was changed" in result.output
    assert json.loads(_run(["status", "--json"], cfg).output)["chunks"] == before
    assert _run(["ingest", "-q", "--yes"], cfg).exit_code == 0


# --- 1, 4, 11. one path never blocks the others --------------------------------------------------------------------


def test_bad_names_long_paths_and_docvec_files_are_skipped_and_the_rest_indexed(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Good\n\nThe good page about webhooks.\n")
    (docs / os.fsdecode(b"bad\xff.md")).write_text("# Bad name\n\nText.\n")
    (docs / os.fsdecode(b"dir\xfe")).mkdir()
    (docs / os.fsdecode(b"dir\xfe") / "inner.md").write_text("# Inner\n\nText.\n")
    (docs / "..md").write_text("# Dots\n\nText.\n")
    (docs / "fm.md").write_text("---\nid: 99999999999999999999999\nratio: .nan\nbad: \"\\ud800\"\n---\n# FM\n\nBody.\n")
    deep = docs
    for _ in range(200):  # deeper than PATH_MAX
        deep = deep / ("d" * 30)
        try:
            os.mkdir(deep)
        except OSError:
            break
    cfg = _cfg(tmp_path / "p", docs, "  include: ['**/*']\n  skip_hidden: false\n")
    (tmp_path / "p" / "config.yaml").write_text(
        f"docs:\n  path: {docs}\n  include: ['**/*']\n  skip_hidden: false\nstore:\n  path: {docs / 'idx'}\n")
    result = _run(["ingest", "--json", "-v"], cfg)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.splitlines()[0])
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    assert "bad\\xff.md" in skipped and "not valid UTF-8" in skipped["bad\\xff.md"]
    assert "dir\\xfe/" in skipped
    assert report["files_added"] == 3  # good.md, ..md (skip_hidden off), fm.md: the odd front matter is stored
    assert "Traceback" not in result.output
    again = json.loads(_run(["ingest", "--json"], cfg).output.splitlines()[0])
    assert again["files_unchanged"] == 3 and again["files_added"] == 0  # the index (docs/idx) is not a document
    assert _run(["verify"], cfg).exit_code == 0


def test_hidden_files_are_listed_as_skipped(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 1, seed=1)
    (docs / "..md").write_text("# Dots\n\nText.\n")
    report = json.loads(_run(["ingest", "--json"], _cfg(tmp_path / "p", docs)).output.splitlines()[0])
    assert any(s["file"] == "..md" and "hidden" in s["reason"] for s in report["skipped"])


# --- 5. terminal escapes ---------------------------------------------------------------------------------------------


def test_query_text_neutralises_terminal_escapes_and_json_keeps_them(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    evil = "# Evil \x1b]0;pwned\x07 title\n\nWebhook signature \x1b[2J check \x1b]8;;http://evil.example\x07link\x1b]8;;\x07.\n"
    (docs / "evil.md").write_text(evil)
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    text = _run(["query", "webhook signature"], cfg).output
    assert "\x1b" not in text and "\x07" not in text and "\\x1b[2J" in text
    hit = _strict_json(_run(["query", "webhook signature", "--json"], cfg).output)[0]
    assert "\x1b[2J" in hit["text"]  # type: ignore[index]


def test_names_with_terminal_escapes_are_neutralised_in_every_command(tmp_path: Path) -> None:
    """File and folder names reach skip lines, summaries, status, verify, query and error messages: each prints
    them escaped, and --json escapes C1 controls (\x9b is a CSI) as \u009b: the same JSON value."""
    docs = tmp_path / "docs\x1b[2J"
    docs.mkdir()
    (docs / "ok\x9b31m.md").write_text("# Signing\n\nCheck the webhook signature.\n")
    (docs / "fm\x1b]0;title\x07.md").write_text("---\ntitle: x\n---\n")
    index = tmp_path / "idx"
    cfg = _cfg(tmp_path / "p", tmp_path / "unused")
    runs = [_run(["ingest", str(docs), "--index", str(index), "-v"], cfg),
            _run(["status", "--index", str(index)], cfg),
            _run(["verify", str(docs), "--index", str(index)], cfg),
            _run(["query", "webhook signature", "--index", str(index)], cfg),
            _run(["query", "webhook signature", "--index", str(index), "--files"], cfg),
            _run(["ingest", str(tmp_path / "gone\x1b]0;t\x07"), "--index", str(index)], cfg)]
    assert [r.exit_code for r in runs] == [0, 0, 0, 0, 0, 1], [r.output for r in runs]
    assert "fm\\x1b]0;title\\x07.md" in runs[0].stderr and "\\x1b[2J" in runs[1].stdout  # shown, escaped
    for r in runs:
        assert not any(c in r.stdout + r.stderr for c in "\x1b\x07\x9b"), r.stdout + r.stderr
    raw = _run(["query", "webhook signature", "--index", str(index), "--json"], cfg).stdout
    assert "\x9b" not in raw and "\\u009b" in raw
    assert _strict_json(raw)[0]["source"] == "ok\x9b31m.md"  # type: ignore[index]


# --- 6, 7. read-only commands write nothing; a missing index is one line ----------------------------------------------


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")} if path.exists() else {}


def test_read_only_commands_create_and_change_nothing(tmp_path: Path, docs: Path) -> None:
    empty = tmp_path / "emptydir"
    empty.mkdir()
    for args in (["status"], ["query", "token"], ["verify"], ["eval", str(REPO / "data" / "eval.yaml")]):
        result = CliRunner().invoke(cli, [args[0], "--index", str(empty), *args[1:]])
        assert result.exit_code == 1 and f"no index at {empty}" in result.output, result.output
        assert list(empty.iterdir()) == []
    gone = tmp_path / "gone"
    # ... nor do commands that change an index but never make one: a mistyped --index is not a new folder
    for args in (["query", "token"], ["rollback"], ["prune"], ["prune", "--all"]):
        result = CliRunner().invoke(cli, [args[0], "--index", str(gone), *args[1:]])
        assert result.exit_code == 1 and f"no index at {gone}" in result.output, result.output
        assert not gone.exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("not an index")
    result = CliRunner().invoke(cli, ["ingest", str(docs), "--index", str(a_file)])
    assert result.exit_code == 1 and f"the index path {a_file} is a file, not a folder" in result.output
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    before = _tree(tmp_path / "p" / "index")
    for args in (["status"], ["query", "token"], ["query", "token", "--mode", "keyword"], ["verify"]):
        assert _run(args, cfg).exit_code == 0
    assert _tree(tmp_path / "p" / "index") == before


# --- 9, 10. validation: finite numbers, strict JSON, usage errors, no secrets -------------------------------------------


@pytest.mark.parametrize("env,args", [
    ({"DOCVEC_DOCS_MAX_FILE_MB": ".nan"}, ["status"]),
    ({"DOCVEC_QUERY_MIN_SCORE": ".nan"}, ["query", "token"]),
    ({"DOCVEC_QUERY_VECTOR_WEIGHT": ".nan"}, ["query", "token"]),
    ({"DOCVEC_QUERY_KEYWORD_WEIGHT": "-.inf"}, ["query", "token"]),
    ({}, ["query", "token", "--min-score", "nan"]),
    ({}, ["query", "token", "--min-score", "inf"]),
    ({"DOCVEC_STORE_PATH": "~nosuchuser/idx"}, ["status"]),
])
def test_bad_numbers_and_paths_are_usage_errors(env: dict[str, str], args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and sum(line.startswith("Error") for line in result.output.splitlines()) == 1


def test_where_nan_is_text_and_json_is_strict(tmp_path: Path, docs: Path) -> None:
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    result = _run(["query", "token", "--where", "title=nan", "--json"], cfg)
    assert result.exit_code == 0 and _strict_json(result.output) == []
    unknown = _run(["query", "token", "--where", "x=nan", "--json"], cfg)
    assert unknown.exit_code == 2 and "no indexed file has a front-matter key 'x'" in unknown.output
    assert _strict_json(_run(["query", "token", "--json", "--explain"], cfg).output)
    assert _strict_json(_run(["status", "--json"], cfg).output)


@pytest.mark.parametrize("k,min_score,per_file,needle", [
    (5, float("nan"), 0, "min_score"), (5, 1.5, 0, "min_score"), (0, 0.0, 0, "k must be"), (True, 0.0, 0, "k must"),
    (5, 0.0, -1, "per_file"),
])
def test_every_entry_point_shares_one_number_check(tmp_path: Path, docs: Path, k: int, min_score: float,
                                                   per_file: int, needle: str) -> None:
    """The MCP tool and library callers reach search() without the CLI's or HTTP's checks: NaN min_score
    returned nothing at all, silently."""
    from docvec.errors import ConfigError
    from docvec.keyword import KeywordIndex
    from docvec.store import Store, StoreLocation
    from docvec.query.search import search

    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    store = Store.open_for_reading(StoreLocation(tmp_path / "p" / "index", "docvec"))
    with KeywordIndex.of(store, read_only=True) as keyword, pytest.raises(ConfigError, match=needle):
        search(store, None, "token", k, min_score, None, "keyword", keyword, per_file=per_file)


def test_output_that_cannot_be_written_is_one_line_or_nothing(tmp_path: Path, docs: Path) -> None:
    """stdout closed (`>&-`), on a full disk (/dev/full) or cut by `head`: never a traceback. A closed stdout
    crashed the read-only commands' fast exit ('NoneType' object has no attribute 'flush')."""
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    docvec = f"{sys.executable} -m docvec.cli"
    for command, redirect, code in (("status", ">&-", 0), ("query token -k 3", ">&-", 0),
                                    ("query token -k 3", ">/dev/full", 1), ("status --json", ">/dev/full", 1),
                                    ("query token -k 5 --json", "| head -c 10 >/dev/null; exit ${PIPESTATUS[0]}", 0)):
        run = subprocess.run(["bash", "-c", f"{docvec} {command} --config {cfg} {redirect}"], capture_output=True,
                             text=True)
        assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) <= 1, (command, redirect, run.stderr)
        assert run.returncode == code, (command, redirect, run.returncode, run.stderr)


def test_a_question_on_stdin_is_bounded_and_a_closed_stdin_is_one_line(tmp_path: Path, docs: Path) -> None:
    cfg = _cfg(tmp_path / "p", docs)
    docvec = f"{sys.executable} -m docvec.cli query - --config {cfg}"
    for shell, needle in ((f"{docvec} <&-", "stdin is closed"),  # was an AttributeError traceback
                          (f"head -c 50000000 /dev/zero | {docvec}", "over 10000 characters")):  # read it all
        run = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_fm_prefix_always_names_a_front_matter_key(tmp_path: Path) -> None:
    """A page's own `source:` or `tag:` in front matter is reachable as fm.source / fm.tag: `source=` filters on
    the file's path, `tag=` on the tags list."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("---\nsource: upstream/wiki.md\ntag: legacy\n---\n# A\n\nToken text.\n")
    (docs / "b.md").write_text("# B\n\nToken text too.\n")
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    for where in ("fm.source=upstream/wiki.md", "fm.tag=legacy", "source=a.md"):
        hits = _strict_json(_run(["query", "token", "--where", where, "--json"], cfg).output)
        assert [h["source"] for h in hits] == ["a.md"], where
    assert _strict_json(_run(["query", "token", "--where", "source=upstream/wiki.md", "--json"], cfg).output) == []


def test_undecodable_bytes_in_a_question_or_filter_are_replaced_not_a_traceback(tmp_path: Path, docs: Path) -> None:
    """A byte that is not UTF-8 in argv reaches Python as a lone surrogate, which the tokenizer, tantivy and Chroma
    refuse: it is a replacement character from the first step on, in every mode, from argv and stdin alike."""
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    for mode in ("hybrid", "vector", "keyword"):
        result = _run(["query", "rotate a leaked \udcff key", "--mode", mode, "--json"], cfg)
        assert result.exit_code == 0 and _strict_json(result.stdout), result.output
    assert _run(["query", "-", "--json"], cfg, input=b"rotate a leaked \xff key").exit_code == 0  # type: ignore[arg-type]
    filtered = _run(["query", "token", "--where", "tag=\udcff", "--json"], cfg)
    assert filtered.exit_code == 0 and _strict_json(filtered.stdout) == [], filtered.output


def test_a_tag_filter_on_an_index_without_tags_says_so(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nNo front matter here.\n")
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    result = _run(["query", "front matter", "--where", "tag=auth"], cfg)
    assert result.exit_code == 2 and "--where tag=…: no indexed file has tags" in result.output
    assert "(keys: source)" in result.output and "'tags'" not in result.output


@pytest.mark.parametrize("content,needle", [
    ("", "holds no queries"),
    ("- query: token\n  expect: {nonsense: 1}\n", "relevant item"),
    ("- query: token\n  expect: guides/x.md\n  wihtin: 3\n", "unknown key 'wihtin'"),
    ("- query: ''\n  expect: guides/x.md\n", "item 1: 'query' must be a question"),  # named, not a query error
    ("- query: token\n  expect: guides/x.md\n  expect: guides/y.md\n", "line 3: malformed YAML (key 'expect' appears"),
])
def test_bad_eval_files_fail_with_one_line(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text(content)
    result = CliRunner().invoke(cli, ["eval", str(path), "--index", str(tmp_path / "none")])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_header_values_and_url_user_info_are_never_printed(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--host", "localhost", "--port", "1",
                                      "--header", "Authorization: Bearer SECRET\r\nX-Injected: 1"])
    assert result.exit_code == 2 and "SECRET" not in result.output and "Authorization" in result.output
    env = {"DOCVEC_STORE_HEADERS": '{"Authorization": "Bearer SECRET2\\r\\nX: 1"}'}
    result = CliRunner().invoke(cli, ["status"], env=env)
    assert result.exit_code == 2 and "SECRET2" not in result.output
    env = {"DOCVEC_EMBEDDING_PROVIDER": "ollama", "DOCVEC_EMBEDDING_HOST": "http://user:hunter2@127.0.0.1:9"}
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path)], env=env)
    assert result.exit_code == 1 and "hunter2" not in result.output and "***@" in result.output


# --- 12. CPUs ------------------------------------------------------------------------------------------------------------


def test_cpus_follow_affinity_and_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None and available_cpus(tmp_path) == len(os.sched_getaffinity(0))
    code = "import os; os.sched_setaffinity(0, {0}); from docvec.system import available_cpus; print(available_cpus())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "1"


# --- 13, 15. SIGTERM like Ctrl-C; a failed first ingest leaves nothing; truthful counts ---------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # docker stop / CI cancel; a closed terminal
def test_sigterm_stops_between_writes_with_a_truthful_summary(tmp_path: Path, signum: int) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 200, seed=11)
    cfg = _cfg(tmp_path / "p", docs)
    proc = subprocess.Popen([sys.executable, "-m", "docvec.cli", "ingest", "--config", str(cfg)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = signal_while_indexing(proc, signum, 1.0)
    assert proc.returncode == 128 + signum, err
    assert "interrupted: what was stored is kept" in err and "Traceback" not in err
    held = int(err.split("index holds ")[1].split()[0])
    status = json.loads(_run(["status", "--json"], cfg).output)
    assert held == status["chunks"]  # the summary says what is stored
    assert status["interrupted_run"] is True
    assert _run(["ingest", "-q"], cfg).exit_code == 0 and _run(["verify"], cfg).exit_code == 0


def test_a_failed_first_ingest_leaves_no_empty_index(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.md").write_text("   \n")
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 1
    assert not (tmp_path / "p" / "index").exists()
    assert "no index at" in _run(["status"], cfg).output


def test_skip_reasons_are_summarised_and_listed_with_verbose(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 2, seed=2)
    for i in range(5):
        (docs / f"fm{i}.md").write_text("---\ntitle: only front matter\n---\n")
    cfg = _cfg(tmp_path / "p", docs)
    quiet = _run(["ingest", "-q"], cfg).output
    assert "skipped 5 files: no text besides front matter" in quiet and "fm3.md" not in quiet
    assert "skipped fm3.md: no text besides front matter" in _run(["ingest", "-q", "-v"], cfg).output


def test_keyword_queries_and_verify_need_no_model(tmp_path: Path, docs: Path) -> None:
    cfg = _cfg(tmp_path / "p", docs)
    assert _run(["ingest", "-q"], cfg).exit_code == 0
    env = {"DOCVEC_EMBEDDING_PROVIDER": "ollama", "DOCVEC_EMBEDDING_HOST": "http://127.0.0.1:9",
           "DOCVEC_EMBEDDING_MODEL": "nomic-embed-text"}
    index = str(tmp_path / "p" / "index")
    result = CliRunner().invoke(cli, ["verify", str(docs), "--index", index], env=env)
    assert result.exit_code == 0, result.output
    # The index's own (built-in) model answers; with it unavailable keyword mode still would: both work here.
    result = CliRunner().invoke(cli, ["query", "token rejected", "--mode", "keyword", "--index", index], env=env)
    assert result.exit_code == 0 and "authentication-tokens" in result.output
