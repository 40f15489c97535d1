"""What keeps docvec's own costs linear in the size of an index (issue 32), checked on small real indexes by the
shape of the reads it makes: the figures themselves are in bench/million_bench.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import docvec.store as store_module
from docvec.chunker import ChunkParams
from docvec.ingest.scan import ScanOptions
from docvec.ingest.sync import sync_index
from docvec.keyword import KeywordIndex, keyword_differences, remove_keyword_index, sync_keyword_index
from docvec.store import Store, StoreLocation
from tests.conftest import RecordingEmbedder


class _Spy:
    """A Chroma collection that records the arguments of every `get`."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.gets = inner, []  # type: list[dict[str, Any]]

    def get(self, **kwargs: Any) -> Any:
        self.gets.append(kwargs)
        return self.inner.get(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _index(tmp_path: Path, pages: int) -> StoreLocation:
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
    store = Store.open(location)
    spy = _Spy(store._collection)
    store._collection = spy
    read = [rid for rid, _ in store.iter_metadata()]
    every = store_module.Store.open(location)._collection.get(include=[])["ids"]
    assert sorted(read) == sorted(every) and len(read) == len(set(read)) == 23
    offsets = [g for g in spy.gets if g.get("offset")]
    assert offsets and all(g["include"] == [] and g["limit"] == 7 for g in offsets)
    by_id = [g for g in spy.gets if "ids" in g]
    assert all(len(g["ids"]) <= 3 and g["include"] == ["metadatas"] for g in by_id)
    assert sum(len(g["ids"]) for g in by_id) == 23


def test_a_first_keyword_build_reads_the_collection_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new client of a server (or a lost keyword index) builds it from one read of every record: nothing to
    compare, so no read of every record's metadata before reading their texts (which doubled a new client's wait)."""
    location = _index(tmp_path, 23)
    remove_keyword_index(location, Store.open(location).name)
    store = Store.open(location)
    spy = _Spy(store._collection)
    store._collection = spy
    monkeypatch.setattr(Store, "iter_metadata", lambda self: pytest.fail("a comparison of every record"))
    with KeywordIndex.of(store) as keyword:
        assert sync_keyword_index(store, keyword) == 23
        assert sum(len(g["ids"]) for g in spy.gets if "ids" in g and g["include"]) == 23  # each record once
        monkeypatch.undo()
        assert keyword_differences(store, keyword) == ([], [])
