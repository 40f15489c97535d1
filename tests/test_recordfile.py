"""A local index's records read from Chroma's SQLite file: exactly what Chroma's own `get` returns, or nothing
(the caller then asks Chroma) whenever the file is not what the reader knows."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docvec.recordfile import RecordFile
from docvec.store import CHROMA_FILE, Store, StoreLocation
from docvec.chunker import ChunkParams
from docvec.fingerprint import Fingerprint
from docvec.ingest.pipeline import ingest, open_for_writing
from docvec.ingest.scan import ScanOptions
from tests.conftest import RecordingEmbedder

_NAMES = itertools.count()
_KEYS = st.sampled_from(["source", "label", "tags", "dirs", "start_line", "weight", "draft", "title"])
_SCALAR = st.one_of(st.text(max_size=20), st.integers(-2**53, 2**53), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False, width=64))
# a list holds one type (Chroma's rule); an empty list is not stored
_LIST = st.one_of(*(st.lists(s, min_size=1, max_size=4) for s in (st.text(max_size=8), st.integers(-99, 99),
                                                                  st.booleans(), st.floats(-1e6, 1e6))))
_META = st.dictionaries(_KEYS, st.one_of(_SCALAR, _LIST), max_size=6)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return chromadb.PersistentClient(str(tmp_path_factory.mktemp("recordfile")))


def _collection(client: Any, records: list[tuple[str | None, dict[str, Any]]]) -> Any:
    col = client.create_collection(f"records-{next(_NAMES)}", embedding_function=None)
    vectors = np.random.default_rng(0).random((len(records), 8)).astype(np.float32)
    col.add(ids=[f"r{i}" for i in range(len(records))], embeddings=vectors,
            documents=[d for d, _ in records], metadatas=[m or None for _, m in records])
    return col


def _chroma(col: Any, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    got = col.get(ids=ids, include=["documents", "metadatas"])
    return {rid: (d or "", dict(m or {})) for rid, d, m in zip(got["ids"], got["documents"], got["metadatas"])}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.tuples(st.one_of(st.none(), st.text(min_size=1, max_size=40)), _META),
                        min_size=1, max_size=12),
       asked=st.lists(st.integers(0, 14), unique=True, min_size=1, max_size=15),
       keys=st.one_of(st.none(), st.lists(_KEYS, unique=True, max_size=4)))
def test_records_read_from_the_file_are_what_chromas_get_returns(client: Any, records: list[Any],
                                                                 asked: list[int], keys: list[str] | None) -> None:
    """Texts, scalars by type (True is not 1, 1 is not 1.0), lists in order, records without text or metadata,
    and ids the collection does not hold (left out) — equal to Chroma's own answer; with `keys`, to its answer
    restricted to those keys (a record holding none of them still comes, with its text)."""
    col = _collection(client, records)
    ids = [f"r{i}" for i in asked]
    path = Path(client.get_settings().persist_directory)
    found = RecordFile(path, str(col.id)).documents(ids, keys)
    assert found is not None
    expected = _chroma(col, ids)
    restricted = {k: (d, m if keys is None else {key: v for key, v in m.items() if key in keys})
                  for k, (d, m) in expected.items()}
    assert {k: (d, _typed(m)) for k, (d, m) in found.items()} == {k: (d, _typed(m)) for k, (d, m) in restricted.items()}
    metadatas = RecordFile(path, str(col.id)).metadatas(ids)
    assert metadatas is not None and {k: _typed(m) for k, m in metadatas.items()} == {
        k: _typed(m) for k, (_, m) in expected.items()}


def _typed(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata with each value's type beside it: dict equality alone has True == 1 == 1.0."""
    return {k: [(type(x), x) for x in v] if isinstance(v, list) else (type(v), v) for k, v in meta.items()}


def _index(tmp_path: Path) -> tuple[Store, list[str]]:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"page{i}.md").write_text(f"---\ntags: [a{i}, b]\n---\n# Page {i}\n\nAbout topic {i} and more.\n")
    location = StoreLocation(tmp_path / "idx", "docs")
    embedder = RecordingEmbedder()
    params = ChunkParams()
    ingest(open_for_writing(location, Fingerprint.build(embedder.info, params)), embedder, ScanOptions(docs), params)
    store = Store.open(location)
    return store, [rid for rid, _ in store.iter_metadata()]


def test_a_store_reads_documents_from_the_file_and_chroma_agrees(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store, ids = _index(tmp_path)
    expected = _chroma(store._collection, ids)
    assert all(text for text, _ in expected.values()) and all(m["fm.tags"][1] == "b" for _, m in expected.values())

    def no_get(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("read through Chroma")
    monkeypatch.setattr(store._collection, "get", no_get)
    assert store.get_documents(ids) == expected
    assert store.get_metadatas(ids) == {k: m for k, (_, m) in expected.items()}


def test_writes_the_segment_has_not_applied_are_read_through_chroma(tmp_path: Path) -> None:
    """A writer killed between Chroma's log and its segments leaves writes that Chroma applies at its next read:
    the file alone would miss them, so the reader declines (here: a log entry newer than the segment's)."""
    store, ids = _index(tmp_path)
    reader = RecordFile(store.location.path, str(store._collection.id))
    assert reader.documents(ids[:2]) is not None
    with sqlite3.connect(store.location.path / CHROMA_FILE) as db:
        topic, = db.execute("SELECT topic FROM embeddings_queue ORDER BY seq_id DESC LIMIT 1").fetchone()
        db.execute("INSERT INTO embeddings_queue (seq_id, operation, topic, id) VALUES "
                   "((SELECT max(seq_id) + 1000 FROM embeddings_queue), 0, ?, 'unapplied')", (topic,))
    assert reader.documents(ids[:2]) is None and reader.metadatas(ids[:2]) is None


def test_a_schema_other_than_chromas_known_one_is_read_through_chroma(tmp_path: Path) -> None:
    store, ids = _index(tmp_path)
    with sqlite3.connect(store.location.path / CHROMA_FILE) as db:
        db.execute("INSERT INTO migrations (dir, version, filename, sql, hash) "
                   "VALUES ('metadb', 7, '00007-future.sqlite.sql', '', '')")
    assert RecordFile(store.location.path, str(store._collection.id)).documents(ids) is None
    # and the store still answers, through Chroma
    assert Store.open(store.location).get_documents(ids[:1])


def test_an_unreadable_file_is_read_through_chroma(tmp_path: Path) -> None:
    assert RecordFile(tmp_path, "no-such-collection").documents(["x"]) is None


def test_a_later_write_to_another_collection_leaves_the_reader_on(tmp_path: Path) -> None:
    """A reindex's new collection, a backup: their writes come after the live collection's last one in Chroma's
    log, and the live collection's records are still all applied."""
    store, ids = _index(tmp_path)
    other = store._client.create_collection("another-one", embedding_function=None)
    other.add(ids=["x"], embeddings=[[0.5] * 384], documents=["later"])
    assert RecordFile(store.location.path, str(store._collection.id)).documents(ids) == _chroma(store._collection, ids)
