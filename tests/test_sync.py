"""Ingest is a sync: only what changed is embedded, what is gone is deleted, and nothing is embedded twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from docvec.chunker import ChunkParams
from docvec.errors import IndexMismatch
from docvec.fingerprint import Fingerprint
from docvec.store import Store, StoreLocation
from docvec.keyword import KeywordIndex
from docvec.ingest import pipeline
from docvec.ingest.pipeline import IndexState, IngestReport, Progress, ingest, open_for_writing
from docvec.ingest.scan import ScanOptions
from tests.conftest import RecordingEmbedder

PARAMS = ChunkParams()


def _run(index: Path, docs: Path, embedder: RecordingEmbedder, dry_run: bool = False) -> IngestReport:
    location = StoreLocation(index, "test")
    store = open_for_writing(location, Fingerprint.build(embedder.info, PARAMS))
    return ingest(store, embedder, ScanOptions(docs), PARAMS, dry_run=dry_run)


def _snapshot(index: Path) -> dict[str, tuple[str, str]]:
    store = Store.open(StoreLocation(index, "test"))
    ids = [rid for rid, _ in store.iter_metadata()]
    return {rid: (doc, str(sorted(meta.items()))) for rid, (doc, meta) in store.get_documents(ids).items()}


def test_first_ingest_embeds_each_distinct_chunk_once(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    report = _run(tmp_path / "idx", docs, recorder)
    assert len(report.files_added) == 12 and report.chunks_total > 12
    assert len(recorder.embedded) == len(set(recorder.embedded)) == report.chunks_embedded
    state = IndexState.read(Store.open(StoreLocation(tmp_path / "idx", "test")))
    assert all(f.complete_hash for f in state.files.values())


def test_unchanged_rerun_embeds_and_writes_nothing(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    before = _snapshot(tmp_path / "idx")
    second = RecordingEmbedder()
    report = _run(tmp_path / "idx", docs, second)
    assert second.calls == 0 and report.files_unchanged == 12
    assert (report.chunks_embedded, report.chunks_deleted, report.chunks_kept) == (0, 0, 0)
    assert _snapshot(tmp_path / "idx") == before


def test_each_window_is_searchable_by_keyword_as_soon_as_it_is_written(
        tmp_path: Path, docs: Path, recorder: RecordingEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run passes each window's rows to the keyword index as it writes them, with one keyword writer for the whole
    run: it keeps no chunk text for later (memory stays flat), and an interrupted run leaves what it stored
    findable."""
    monkeypatch.setattr(pipeline, "WINDOW", 1)
    monkeypatch.setattr(pipeline, "WINDOW_MAX", 1)
    sessions = []
    opened = KeywordIndex.session
    monkeypatch.setattr(KeywordIndex, "session", lambda self, wait=True: sessions.append(1) or opened(self, wait))
    store = open_for_writing(StoreLocation(tmp_path / "idx", "test"), Fingerprint.build(recorder.info, PARAMS))
    seen: list[int] = []

    def progress(p: Progress) -> None:
        if p.phase == "index" and 0 < p.done < p.total:
            with KeywordIndex.of(store, read_only=True) as keyword:
                seen.append(len(keyword.entries()))

    report = ingest(store, recorder, ScanOptions(docs), PARAMS, on_progress=progress)
    assert len(seen) == 11 and seen == sorted(set(seen)) and 0 < seen[0] < seen[-1] < report.chunks_total
    assert len(sessions) <= 2  # the first run's empty state, then one writer for all twelve windows


def test_editing_one_section_embeds_only_that_section(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    path = docs / "guides" / "billing-limits.md"
    path.write_text(path.read_text().replace("VAT numbers added", "Tax numbers added"))
    second = RecordingEmbedder()
    report = _run(tmp_path / "idx", docs, second)
    assert report.files_changed == ["guides/billing-limits.md"] and report.files_unchanged == 11
    assert len(second.embedded) == 1 and "Tax numbers" in second.embedded[0]
    assert report.chunks_deleted == 1 and report.chunks_kept >= 1


def test_edit_that_shifts_lines_refreshes_metadata_without_embedding(tmp_path: Path, docs: Path,
                                                                    recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    path = docs / "guides" / "webhooks.md"
    text = path.read_text()
    path.write_text(text.replace("# Receive", "\n\n\n# Receive", 1))  # lines move, chunk texts stay
    second = RecordingEmbedder()
    report = _run(tmp_path / "idx", docs, second)
    assert second.calls == 0 and report.files_changed == ["guides/webhooks.md"]
    store = Store.open(StoreLocation(tmp_path / "idx", "test"))
    metas = [m for _, m in store.iter_metadata() if m["source"] == "guides/webhooks.md"]
    assert {m["file_hash"] for m in metas} == {IndexState.read(store).files["guides/webhooks.md"].complete_hash}
    assert min(m["start_line"] for m in metas) == 9  # was 6: positions were refreshed


def test_removed_file_disappears(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    (docs / "guides" / "sdks.md").unlink()
    report = _run(tmp_path / "idx", docs, RecordingEmbedder())
    assert report.files_removed == ["guides/sdks.md"] and report.chunks_deleted > 0
    sources = {m["source"] for _, m in Store.open(StoreLocation(tmp_path / "idx", "test")).iter_metadata()}
    assert "guides/sdks.md" not in sources and len(sources) == 11


def test_rename_reuses_vectors(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    shutil.move(docs / "guides" / "webhooks.md", docs / "guides" / "events.md")
    second = RecordingEmbedder()
    report = _run(tmp_path / "idx", docs, second)
    assert second.calls == 0 and report.chunks_reused > 0
    assert report.files_added == ["guides/events.md"] and report.files_removed == ["guides/webhooks.md"]


def test_identical_text_in_two_files_is_embedded_once(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    shutil.copy(docs / "reference" / "pagination.md", docs / "reference" / "pagination-copy.md")
    report = _run(tmp_path / "idx", docs, recorder)
    assert len(recorder.embedded) == len(set(recorder.embedded))
    assert report.chunks_reused > 0 and report.chunks_total == report.chunks_embedded + report.chunks_reused


def test_dry_run_changes_nothing_and_predicts_the_run(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    (docs / "guides" / "new.md").write_text("# New page\n\nSomething entirely new about exports.\n")
    (docs / "guides" / "sdks.md").unlink()
    before = _snapshot(tmp_path / "idx")
    dry_embedder = RecordingEmbedder()
    plan = _run(tmp_path / "idx", docs, dry_embedder, dry_run=True)
    assert dry_embedder.calls == 0 and _snapshot(tmp_path / "idx") == before
    done = _run(tmp_path / "idx", docs, RecordingEmbedder())
    assert (plan.files_added, plan.files_removed) == (done.files_added, done.files_removed)
    assert (plan.chunks_embedded, plan.chunks_deleted, plan.chunks_total) == (
        done.chunks_embedded, done.chunks_deleted, done.chunks_total)


def test_incomplete_file_is_finished_by_the_next_run(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    clean = _snapshot(tmp_path / "idx")
    store = Store.open(StoreLocation(tmp_path / "idx", "test"))
    victims = [rid for rid, m in store.iter_metadata() if m["source"] == "guides/authentication-tokens.md"][:2]
    store.delete(victims)  # what a crash between two batches of one file leaves
    second = RecordingEmbedder()
    report = _run(tmp_path / "idx", docs, second)
    assert report.files_changed == ["guides/authentication-tokens.md"] and second.calls == 1
    assert len(second.embedded) == 2
    assert _snapshot(tmp_path / "idx") == clean


def test_other_model_is_refused_naming_the_change(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    _run(tmp_path / "idx", docs, recorder)
    with pytest.raises(IndexMismatch, match="model: 'recording-384' → 'other-384'"):
        _run(tmp_path / "idx", docs, RecordingEmbedder("other-384"))


def test_write_windows_follow_the_embedding_speed() -> None:
    from docvec.ingest.pipeline import WINDOW, WINDOW_MAX, _next_window

    assert _next_window(128, 128, 5.0) == WINDOW  # built-in model on 2 cores: ~25 chunks/s -> 128
    assert _next_window(128, 128, 0.128) == WINDOW_MAX  # 1,000 chunks/s: capped at Chroma-sized writes
    assert _next_window(200, 100, 1.0) == 1000  # half the chunks were reused: 5 s covers 1,000 written
    assert _next_window(128, 0, 0.0) == WINDOW_MAX  # nothing to embed: writing is all the work


def _bookkeeping(state: IndexState) -> dict[str, dict[str, object]]:
    return {s: dict(f.records) for s, f in state.files.items() if f.records}


def test_a_kept_state_is_used_only_while_no_one_else_wrote(tmp_path: Path, docs: Path,
                                                           recorder: RecordingEmbedder) -> None:
    store = open_for_writing(StoreLocation(tmp_path / "idx", "test"), Fingerprint.build(recorder.info, PARAMS))
    fp = Fingerprint.build(recorder.info, PARAMS).short_hash()
    first = ingest(store, recorder, ScanOptions(docs), PARAMS)
    files = sorted(docs.rglob("*.md"))
    files[0].write_text(files[0].read_text() + "\n\nA paragraph added by an edit.\n")
    files[1].rename(files[1].with_name("renamed.md"))
    files[2].unlink()
    second = ingest(store, recorder, ScanOptions(docs), PARAMS, known=first.state)
    assert second.state is first.state and len(second.files_added) == 1 and len(second.files_removed) == 2
    assert second.state is not None and _bookkeeping(second.state) == _bookkeeping(IndexState.read(store, fp))
    # Another run (another process) deletes a file's records; the file comes back unchanged: the kept state,
    # which still lists it as indexed, must not be trusted.
    back = files[3].read_bytes()
    files[3].unlink()
    ingest(store, RecordingEmbedder(), ScanOptions(docs), PARAMS)
    files[3].write_bytes(back)
    third = ingest(store, recorder, ScanOptions(docs), PARAMS, known=second.state)
    assert third.files_added == [files[3].relative_to(docs).as_posix()] and third.state is not second.state
    assert third.state is not None and _bookkeeping(third.state) == _bookkeeping(IndexState.read(store, fp))
