"""`docvec query` (and `python -m docvec.query`): ask the index a question from the shell."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from docvec.cli import DocvecCommand, FiniteFloat, config_options, echo, emit_json, load
from docvec.config import Settings
from docvec.query import client
from docvec.query.hits import Hit, docs_relative, hit_from_dict, parse_where
from docvec.query.limits import MAX_K, MAX_QUERY_CHARS, MODES, SPAN_MODES
from docvec.query.render import Printer, View
from docvec.remote import ask_local_server, socket_path
from docvec.settings import store_location
from docvec.text import printable, valid_text

# The command answers through a running `docvec serve` importing none of numpy, Chroma, onnxruntime or tantivy;
# what answers in this process (query/local.py) is imported only when no server did.
if TYPE_CHECKING:
    from docvec.query.evaluate import EvalReport


@click.command(cls=DocvecCommand)
@click.argument("question", nargs=-1, required=True)
@config_options
@click.option("-k", "--top-k", type=click.IntRange(1, MAX_K), help="Number of results (query.top_k, default 5).")
@click.option("--min-score", type=FiniteFloat(-1.0, 1.0),
              help="Drop hits whose relevance (the score before the same-file penalty) is below this.")
@click.option("--per-file", type=click.IntRange(0, 1000), metavar="N",
              help="At most N hits from one file; 0: no cap (query.per_file).")
@click.option("--file-penalty", type=FiniteFloat(0.0, 2.0), metavar="P",
              help="Lower a hit's score by P for each hit of its file above it; 0: off (query.file_penalty, "
                   "default 0.05).")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Filter: source=FILE_OR_FOLDER/, tag=NAME, or a front-matter KEY=VALUE. Repeatable.")
@click.option("--mode", type=click.Choice(MODES),
              help="Ranking: vector, keyword (bm25) or hybrid (query.mode, default hybrid).")
@click.option("--explain", is_flag=True, help="Show each hit's similarity, bm25 score and their ranks.")
@click.option("--spans", type=click.Choice(SPAN_MODES),
              help="Point each hit at its answering lines by the question's words (fast), the model as well "
                   "(more precise, ~0.3 s), or not at all (query.spans, default words).")
@click.option("--files", "files_only", is_flag=True, help="List matching files once each (best chunk per file).")
@click.option("--no-server", is_flag=True, help="Answer in this process even when `docvec serve` runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit, one per line.")
def query_command(question: tuple[str, ...], config_path: Path | None, index_path: Path | None,
                  collection: str | None, top_k: int | None, min_score: float | None, per_file: int | None,
                  file_penalty: float | None, where: tuple[str, ...], mode: str | None, explain: bool,
                  spans: str | None, files_only: bool, no_server: bool, as_json: bool) -> None:
    """Print the chunks that best answer QUESTION (- reads it from stdin): score, label, source:lines, text."""
    # Undecodable bytes become replacement characters, whatever the locale: read from stdin as bytes, and in argv
    # they arrive as lone surrogates
    if question == ("-",):
        text = _read_question()
    else:
        text = valid_text(" ".join(question)).strip()
    if not text:
        raise click.UsageError("the question is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise click.UsageError(f"the question is {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
    settings = load(config_path, {"store.path": index_path, "store.collection": collection,
                                  "query.top_k": top_k, "query.min_score": min_score, "query.mode": mode,
                                  "query.per_file": 1 if files_only else per_file, "query.spans": spans,
                                  "query.file_penalty": file_penalty})
    docs = settings.resolve(settings.docs.path)
    view = View(explain, as_json, files_only, docs)
    filters = [_as_docs_relative(w, docs) for w in where]  # a path as hits print it works here too
    where_clause = parse_where(filters)
    served = None if no_server else from_server(settings, text, filters)
    if served is not None:  # a warm `docvec serve` of this index answered: no Chroma, no model here
        _remember(config_path, index_path, collection)
        hits, root = served[0], served[1]
    else:
        from docvec.query.local import answer_here  # numpy, Chroma and the model: only when no server answered

        found, recorded = answer_here(settings, text, where_clause, note=lambda line: echo(line, err=True))
        hits, root = [hit.as_dict() for hit in found], recorded or str(docs)
    view.of_index(root).show(hits, Printer())
    sources = [s for s in map(client.source_filter, filters) if s is not None]
    if not hits and sources and not as_json:
        echo(f"note: with --where source={sources[0]} nothing matched; source= takes a file or a folder/ of the docs "
             f"folder {root}, relative to it (as --json shows `source`) or as a path from here", err=True)


def _as_docs_relative(item: str, docs: Path) -> str:
    """`source=PATH` with PATH as docvec prints it (from the current folder) -> the docs-relative path."""
    value = client.source_filter(item)
    return item if value is None else f"source={docs_relative(value, docs)}"


def _remember(config_path: Path | None, index_path: Path | None, collection: str | None) -> None:
    """Record the settings this query resolved for the warm client (query/client.py), when it would have read
    the same config file, and no Chroma server flag changed where the index is."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and any(k.startswith("store.") for k in ctx.meta.get("docvec.flags", {})):
        return
    cwd = os.getcwd()
    config = client.config_choice(str(config_path) if config_path else None, os.environ, cwd)
    key = client.cache_key(cwd, config, str(index_path) if index_path else None, collection, os.environ)
    if client.current_entry(key, config, os.environ) is not None:
        return  # recorded already (the full CLI answered for another reason): no second read of the config
    identity = client.file_identity(config)
    base = load(config_path, {"store.path": index_path, "store.collection": collection})  # without -k and such
    if base.config_file is None or os.path.realpath(config) != str(base.config_file):
        return  # the settings came from another file (a parent folder's, the user's): the full CLI finds those
    location = store_location(base)
    client.remember(key, config, identity, str(socket_path(location.path, location.collection, location.host)),
                    location.collection, asdict(base.query), os.environ)


def _read_question() -> str:
    """The question piped in, read no further than a question may be long (`cat /dev/zero | docvec query -`
    must not fill memory), as text whatever the locale."""
    if sys.stdin is None:
        raise click.UsageError("stdin is closed: pass the question as an argument, or pipe it in with -")
    limit = 4 * MAX_QUERY_CHARS  # UTF-8 needs at most 4 bytes a character
    raw = sys.stdin.buffer.read(limit + 1)
    if len(raw) > limit:
        raise click.UsageError(f"the question on stdin is over {MAX_QUERY_CHARS} characters; the limit is "
                               f"{MAX_QUERY_CHARS}")
    return raw.decode("utf-8", "replace").strip()


def from_server(settings: Settings, question: str, where: list[str], k: int | None = None,
                mode: str | None = None) -> tuple[list[dict[str, Any]], str] | None:
    """The hits a running `docvec serve` of this index gives for the query settings, and the docs folder the index
    records; None when there is no such server, or its answer is in doubt (then one note on stderr)."""
    location = store_location(settings)
    q = settings.query
    body = client.request_body(question, where, {**asdict(q), "top_k": k or q.top_k, "mode": mode or q.mode})
    answer, doubt = ask_local_server(socket_path(location.path, location.collection, location.host), "/search",
                                     body)
    if answer is None:
        if doubt:
            echo(f"note: {doubt}; answering in this process", err=True)
        return None
    try:
        return client.checked_hits(answer, location.collection, k or q.top_k)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        echo(f"note: docvec serve's answer is malformed ({type(exc).__name__}: {exc}); answering in this process",
             err=True)
        return None


@click.command(cls=DocvecCommand)
@click.argument("queries", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@config_options
@click.option("--mode", "modes", multiple=True, type=click.Choice(MODES),
              help="Ranking(s) to evaluate, one column each (default: query.mode). Repeatable.")
@click.option("--against", "others", multiple=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Another config file (another index or model) to evaluate side by side. Repeatable.")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Hits per question, as `docvec query -k K` returns them; cut-off for hit@k, recall@k.")
@click.option("--deep", is_flag=True, help="Rank 100 documents per question instead (recall@100; published IR "
                                           "figures are computed this way).")
@click.option("--per-query", is_flag=True, help="Also list each query's rank of its first relevant document.")
@click.option("--no-server", is_flag=True, help="Answer in this process even when `docvec serve` runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per evaluated column.")
def eval_command(queries: Path, config_path: Path | None, index_path: Path | None, collection: str | None,
                 modes: tuple[str, ...], others: tuple[Path, ...], k: int, deep: bool, per_query: bool,
                 no_server: bool, as_json: bool) -> None:
    """Score labelled QUERIES (JSONL, or YAML expectations) against the index; exit 1 if an expectation fails."""
    from docvec.keyword import KeywordIndex
    from docvec.query.evaluate import DEPTH, evaluate, load_queries
    from docvec.query.local import fusion, notified_embedder, open_keyword_index
    from docvec.query.search import search
    from docvec.store import Store

    labelled = load_queries(queries)
    overrides = {"store.path": index_path, "store.collection": collection}
    reports: list[EvalReport] = []
    for cfg in (config_path, *others):
        settings = load(cfg, overrides if cfg == config_path else {})
        served = None if no_server or deep else _eval_via_server(settings, labelled, modes, k, cfg if others else None)
        if served is not None:  # a running `docvec serve` of this index answered every question
            reports.extend(served)
            continue
        store = Store.open_for_reading(store_location(settings))
        embedder = notified_embedder(store, settings, lambda line: echo(line, err=True),
                                     optional=all(m == "keyword" for m in modes or (settings.query.mode,)))
        for mode in modes or (settings.query.mode,):
            name = f"{mode}" + (f" ({cfg.name})" if others and cfg else "")
            with open_keyword_index(store, mode) as keyword:
                def retrieve(question: str, mode: str = mode, kw: KeywordIndex | None = keyword,
                             q: Any = settings.query) -> list[Hit]:
                    if deep:  # every chunk counts: documents are ranked by their best chunk, 100 deep
                        return search(store, embedder, question, DEPTH * 3, -1.0, None, mode, kw, fusion(settings))
                    return search(store, embedder, question, k, q.min_score, None, mode, kw, fusion(settings),
                                  None, q.per_file)  # what `docvec query -k K` prints
                reports.append(evaluate(name, labelled, retrieve, k, deep=deep))
    if as_json:
        for report in reports:
            emit_json(report.as_dict())
    else:
        _render_eval(reports, per_query)
    failed = sum(len(r.failures) for r in reports)
    if failed:
        raise click.ClickException(f"{failed} expectation(s) failed")


class _ServerGone(Exception):
    """The server stopped answering part-way: the evaluation is redone in-process."""


def _eval_via_server(settings: Settings, labelled: list[Any], modes: tuple[str, ...], k: int,
                     cfg: Path | None) -> list["EvalReport"] | None:
    """Every mode's report computed from a running server's answers, or None when there is none."""
    from docvec.query.evaluate import evaluate

    def retrieve(question: str, mode: str) -> list[Hit]:
        served = from_server(settings, question, [], k, mode)
        if served is None:
            raise _ServerGone
        return [hit_from_dict(h) for h in served[0]]
    try:
        return [evaluate(f"{mode}" + (f" ({cfg.name})" if cfg else ""), labelled,
                         lambda question, mode=mode: retrieve(question, mode), k)  # type: ignore[misc]
                for mode in modes or (settings.query.mode,)]
    except _ServerGone:
        return None


def _render_eval(reports: list["EvalReport"], per_query: bool) -> None:
    width = max(12, *(len(r.name) + 2 for r in reports))
    echo(f"{len(reports[0].queries)} queries".ljust(14) + "".join(r.name.rjust(width) for r in reports))
    for metric in reports[0].means:
        echo(metric.ljust(14) + "".join(f"{r.means[metric]:.4f}".rjust(width) for r in reports))
    for r in reports:
        for q in (r.queries if per_query else r.failures):
            status = {True: "PASS", False: "FAIL", None: "    "}[q.passed]
            ranks = ",".join("-" if x is None else str(x) for x in q.ranks)
            echo(printable(f"{status} [{r.name}] {q.id}: rank {ranks} — {q.query[:70]} → top: "
                                 f"{', '.join(q.top[:3])}"))


def main() -> None:
    """`python -m docvec.query`."""
    query_command(prog_name="python -m docvec.query")
