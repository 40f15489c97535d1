"""`docvec ingest` (and `python -m docvec.ingest`): sync a docs folder into the index."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import click

from docvec.cli import DocvecCommand, config_options, echo, emit_json, interrupted_exit_code, load
from docvec.text import one_line
from docvec.settings import chunk_params, make_configured_embedder, store_location
from docvec.config import Settings
from docvec.embedders import token_counter
from docvec.errors import Interrupted, SourceError
from docvec.fingerprint import Fingerprint
from docvec.store import Store
from docvec.ingest.pipeline import (IndexState, IngestReport, Progress, SyncGuard, check_fingerprint, index_exists,
                             ingest, open_for_writing, reason_kind)
from docvec.ingest.scan import Skipped
from docvec.ingest.sync import (first_build, index_before, ingest_from_state, scan_options, sync_index,
                                writer_lock_of)

F = TypeVar("F", bound=Callable[..., Any])


def guard_options(func: F) -> F:
    """--docs-moved and --yes: the two confirmations a sync may ask for."""
    func = click.option("--yes", "-y", "yes", is_flag=True,
                        help="Allow deleting more than half of the index's chunks in one run.")(func)
    func = click.option("--docs-moved", is_flag=True,
                        help="The docs now live in DOCS_DIR: re-bind the index (built from another folder) to it.")(func)
    return func

if TYPE_CHECKING:
    from docvec.ingest.verify import VerifyReport


@click.command(cls=DocvecCommand)
@click.argument("docs_dir", required=False, type=click.Path(path_type=Path))
@config_options
@click.option("--dry-run", is_flag=True, help="Show what would be embedded and deleted; change nothing.")
@click.option("--wait", is_flag=True, help="Wait for another ingest of this index to finish instead of failing.")
@guard_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--verbose", "-v", is_flag=True, help="List every skipped file with its reason (default: a summary).")
@click.option("--watch", is_flag=True, help="After syncing, keep watching DOCS_DIR and sync after every burst of "
                                            "changes (Ctrl-C stops).")
def ingest_command(docs_dir: Path | None, config_path: Path | None, index_path: Path | None,
                   collection: str | None, dry_run: bool, wait: bool, docs_moved: bool, yes: bool, as_json: bool,
                   quiet: bool, verbose: bool, watch: bool) -> None:
    """Sync DOCS_DIR (default: docs.path) into the index: embed what changed, delete what is gone."""
    settings = load(config_path, {"docs.path": str(docs_dir) if docs_dir else None, "store.path": index_path,
                                  "store.collection": collection})
    embedder = make_configured_embedder(settings)
    fingerprint = Fingerprint.build(embedder.info, chunk_params(settings))
    location = store_location(settings)
    guard = SyncGuard(docs_moved=docs_moved, allow_mass_delete=yes)
    with _progress_bar(quiet or as_json) as on_progress:
        if dry_run:
            store = index_exists(location)
            if store is not None:
                check_fingerprint(store, fingerprint)
            report = ingest(store, embedder, scan_options(settings), chunk_params(settings), True, on_progress,
                            guard)
        else:
            before = index_before(location)
            with writer_lock_of(location, wait), first_build(location, before):
                store = open_for_writing(location, fingerprint)
                _apply_hnsw(store)
                try:
                    report = ingest_from_state(location, store, embedder, scan_options(settings),
                                               chunk_params(settings), guard, on_progress)
                except Interrupted as exc:
                    if isinstance(exc.report, IngestReport):
                        _render(exc.report, settings, as_json, verbose)
                    echo(str(exc), err=True)
                    sys.exit(interrupted_exit_code())
                _check_some_indexed(report, settings, lambda: _render(report, settings, as_json, verbose))
    _render(report, settings, as_json, verbose)
    _check_some_indexed(report, settings, lambda: None)
    if watch and not dry_run:  # deletions of most of the index wait for confirmation; the rest goes on
        _watch(settings, embedder, SyncGuard(docs_moved=False, allow_mass_delete=yes, hold_mass_delete=True))


def _watch(settings: Settings, embedder: Any, guard: SyncGuard) -> None:
    """Sync after every settled burst of changes until Ctrl-C, SIGTERM or SIGHUP (a sync stops between writes)."""
    import threading
    import time

    from docvec.watchstate import state_path
    from docvec.ingest.watch import WatchEvent, describe, recorder, watch_folder

    echo(f"watching {settings.resolve(settings.docs.path)} (Ctrl-C stops)", err=True)

    # The bookkeeping the last sync left: the next one takes it from here instead of reading every record.
    kept: list[IndexState | None] = [None]

    def sync(on_progress: Callable[[Progress], None]) -> IngestReport:
        known, kept[0] = kept[0], None
        report = sync_index(store_location(settings), embedder, scan_options(settings), chunk_params(settings),
                            guard, False, on_progress, known)
        kept[0] = report.state
        return report

    def log(event: Any) -> None:
        echo(f"{time.strftime('%H:%M:%S')} {describe(event)}", err=True)

    location = store_location(settings)
    on_event = recorder(state_path(location.path, location.collection, location.host), log)
    try:
        watch_folder(settings, sync, threading.Event(), on_event)
    except KeyboardInterrupt:
        on_event(WatchEvent("stopped"))


def _check_some_indexed(report: IngestReport, settings: Settings, render: Callable[[], None]) -> None:
    """Fail when files were found but none could be indexed (rendering the report first); inside the writer
    block, so that a failed first build leaves no empty index behind."""
    if report.files_seen and not (report.files_added or report.files_changed or report.files_unchanged):
        render()
        raise SourceError(f"none of the {report.files_seen} files in {settings.resolve(settings.docs.path)} "
                          f"could be indexed (see the reasons above)")


def _apply_hnsw(store: Store) -> None:
    """ef_search can change in place; ef_construction / max_neighbors need a rebuild, which reindex does."""
    old = store.apply_ef_search()
    if old is not None:
        echo(f"hnsw ef_search {old} → {store.location.hnsw.ef_search}", err=True)
    rebuild = store.hnsw_rebuild_needed()
    if rebuild:
        echo(f"note: the live collection was built with other HNSW settings ({rebuild}); "
                   f"run `docvec reindex` to rebuild it with them (vectors are copied, nothing is re-embedded)",
                   err=True)


@contextlib.contextmanager
def _progress_bar(disabled: bool) -> Iterator[Any]:
    """A tqdm bar on stderr that follows the pipeline's progress callbacks, phase by phase."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}
    labels = {"check": "checking", "index": "indexing", "delete": "deleting"}

    def on_progress(p: Progress) -> None:
        if disabled or p.total == 0:
            return
        bar = bars.get(p.phase)
        if bar is None:
            for done in bars.values():  # phases are sequential: one bar at a time, no stacked cursor moves
                done.close()
            bar = bars[p.phase] = tqdm(total=p.total, desc=labels.get(p.phase, p.phase), unit=" files",
                                       leave=False, dynamic_ncols=True)
        bar.total = max(bar.total, p.total)
        bar.update(p.done - bar.n)

    try:
        yield on_progress
    finally:
        for bar in bars.values():
            bar.close()


def _render(report: IngestReport, settings: Settings, as_json: bool, verbose: bool = False) -> None:
    if as_json:
        emit_json(report.as_dict())
    render_skipped(report.skipped, verbose)
    for w in report.warnings:
        echo(f"warning {w}", err=True)
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
        echo(line, err=True)


@click.command(cls=DocvecCommand)
@click.argument("docs_dir", required=False, type=click.Path(path_type=Path))
@config_options
@click.option("--repair", is_flag=True, help="Fix what was found, re-embedding as little as possible.")
@click.option("--vectors", is_flag=True, help="Also embed every chunk again and compare it with its stored vector.")
@click.option("--wait", is_flag=True, help="With --repair: wait for a running ingest instead of failing.")
@guard_options
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON object on stdout.")
def verify_command(docs_dir: Path | None, config_path: Path | None, index_path: Path | None, collection: str | None,
                   repair: bool, vectors: bool, wait: bool, docs_moved: bool, yes: bool, as_json: bool) -> None:
    """Compare the index with a clean build of DOCS_DIR (default: docs.path); exit 1 if anything differs (or
    still differs after --repair). Without --repair it changes nothing."""
    from docvec.status import writer_of
    from docvec.ingest.verify import repair as repair_index
    from docvec.ingest.verify import verify

    settings = load(config_path, {"docs.path": str(docs_dir) if docs_dir else None, "store.path": index_path,
                                  "store.collection": collection})
    location = store_location(settings)
    guard = SyncGuard(docs_moved=docs_moved, allow_mass_delete=yes)
    store = Store.open_for_reading(location)
    built = store.fingerprint()
    embedder = make_configured_embedder(settings) if vectors or repair else None  # else no model is needed
    if embedder is not None and vectors and not built.same_vectors(Fingerprint.build(embedder.info,
                                                                                     chunk_params(settings))):
        raise click.UsageError(f"--vectors needs the model the index was built with ({built.provider}:"
                               f"{built.model}); the configuration names {embedder.info.model}")
    count = token_counter(built.provider, built.model, built.document_prefix)
    report = verify(store, count, built, scan_options(settings), guard, embedder if vectors else None)
    report.writer = writer_of(store) if report.problems else None
    _render_verify(report, as_json and not repair)
    if report.writer:
        raise click.ClickException(f"{report.problems} differences while {report.writer} writes the index: they "
                                   f"may be its work in progress; run `docvec verify` again when it has finished")
    if repair and report.problems:
        assert embedder is not None
        params = chunk_params(settings)
        with writer_lock_of(location, wait), _progress_bar(as_json) as bar:
            store = open_for_writing(location, Fingerprint.build(embedder.info, params))
            report = repair_index(store, embedder, scan_options(settings), params, report, bar, guard)
        echo("after repair:", err=True)
        _render_verify(report, as_json)
    if report.problems:
        raise click.ClickException(f"{report.problems} problems in {location.describe()}"
                                   + ("" if repair else ": run `docvec verify --repair`"))


def render_skipped(skipped: list[Skipped], verbose: bool) -> None:
    """Each skipped file with -v; otherwise one line per reason (a reason seen once is shown in full)."""
    kinds = Counter(reason_kind(s.reason) for s in skipped)
    for s in skipped:
        if verbose or kinds[reason_kind(s.reason)] == 1:
            echo(f"skipped {one_line(s.rel)}: {s.reason}", err=True)
    for kind, n in sorted(kinds.items()):
        if n > 1 and not verbose:
            example = next(s.rel for s in skipped if reason_kind(s.reason) == kind)
            echo(f"skipped {n} files: {kind} (e.g. {one_line(example)}; -v lists them)", err=True)


def _render_verify(report: "VerifyReport", as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
    echo(f"checked {report.files_checked} files and {report.chunks_checked} chunks", err=True)
    for kind, label in (("missing", "files not indexed"), ("stale", "files indexed at an older version"),
                        ("incomplete", "files partly indexed"), ("orphans", "chunks no file has"),
                        ("duplicates", "duplicate chunks"), ("wrong_fingerprint", "chunks of another model/config"),
                        ("bad_vectors", "unreadable vectors"), ("wrong_vectors", "vectors not the model's"),
                        ("text_differs", "chunks whose text is not the file's"),
                        ("metadata_differs", "chunks whose metadata is not the file's"),
                        ("keyword_out_of_sync", "chunks out of sync in the keyword index")):
        items = getattr(report, kind)
        if items:
            example = report.examples.get(kind) or items[0]
            echo(f"  {len(items)} {label}, e.g. {one_line(str(example))}", err=True)
    if report.keyword_deleted_rows:
        echo(f"  keyword index: {report.keyword_deleted_rows} deleted rows still counted in bm25 scores", err=True)
    if report.residue:
        echo(f"  residue of deleted records: {report.examples.get('residue')}", err=True)
    if report.writer:
        echo(f"  a writer is running: {report.writer}", err=True)
    if not report.problems:
        echo("  ok: the index is what a clean build of the docs folder writes", err=True)


@click.command(cls=DocvecCommand)
@click.argument("docs_dir", required=False, type=click.Path(path_type=Path))
@config_options
@click.option("--wait", is_flag=True, help="Wait for another writer of this index instead of failing.")
@guard_options
@click.option("--compact", is_flag=True,
              help="Rebuild even when the configuration is unchanged (vectors copied, nothing embedded): drops the "
                   "graph slots of deleted chunks that `docvec status` counts.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def reindex_command(docs_dir: Path | None, config_path: Path | None, index_path: Path | None, collection: str | None,
                    wait: bool, docs_moved: bool, yes: bool, compact: bool, as_json: bool, quiet: bool) -> None:
    """Re-embed DOCS_DIR (default: docs.path) with the configured model/chunking beside the live index, then
    switch to it."""
    from docvec.ingest.reindex import reindex

    settings = load(config_path, {"docs.path": str(docs_dir) if docs_dir else None, "store.path": index_path,
                                  "store.collection": collection})
    embedder = make_configured_embedder(settings)
    location = store_location(settings)
    with writer_lock_of(location, wait), \
            _progress_bar(quiet or as_json) as on_progress:
        try:
            report = reindex(location, embedder, scan_options(settings), chunk_params(settings), on_progress,
                             SyncGuard(docs_moved=docs_moved, allow_mass_delete=yes), compact)
        except Interrupted as exc:
            echo(str(exc), err=True)
            sys.exit(interrupted_exit_code())
    if as_json:
        emit_json(report.as_dict())
    if report.ingest is not None:
        _render(report.ingest, settings, False)
    if report.switched and report.previous:
        echo(f"live index is now '{report.live}' ({'; '.join(report.changes)}); "
                   f"'{report.previous}' kept for `docvec rollback`", err=True)
    elif not report.previous:
        echo(f"live index '{report.live}' already matches the configuration; synced", err=True)


@click.command(cls=DocvecCommand)
@config_options
@click.option("--wait", is_flag=True, help="Wait for another writer of this index instead of failing.")
def rollback_command(config_path: Path | None, index_path: Path | None, collection: str | None, wait: bool) -> None:
    """Make the index that was live before the last reindex live again."""
    from docvec.ingest.reindex import rollback

    settings = load(config_path, {"store.path": index_path, "store.collection": collection})
    location = store_location(settings)
    with writer_lock_of(location, wait, existing=True):
        old, new = rollback(location)
    echo(f"live index is now '{new}' (was '{old}', kept as previous)", err=True)


@click.command(cls=DocvecCommand)
@config_options
@click.option("--all", "everything", is_flag=True, help="Also delete the previous index (no rollback after).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted.")
@click.option("--wait", is_flag=True, help="Wait for another writer of this index instead of failing.")
def prune_command(config_path: Path | None, index_path: Path | None, collection: str | None, everything: bool,
                  dry_run: bool, wait: bool) -> None:
    """Delete backup indexes left by reindex (the previous one is kept unless --all)."""
    from docvec.ingest.reindex import prune

    settings = load(config_path, {"store.path": index_path, "store.collection": collection})
    location = store_location(settings)
    with writer_lock_of(location, wait, existing=True):
        doomed = prune(location, keep_previous=not everything, dry_run=dry_run)
    for name in doomed:
        echo(f"{'would delete' if dry_run else 'deleted'} {name}", err=True)
    if not doomed:
        echo("no backups to delete", err=True)


def main() -> None:
    """`python -m docvec.ingest`."""
    ingest_command(prog_name="python -m docvec.ingest")
