"""`docvec query` (and `python -m query`): ask the index a question from the shell."""

from __future__ import annotations

import contextlib
import os
import sys
import shutil
import threading
import textwrap
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import click

from docvec.cli import DocvecCommand, FiniteFloat, config_options, echo, emit_json, load
from docvec.text import one_line, printable
from docvec.chunker import valid_text
from docvec.settings import store_location
from docvec.config import Settings
from docvec.embedders import Embedder, make_embedder
from docvec.errors import IndexNotFound
from docvec.keyword import KeywordIndex, sync_keyword_index
from query.model import index_embedder
from query.search import MAX_K, MAX_QUERY_CHARS, MODES, Fusion, Hit, hit_from_dict, parse_where, search
from query.spans import SPAN_MODES, point

if TYPE_CHECKING:
    from docvec.fingerprint import Fingerprint
    from docvec.store import Store
    from query.evaluate import EvalReport


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
    view = _View(explain, as_json, files_only, settings.resolve(settings.docs.path))
    where_clause = parse_where(list(where))
    served = None if no_server else from_server(settings, text, list(where))
    if served is not None:  # a warm `docvec serve` of this index answered: no Chroma, no model here
        view.of_index(served[1]).show(served[0])
        return
    preload = _Preload(settings, text)  # model load and question embedding overlap opening the index
    from docvec.store import Store

    store = Store.open_for_reading(store_location(settings))
    if store.count() == 0:
        raise IndexNotFound(f"{store.location.describe()} is empty: run `docvec ingest` first")
    q = settings.query
    embedder, vector = preload.result(store.fingerprint())
    if embedder is None:
        embedder = _index_embedder(store, settings, optional=q.mode == "keyword")
    with open_keyword_index(store, q.mode) as keyword:
        hits = search(store, embedder, text, q.top_k, q.min_score, where_clause, q.mode, keyword,
                      fusion(settings), vector, q.per_file)
    if q.spans != "off":
        hits = point(hits, text, embedder if q.spans == "model" else None, vector)
    view.of_index(store.docs_root()).show(hits)


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


@dataclass(frozen=True)
class _View:
    """How hits are printed: JSON lines, one line per file, or the full text view."""

    explain: bool
    as_json: bool
    files_only: bool
    docs_root: Path  # the configured docs folder; the one the index records, once known (see of_index)

    def of_index(self, recorded: str | None) -> "_View":
        """The view with paths under the folder the index was built from (an index of another folder than the
        configured one shows its own files, not paths that do not exist)."""
        return replace(self, docs_root=Path(recorded)) if recorded else self

    def show(self, hits: list[Hit]) -> None:
        if self.as_json:
            for hit in hits:
                emit_json(hit.as_dict())
        elif self.files_only:
            for hit in hits:
                echo(f"{hit.score:.3f}  {one_line(self.path(hit))}:{hit.start_line}  {one_line(hit.label)}")
        else:
            _render(hits, self)

    def path(self, hit: Hit) -> str:
        """The hit's file as a path from the current folder (clickable in terminals and editors)."""
        full = self.docs_root / hit.source
        try:
            shown = os.path.relpath(full)
        except ValueError:  # another drive (Windows)
            return str(full)
        return shown if len(shown) <= len(str(full)) else str(full)


def from_server(settings: Settings, question: str, where: list[str], k: int | None = None,
                mode: str | None = None) -> tuple[list[Hit], str | None] | None:
    """The hits a running `docvec serve` of this index gives for the query settings, and the docs folder the index
    records; None when there is no such server, or its answer is in doubt (then one note on stderr)."""
    from docvec.remote import ask_local_server, socket_path

    location = store_location(settings)
    q = settings.query
    body = {"question": question, "k": k or q.top_k, "mode": mode or q.mode, "where": where, "min_score": q.min_score,
            "per_file": q.per_file, "spans": q.spans, "fusion": asdict(Fusion.of(q))}
    answer, doubt = ask_local_server(socket_path(location.path, location.collection, location.host), "/search",
                                     body)
    if answer is None:
        if doubt:
            echo(f"note: {doubt}; answering in this process", err=True)
        return None
    try:
        hits = _checked(answer, location.collection, k or q.top_k)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        echo(f"note: docvec serve's answer is malformed ({type(exc).__name__}: {exc}); answering in this process",
             err=True)
        return None
    return hits, answer["docs_root"]


def _checked(answer: Any, collection: str, k: int) -> list[Hit]:
    """The hits of an answer that is one of this index's: its live collection is this index's, its docs folder
    an absolute path, every hit well formed with a source inside that folder, no more than asked."""
    if not isinstance(answer, dict) or not isinstance(answer.get("hits"), list):
        raise ValueError("no list of hits")
    live, root = answer.get("live"), answer.get("docs_root")
    if not isinstance(live, str) or not live.startswith(f"{collection}--"):
        raise ValueError(f"it answers from collection {live!r}, not one of '{collection}'")
    if not isinstance(root, str) or not os.path.isabs(root) or len(answer["hits"]) > k:
        raise ValueError("no docs folder, or more hits than asked")
    hits = [hit_from_dict(h) for h in answer["hits"]]
    if any(os.path.isabs(h.source) or ".." in Path(h.source).parts for h in hits):
        raise ValueError("a source outside the docs folder")
    return hits


def fusion(settings: Settings) -> Fusion:
    """Hybrid fusion parameters from the settings."""
    return Fusion.of(settings.query)


@contextlib.contextmanager
def open_keyword_index(store: "Store", mode: str) -> Iterator[KeywordIndex | None]:
    """The keyword index, brought up to date with the collection, when the mode needs it."""
    if mode == "vector":
        yield None
        return
    with KeywordIndex.of(store) as index:
        sync_keyword_index(store, index, reader=True)
        yield index


class _Preload:
    """Loads the configured model and embeds the question in a thread while the main thread opens the index.

    A cold `docvec query` spends most of its time importing Chroma (~0.8 s) and loading the model (~0.4 s); done
    side by side they overlap. The result is used only if the index was built with exactly this embedder.
    """

    def __init__(self, settings: Settings, question: str) -> None:
        self._embedder: Embedder | None = None
        self._vector: Any = None
        if settings.embedding.provider == "ollama":
            import ollama  # noqa: F401 - imported here: two threads importing httpx at once is unsafe
        self._thread = threading.Thread(target=self._run, args=(settings, question), daemon=True)
        self._thread.start()

    def _run(self, settings: Settings, question: str) -> None:
        try:
            self._embedder = make_embedder(settings.embedding)
            self._vector = self._embedder.embed_query(question)
        except Exception:  # noqa: BLE001 - the main thread loads the index's model itself and reports errors
            self._embedder = None

    def result(self, built: "Fingerprint") -> tuple[Embedder | None, Any]:
        """The embedder and question vector, if they are the index's; else (None, None)."""
        self._thread.join()
        info = self._embedder.info if self._embedder is not None else None
        if info is None or (info.provider, info.model, info.digest, info.query_prefix, info.document_prefix) != \
                (built.provider, built.model, built.digest, built.query_prefix, built.document_prefix):
            return None, None
        return self._embedder, self._vector


def _index_embedder(store: "Store", settings: Settings, optional: bool = False) -> Embedder | None:
    """The index's own model; its notes (another model configured, a changed digest) go to stderr."""
    notes: list[str] = []
    try:
        return index_embedder(store, settings.embedding, optional, notes)
    finally:
        for note in notes:
            echo(note if note.startswith("warning:") else f"note: {note}", err=True)


def _render(hits: list[Hit], view: _View) -> None:
    if not hits:
        echo("no results (try a lower --min-score or fewer --where filters)", err=True)
        return
    width = max(40, min(shutil.get_terminal_size((100, 20)).columns, 120))
    for hit in hits:  # document text and names are neutralised: a document must not drive the terminal
        click.echo(f"{hit.rank}. {hit.score:.3f}  " + click.style(one_line(hit.label), bold=True))
        first, last = hit.answer_lines or (hit.start_line, hit.end_line)
        place = f"{first}" if first == last else f"{first}-{last}"
        echo(f"   {one_line(view.path(hit))}:{place}" + _also(hit))
        if view.explain:
            echo("   " + _explanation(hit))
        for line in _excerpt(hit, width - 3):
            click.echo("   " + (click.style(line, bold=True) if hit.answer_span else line))
        echo()


def _excerpt(hit: Hit, width: int, max_lines: int = 6) -> list[str]:
    """The pointed lines (else the chunk's first ones): code and table lines kept as lines (cut at the width),
    prose reflowed into paragraphs."""
    start, end = hit.answer_span or (0, len(hit.text))
    out: list[str] = []
    paragraph: list[str] = []
    fence = False

    def flush() -> None:
        if paragraph:
            out.extend(textwrap.wrap(" ".join(paragraph), width))
            paragraph.clear()
    for raw in hit.text[start:end].splitlines():
        line = printable(raw.rstrip())
        literal = fence or line.lstrip().startswith(("```", "~~~", "|")) or line.startswith(("    ", "\t"))
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        if literal or not line.strip() or line.lstrip().startswith(("- ", "* ", "#")) or line[:3].rstrip(".").isdigit():
            flush()
            if line.strip():
                out.append(line if len(line) <= width else line[:width - 1] + "…")
            if not literal and line.strip() and not line.lstrip().startswith("#"):
                out.pop()
                paragraph.append(line.strip())  # a list item starts its own paragraph
        else:
            paragraph.append(line.strip())
    flush()
    return out if len(out) <= max_lines else out[:max_lines - 1] + [out[max_lines - 1] + " …"]


def _also(hit: Hit) -> str:
    if not hit.also:
        return ""
    first = hit.also[0]
    more = f" and {len(hit.also) - 1} more" if len(hit.also) > 1 else ""
    return f"  (same text at {one_line(first.source)}:{first.start_line}{more})"


def _explanation(hit: Hit) -> str:
    sim = "-" if hit.similarity is None else f"{hit.similarity:.3f}"
    if hit.counted_similarity is not None:
        sim += f" (counted as {hit.counted_similarity:.3f}: the vector index's search missed it)"
    kw = "-" if hit.keyword_score is None else f"{hit.keyword_score:.2f}"
    lowered = f" · -{hit.penalty:.3f} for hits of its file above" if hit.penalty else ""
    return (f"similarity {sim} (vector rank {hit.vector_rank or '-'}) · bm25 {kw} "
            f"(keyword rank {hit.keyword_rank or '-'}){lowered} · chunk lines {hit.start_line}-{hit.end_line}")


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
    from docvec.store import Store
    from query.evaluate import DEPTH, evaluate, load_queries

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
        embedder = _index_embedder(store, settings, optional=all(m == "keyword" for m in modes or
                                                                  (settings.query.mode,)))
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
    from query.evaluate import evaluate

    def retrieve(question: str, mode: str) -> list[Hit]:
        served = from_server(settings, question, [], k, mode)
        if served is None:
            raise _ServerGone
        return served[0]
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
    """`python -m query`."""
    query_command(prog_name="python -m query")
