"""`docvec ingest` (and `python -m ingest`): sync a docs folder into the index."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import click

from docvec.cli import (DocvecCommand, chunk_params, config_options, emit_json, load, make_configured_embedder,
                        store_location)
from docvec.config import Settings
from docvec.errors import SourceError
from docvec.fingerprint import Fingerprint
from docvec.lock import lock_path_for, writer_lock
from ingest.pipeline import IngestReport, Progress, check_fingerprint, index_exists, ingest, open_for_writing
from ingest.scan import ScanOptions


@click.command(cls=DocvecCommand)
@click.argument("docs_dir", required=False, type=click.Path(path_type=Path))
@config_options
@click.option("--dry-run", is_flag=True, help="Show what would be embedded and deleted; change nothing.")
@click.option("--wait", is_flag=True, help="Wait for another ingest of this index to finish instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def ingest_command(docs_dir: Path | None, config_path: Path | None, index_path: Path | None,
                   collection: str | None, dry_run: bool, wait: bool, as_json: bool, quiet: bool) -> None:
    """Sync DOCS_DIR (default: docs.path) into the index: embed what changed, delete what is gone."""
    settings = load(config_path, {"docs.path": str(docs_dir) if docs_dir else None, "store.path": index_path,
                                  "store.collection": collection})
    embedder = make_configured_embedder(settings)
    fingerprint = Fingerprint.build(embedder.info, chunk_params(settings))
    location = store_location(settings)
    with _progress_bar(quiet or as_json) as on_progress:
        if dry_run:
            store = index_exists(location)
            if store is not None:
                check_fingerprint(store, fingerprint)
            report = ingest(store, embedder, scan_options(settings), chunk_params(settings), True, on_progress)
        else:
            with writer_lock(lock_path_for(location.path, location.collection), wait=wait):
                store = open_for_writing(location, fingerprint)
                report = ingest(store, embedder, scan_options(settings), chunk_params(settings), False, on_progress)
    _render(report, settings, as_json)
    if report.files_seen and not (report.files_added or report.files_changed or report.files_unchanged):
        raise SourceError(f"none of the {report.files_seen} files in {settings.resolve(settings.docs.path)} "
                          f"could be indexed (see the reasons above)")


def scan_options(settings: Settings) -> ScanOptions:
    """Which files of the configured docs folder are indexed."""
    d = settings.docs
    return ScanOptions(settings.resolve(d.path), tuple(d.include), tuple(d.exclude), d.skip_hidden,
                       d.follow_symlinks)


@contextlib.contextmanager
def _progress_bar(disabled: bool) -> Iterator[Any]:
    """A tqdm bar on stderr that follows the pipeline's progress callbacks, phase by phase."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}
    labels = {"chunk": "chunking", "embed": "embedding", "delete": "deleting"}

    def on_progress(p: Progress) -> None:
        if disabled or p.total == 0:
            return
        bar = bars.get(p.phase)
        if bar is None:
            bar = bars[p.phase] = tqdm(total=p.total, desc=labels.get(p.phase, p.phase), unit=" chunks"
                                       if p.phase == "embed" else " files", leave=False, dynamic_ncols=True)
        bar.total = max(bar.total, p.total)
        bar.update(p.done - bar.n)

    try:
        yield on_progress
    finally:
        for bar in bars.values():
            bar.close()


def _render(report: IngestReport, settings: Settings, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
    for s in report.skipped:
        click.echo(f"skipped {s.rel}: {s.reason}", err=True)
    for w in report.warnings:
        click.echo(f"warning {w}", err=True)
    lines = [
        f"{'plan' if report.dry_run else 'ingested'} {settings.resolve(settings.docs.path)}: {report.files_seen} files "
        f"({len(report.files_added)} added, {len(report.files_changed)} changed, {report.files_unchanged} unchanged, "
        f"{len(report.files_removed)} removed, {len(report.skipped)} skipped)",
        f"chunks: {report.chunks_embedded} embedded, {report.chunks_reused} reused, {report.chunks_kept} kept, "
        f"{report.chunks_deleted} deleted; index {'will hold' if report.dry_run else 'holds'} "
        f"{report.chunks_total} chunks",
    ]
    if report.dry_run:
        eta = f"~{report.estimated_seconds:.0f} s" if report.estimated_seconds is not None else "unknown (no run yet)"
        lines.append(f"dry run: nothing changed; estimated embedding time {eta}")
    else:
        lines.append(f"time: {report.seconds:.1f} s ({report.embed_seconds:.1f} s embedding)")
    for line in lines:
        click.echo(line, err=True)


def main() -> None:
    """`python -m ingest`."""
    ingest_command(prog_name="python -m ingest")
