"""`docvec query` (and `python -m query`): ask the index a question from the shell."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import click

from docvec.cli import DocvecCommand, config_options, emit_json, load, store_location
from docvec.config import Settings
from docvec.embedders import Embedder, make_embedder
from docvec.errors import IndexNotFound
from query.search import Hit, parse_where, search

if TYPE_CHECKING:
    from docvec.store import Store


@click.command(cls=DocvecCommand)
@click.argument("question", nargs=-1, required=True)
@config_options
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), help="Number of results (query.top_k).")
@click.option("--min-score", type=click.FloatRange(-1.0, 1.0), help="Drop hits below this cosine similarity.")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Filter: source=FILE_OR_FOLDER/, tag=NAME, or a front-matter KEY=VALUE. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit, one per line.")
def query_command(question: tuple[str, ...], config_path: Path | None, index_path: Path | None,
                  collection: str | None, top_k: int | None, min_score: float | None, where: tuple[str, ...],
                  as_json: bool) -> None:
    """Print the chunks that best answer QUESTION: score, label, source:line, text."""
    text = " ".join(question).strip()
    if not text:
        raise click.UsageError("the question is empty")
    settings = load(config_path, {"store.path": index_path, "store.collection": collection,
                                  "query.top_k": top_k, "query.min_score": min_score})
    from docvec.store import Store

    store = Store.open(store_location(settings))
    if store.count() == 0:
        raise IndexNotFound(f"{store.location.describe()} is empty: run `docvec ingest` first")
    embedder = _index_embedder(store, settings)
    hits = search(store, embedder, text, settings.query.top_k, settings.query.min_score, parse_where(list(where)))
    if as_json:
        for hit in hits:
            emit_json(hit.as_dict())
    else:
        _render(hits)


def _index_embedder(store: "Store", settings: Settings) -> Embedder:
    """The model that built the index embeds the question; a different configured model is only reported."""
    built = store.fingerprint()
    e = settings.embedding
    if (built.provider, built.model) != (e.provider, e.model):
        click.echo(f"note: the index was built with {built.provider}:{built.model}, the configuration says "
                   f"{e.provider}:{e.model}; answering with the index's model", err=True)
    return make_embedder(built.provider, built.model, e.batch_size, e.threads)


def _render(hits: list[Hit]) -> None:
    if not hits:
        click.echo("no results (try a lower --min-score or fewer --where filters)", err=True)
        return
    width = max(40, min(shutil.get_terminal_size((100, 20)).columns, 120))
    for hit in hits:
        click.echo(f"{hit.rank}. {hit.score:.3f}  " + click.style(hit.label, bold=True))
        click.echo(f"   {hit.source}:{hit.start_line}")
        for line in textwrap.wrap(" ".join(hit.text.split()), width - 3, max_lines=3, placeholder=" …"):
            click.echo("   " + line)
        click.echo()


def main() -> None:
    """`python -m query`."""
    query_command(prog_name="python -m query")
