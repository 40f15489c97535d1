"""What keeps docvec's own costs linear in the size of an index (issue 32), checked on small real indexes by the
shape of the reads it makes: the figures themselves are in bench/million_bench.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import docvec.keyword as keyword_module
import docvec.store as store_module
from docvec.chunker import ChunkParams
from docvec.ingest.scan import ScanOptions
from docvec.ingest.sync import sync_index
from docvec.ingest.pipeline import IndexState
from docvec.ingest.statefile import state_path
from docvec.keyword import KeywordIndex, keyword_differences, remove_keyword_index, sync_keyword_index
from docvec.store import Store, StoreLocation
from tests.conftest import RecordingEmbedder
from tests.convergence import snapshot


class _Spy:
    """A Chroma collection that records the arguments of every `get`."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.gets = inner, []  # type: list[dict[str, Any]]

    def get(self, **kwargs: Any) -> Any:
        self.gets.append(kwargs)
        return self.inner.get(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _index(tmp_path: Path, pages: int, docs: Path | None = None) -> StoreLocation:
    """An index of `pages` one-paragraph pages (or of the folder `docs`)."""
    if docs is None:
        docs = tmp_path / "docs"
        docs.mkdir()
        for i in range(pages):
            (docs / f"p{i:02}.md").write_text(f"# Page {i}\n\nParagraph {i} about topic {i * 7}.\n")
    location = StoreLocation(tmp_path / "index", "docvec")
    sync_index(location, RecordingEmbedder(), ScanOptions(docs), ChunkParams())
    return location


def test_a_full_read_lists_ids_then_reads_records_by_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chroma steps over every row before an offset: reading records by offset made a full read quadratic in the
    collection's size (the last 1,000-record page of 150k cost twice the first). Only the id listing may use an
    offset now, and each record is read once, by id."""
    location = _index(tmp_path, 23)
    monkeypatch.setattr(store_module, "ID_PAGE", 7)
    monkeypatch.setattr(store_module, "PAGE", 3)
    every = store_module.Store.open(location)._collection.get(include=[])["ids"]
    for through_chroma in (True, False):  # a server's records, or a local index's read from its file
        store = Store.open(location)
        spy = _Spy(store._collection)
        store._collection = spy
        record_file = store._record_file()
        assert record_file is not None
        from_file: list[list[str]] = []
        real = record_file.metadatas
        monkeypatch.setattr(record_file, "metadatas",
                            lambda ids: None if through_chroma else (from_file.append(list(ids)) or real(ids)))
        read = [rid for rid, _ in store.iter_metadata()]
        assert sorted(read) == sorted(every) and len(read) == len(set(read)) == 23
        offsets = [g for g in spy.gets if g.get("offset")]
        assert offsets and all(g["include"] == [] and g["limit"] == 7 for g in offsets)
        by_id = [g["ids"] for g in spy.gets if "ids" in g and g["include"] == ["metadatas"]] + from_file
        assert all(len(ids) <= 3 for ids in by_id) and sum(len(ids) for ids in by_id) == 23
        assert all(g["include"] in ([], ["metadatas"]) for g in spy.gets)


def test_a_first_keyword_build_reads_the_collection_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new client of a server (or a lost keyword index) builds it from one read of every record: nothing to
    compare, so no read of every record's metadata before reading their texts (which doubled a new client's wait)."""
    location = _index(tmp_path, 23)
    remove_keyword_index(location, Store.open(location).name)
    store = Store.open(location)
    read: list[str] = []  # ids read by id, whether from the index's file or through Chroma
    for name in ("get_documents", "get_metadatas", "get_embeddings"):
        real = getattr(Store, name)
        monkeypatch.setattr(Store, name, lambda self, ids, real=real: read.extend(ids) or real(self, ids))
    monkeypatch.setattr(Store, "iter_metadata", lambda self: pytest.fail("a comparison of every record"))
    with KeywordIndex.of(store) as keyword:
        assert sync_keyword_index(store, keyword) == 23
        assert sorted(read) == sorted(set(read)) and len(read) == 23  # each record once
        monkeypatch.undo()
        assert keyword_differences(store, keyword) == ([], [])


def _sync_reads(location: StoreLocation, docs: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Any]:
    """Sync; how many times the sync read its bookkeeping from every record, and the report."""
    reads: list[int] = []
    read = IndexState.read
    monkeypatch.setattr(IndexState, "read", lambda *a, **k: reads.append(1) or read(*a, **k))
    report = sync_index(location, RecordingEmbedder(), ScanOptions(docs), ChunkParams())
    monkeypatch.setattr(IndexState, "read", read)
    return len(reads), report


def test_a_sync_starts_from_the_state_the_last_run_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading every record's bookkeeping back from Chroma was 20 of a no-op sync's 22 s at 100k chunks: a run
    starts from the state file the last completed run left, and reads the records only when that file is not for
    exactly what the collection holds now."""
    location = _index(tmp_path, 23)
    docs = tmp_path / "docs"
    store = Store.open(location)
    assert state_path(location, store.name).is_file()
    written = state_path(location, store.name).stat()
    reads, report = _sync_reads(location, docs, monkeypatch)
    assert reads == 0 and report.files_unchanged == 23 and report.chunks_total == 23
    after = state_path(location, store.name).stat()
    assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # a no-op leaves it be
    (docs / "p03.md").write_text("# Page 3\n\nRewritten with other words entirely.\n")
    (docs / "p04.md").unlink()
    reads, report = _sync_reads(location, docs, monkeypatch)
    assert reads == 0 and report.files_changed == ["p03.md"] and report.files_removed == ["p04.md"]
    assert not snapshot(location).differences(snapshot(_index(tmp_path / "clean", 0, docs)))  # a clean build


@pytest.mark.parametrize("spoil", ["another writer", "damaged", "removed", "writing mark"])
def test_a_state_file_not_for_what_the_collection_holds_now_is_not_used(
        spoil: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location = _index(tmp_path, 23)
    docs = tmp_path / "docs"
    store = Store.open(location)
    path = state_path(location, store.name)
    if spoil == "another writer":  # a run that did not leave its state here (a server's other machine)
        store.bump_generation()
    elif spoil == "damaged":
        path.write_text(path.read_text()[:-40])
    elif spoil == "removed":
        path.unlink()
    else:  # a run killed mid-way
        store.mark_writing()
    (docs / "p05.md").write_text("# Page 5\n\nA new text for page five.\n")
    reads, report = _sync_reads(location, docs, monkeypatch)
    assert reads == 1 and report.files_changed == ["p05.md"]
    assert not snapshot(location).differences(snapshot(_index(tmp_path / "clean", 0, docs)))
    assert _sync_reads(location, docs, monkeypatch)[0] == 0  # and the next run starts from the file again


class _CountsLikeTheModel(RecordingEmbedder):
    """Counts tokens as the built-in model does, and says so: a run may then chunk in a worker process."""

    wordpiece_prefix = ""


def test_a_large_run_chunks_ahead_in_a_worker_and_builds_the_same_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chroma's add holds the GIL, so a big run reads and chunks the next files in a worker process meanwhile; what
    it writes is exactly what chunking in-process writes (long sections split, code, tables, front matter, a file
    that has only front matter, one that cannot be read)."""
    import concurrent.futures

    from docvec.ingest import prefetch

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        body = " ".join(f"word{j} about topic {i}" for j in range(300))
        (docs / f"p{i:02}.md").write_text(f"---\ntitle: Page {i}\ntags: [a, b{i}]\n---\n# Page {i}\n\n{body}\n\n"
                                          f"## Code\n\nRun it:\n\n```py\nprint({i})\n```\n\n"
                                          f"| a | b |\n|---|---|\n| {i} | x |\n")
    (docs / "only-front-matter.md").write_text("---\ntitle: Empty\n---\n")
    (docs / "binary.md").write_bytes(b"\x00\x01\x02 not text")
    submitted: list[int] = []
    submit = concurrent.futures.ProcessPoolExecutor.submit
    monkeypatch.setattr(concurrent.futures.ProcessPoolExecutor, "submit",
                        lambda self, *a, **k: submitted.append(1) or submit(self, *a, **k))
    monkeypatch.setattr(prefetch, "PREFETCH_FILES", 5)
    analysed_here: list[str] = []
    stems = keyword_module.text_stems
    monkeypatch.setattr(keyword_module, "text_stems", lambda text: analysed_here.append(text) or stems(text))
    ahead = StoreLocation(tmp_path / "ahead", "docvec")
    report = sync_index(ahead, _CountsLikeTheModel(), ScanOptions(docs), ChunkParams())
    assert len(submitted) == 12  # the two files the sort-out skips are never chunked
    assert not analysed_here  # the worker analysed every chunk text for the keyword index
    here = StoreLocation(tmp_path / "here", "docvec")
    other = sync_index(here, RecordingEmbedder(), ScanOptions(docs), ChunkParams())
    assert len(submitted) == 12 and report.chunks_total == other.chunks_total > 12 * 3
    assert len(analysed_here) == other.chunks_total
    assert [s.reason for s in report.skipped] == [s.reason for s in other.skipped]
    assert not snapshot(ahead).differences(snapshot(here))
    assert _keyword_bodies(ahead) == _keyword_bodies(here)


def _keyword_bodies(location: StoreLocation) -> dict[str, str]:
    """Every keyword row's stored body (its stems), by id."""
    with KeywordIndex.of(Store.open(location), read_only=True) as index:
        return {str(d["id"][0]): str(d.get_first("body")) for _, d in keyword_module._every_row(index._searcher())}


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "link to another index's state"])
def test_a_state_file_that_is_not_a_regular_file_is_never_read(kind: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The state file is opened without following links and only if it is a regular file: a link to /dev/zero
    or a FIFO in the index folder neither hangs nor grows a sync; the records are read instead."""
    import os

    location = _index(tmp_path, 5)
    path = state_path(location, Store.open(location).name)
    other = tmp_path / "elsewhere.jsonl"
    path.rename(other)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero" if kind == "link to /dev/zero" else other)
    reads, report = _sync_reads(location, tmp_path / "docs", monkeypatch)
    assert reads == 1 and report.files_unchanged == 5


def test_settling_rewrites_a_batch_at_a_time_and_ends_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of segments holding deleted rows are rewritten a batch per commit (holding a merged segment's rows all
    at once made a 1 % sync's peak grow with the index): the index ends with no deleted row, as a clean build."""
    from docvec.keyword import KeywordSession

    monkeypatch.setattr("docvec.keyword.SETTLE_BATCH", 3)
    commits: list[int] = []
    rewrite = KeywordSession.rewrite
    monkeypatch.setattr(KeywordSession, "rewrite", lambda self, docs: commits.append(len(docs)) or rewrite(self, docs))
    location = _index(tmp_path, 23)
    docs = tmp_path / "docs"
    (docs / "p07.md").write_text("# Page 7\n\nOther words for page seven.\n")
    sync_index(location, RecordingEmbedder(), ScanOptions(docs), ChunkParams())
    assert len(commits) > 1 and max(commits) <= 3 and sum(commits) >= 22
    assert not snapshot(location).differences(snapshot(_index(tmp_path / "clean", 0, docs)))


def test_listing_ids_takes_a_few_reads_whatever_the_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read at an offset steps over the rows before it: fixed pages made listing a 1M-chunk server index's
    ids quadratic (42.8 s against 13.2 s in four reads). A listing takes about ID_PAGES reads, the last short."""
    location = _index(tmp_path, 23)
    monkeypatch.setattr(store_module, "ID_PAGE", 2)
    store = Store.open(location)
    spy = _Spy(store._collection)
    store._collection = spy
    listed = [rid for ids in store._id_pages("listing") for rid in ids]
    assert sorted(listed) == sorted(spy.inner.get(include=[])["ids"]) and len(listed) == 23
    assert [g["limit"] for g in spy.gets] == [6] * 4  # 23 // 4 + 1 a read; the last comes back short (5)
    monkeypatch.setattr(store_module, "ID_PAGE_MAX", 5)
    spy.gets.clear()
    assert sum(len(ids) for ids in store._id_pages("listing")) == 23 and spy.gets[0]["limit"] == 5


def test_a_local_backup_is_deleted_whole_then_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting a local backup record by record cost an HNSW update a call (a 1M backup: over 34 min in pages of
    1,000); `delete_collection` and a sweep of what it leaves take one call and leave no row a record inherits."""
    from chromadb.api.models.Collection import Collection

    from docvec.residue import find

    docs = tmp_path / "docs" / "guide"  # a chunk in a folder has list-valued metadata (dirs)
    docs.mkdir(parents=True)
    for i in range(12):
        (docs / f"p{i:02}.md").write_text(f"# Page {i}\n\nParagraph {i} about topic {i * 7}.\n")
    location = _index(tmp_path, 0, docs.parent)
    live = Store.open(location)
    backup = Store.open_physical(location, live.name + "-c2", live.fingerprint())
    assert backup.copy_from(live) == live.count()
    deletes: list[int] = []
    delete = Collection.delete

    def counted(self: Collection, ids: Any = None, **kwargs: Any) -> None:
        deletes.append(len(ids or []))
        delete(self, ids, **kwargs)
    monkeypatch.setattr(Collection, "delete", counted)
    live.drop_physical(backup.name)
    assert deletes == []
    assert [c.name for c in live.physical_collections()] == [live.name]
    assert find(location.path) == {}  # the backup's list-valued rows (each chunk's dirs) swept
