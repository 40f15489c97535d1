"""verify catches every injected corruption, names its kind, and --repair turns the index back into a clean build.

Each corruption is one a bug, a kill, another tool or Chroma itself could leave; the list covers every part of a
record (id, text, each kind of metadata value, vector), the keyword index (rows, their text, bm25 statistics) and
what deletes leave in Chroma's files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from docvec.keyword import KeywordIndex, keyword_path
from docvec.store import Store, StoreLocation
from docvec.ingest.scan import ScanOptions
from docvec.ingest.sync import sync_index
import docvec.ingest.verify as verify_module
from docvec.ingest.verify import KINDS, VerifyReport, repair, verify
from tests.conftest import RecordingEmbedder
from tests.convergence import ALL, PARAMS, snapshot

Corruption = Callable[[Store, Path], None]


def _records(store: Store) -> dict[str, dict[str, object]]:
    return dict(sorted(store.iter_metadata()))


def _one(store: Store, source: str = "guides/webhooks.md") -> tuple[str, dict[str, object]]:
    return next((rid, m) for rid, m in _records(store).items() if m["source"] == source)


def _meta(change: Callable[[dict[str, object]], dict[str, object]]) -> Corruption:
    def corrupt(store: Store, _: Path) -> None:
        rid, meta = _one(store)
        store.replace_metadata([rid], [change(dict(meta))], {rid: meta})
    return corrupt


def _sql(statement: Callable[[Store], str]) -> Corruption:
    def corrupt(store: Store, _: Path) -> None:
        with sqlite3.connect(store.location.path / "chroma.sqlite3") as db:
            db.execute(statement(store))
    return corrupt


def _keyword(change: Callable[[KeywordIndex, Store], None]) -> Corruption:
    def corrupt(store: Store, _: Path) -> None:
        index = KeywordIndex(keyword_path(store.location, store.name))
        change(index, store)
    return corrupt


def _keyword_rows(index: KeywordIndex, add: list[tuple[str, str, str]], delete: list[str]) -> None:
    session = index.session()
    session.write(add, delete, {})
    session.close()


def _stale_statistics(index: KeywordIndex, store: Store) -> None:
    """Delete a row and add it again in its own commit: the rows are right, bm25 still counts the deleted one."""
    rid, meta = _one(store)
    text = store.get_documents([rid])[rid][0]
    _keyword_rows(index, [], [rid])
    _keyword_rows(index, [(rid, str(meta["label"]), text)], [])


def _add_record(meta_change: Callable[[dict[str, object]], dict[str, object]], rid: str = "f" * 32) -> Corruption:
    def corrupt(store: Store, _: Path) -> None:
        _, meta = _one(store)
        store.add([rid], [np.eye(384, dtype=np.float32)[0]], ["an extra chunk"], [meta_change(dict(meta))])
    return corrupt


def _vector(vector: Callable[[Store, str], np.ndarray]) -> Corruption:
    def corrupt(store: Store, _: Path) -> None:
        rid, _ = _one(store)
        store._collection.update(ids=[rid], embeddings=[vector(store, rid)])
    return corrupt


def _other_records_vector(store: Store, rid: str) -> np.ndarray:
    other = next(r for r in _records(store) if r != rid and store.get_embeddings([r])[r].tolist()
                 != store.get_embeddings([rid])[rid].tolist())
    return store.get_embeddings([other])[other]


def _delete_record(store: Store, _: Path) -> None:
    store.delete([_one(store)[0]])


def _change_text(store: Store, _: Path) -> None:
    rid = _one(store)[0]
    store._collection.update(ids=[rid], documents=["text no file has"], embeddings=[store.get_embeddings([rid])[rid]])


def _remove_keyword_index(store: Store, _: Path) -> None:
    import shutil

    shutil.rmtree(keyword_path(store.location, store.name))


def _inherit_tags(store: Store) -> str:
    """Rows as Chroma's delete_collection leaves them, on the integer id of a live record."""
    rid, _ = _one(store, "guides/quickstart.md")
    return (f"INSERT INTO embedding_metadata_array (id, key, string_value) SELECT id, 'fm.tags', 'secret' "
            f"FROM embeddings WHERE embedding_id = '{rid}'")


CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "metadata key added": (_meta(lambda m: {**m, "fm.audience": "internal"}), "metadata_differs"),
    "metadata key removed": (_meta(lambda m: {k: v for k, v in m.items() if k != "title"}), "metadata_differs"),
    "metadata value changed": (_meta(lambda m: {**m, "label": "Something else"}), "metadata_differs"),
    "list value changed": (_meta(lambda m: {**m, "dirs": ["private"]}), "metadata_differs"),
    "number type changed": (_meta(lambda m: {**m, "start_line": float(m["start_line"])}),  # type: ignore[arg-type]
                            "metadata_differs"),
    "residue rows inherited": (_sql(_inherit_tags), "metadata_differs"),
    "residue rows left": (_sql(lambda s: "INSERT INTO embedding_metadata_array (id, key, string_value) VALUES "
                                         "(999999, 'fm.tags', 'secret')"), "residue"),
    "another fingerprint": (_meta(lambda m: {**m, "fp": "000000000000"}), "wrong_fingerprint"),
    "text changed": (_change_text, "text_differs"),
    "record missing": (_delete_record, "incomplete"),
    "record of no file": (_add_record(lambda m: {**m, "source": "gone.md"}), "orphans"),
    "extra record of a current file": (_add_record(lambda m: m), "duplicates"),
    "record without a source": (_add_record(lambda m: {k: v for k, v in m.items() if k != "source"}), "orphans"),
    "vector of another text": (_vector(_other_records_vector), "wrong_vectors"),
    "vector not unit length": (_vector(lambda s, r: np.full(384, 0.5, dtype=np.float32)), "bad_vectors"),
    "vector of zeros": (_vector(lambda s, r: np.zeros(384, dtype=np.float32)), "bad_vectors"),
    "keyword row missing": (_keyword(lambda i, s: _keyword_rows(i, [], [_one(s)[0]])), "keyword_out_of_sync"),
    "keyword ghost row": (_keyword(lambda i, s: _keyword_rows(i, [("e" * 32, "Ghost", "token rejected")], [])),
                          "keyword_out_of_sync"),
    "keyword row of other text": (_keyword(lambda i, s: _keyword_rows(
        i, [(_one(s)[0], str(_one(s)[1]["label"]), "other words")], [_one(s)[0]])), "keyword_out_of_sync"),
    "keyword row twice": (_keyword(lambda i, s: _keyword_rows(
        i, [(_one(s)[0], str(_one(s)[1]["label"]), s.get_documents([_one(s)[0]])[_one(s)[0]][0])], [])),
        "keyword_out_of_sync"),
    "keyword statistics stale": (_keyword(_stale_statistics), "keyword_deleted_rows"),
    "keyword index missing": (_remove_keyword_index, "keyword_out_of_sync"),
}


def _found(report: VerifyReport) -> dict[str, object]:
    """What a verification found, in an order that does not depend on how its files were windowed."""
    return {**{k: sorted(getattr(report, k)) for k in KINDS}, "deleted": report.keyword_deleted_rows,
            "residue": report.residue, "kinds": sorted(report.examples)}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_verify_catches_each_corruption_and_repair_restores_a_clean_build(name: str, tmp_path: Path, docs: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt, kind = CORRUPTIONS[name]
    embedder = RecordingEmbedder()
    location = StoreLocation(tmp_path / "index", "docvec")
    sync_index(location, embedder, ScanOptions(docs), PARAMS[0], ALL)
    clean = snapshot(location)
    store = Store.open(location)
    corrupt(store, docs)
    found = verify(store, embedder.count_tokens, store.fingerprint(), ScanOptions(docs), ALL, embedder)
    with monkeypatch.context() as m:  # a clean build compared one file at a time finds exactly the same
        m.setattr(verify_module, "VERIFY_FILES", 1)
        one_by_one = verify(store, embedder.count_tokens, store.fingerprint(), ScanOptions(docs), ALL, embedder)
    assert _found(one_by_one) == _found(found)
    assert found.problems > 0, name
    assert getattr(found, kind), (name, kind, found.as_dict())
    assert kind in found.examples or kind in ("residue",)
    after = repair(store, embedder, ScanOptions(docs), PARAMS[0], found, guard=ALL)
    assert after.problems == 0, (name, after.as_dict())
    assert not snapshot(location).differences(clean), name


def test_every_corruption_kind_is_reported_by_the_cli(tmp_path: Path, project: Path) -> None:
    """The CLI names the difference and an example in one line per kind (residue and a lost tag here)."""
    from click.testing import CliRunner

    from docvec.cli import cli

    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", *cfg]).exit_code == 0
    store = Store.open(StoreLocation(project / "index", "docvec"))
    _sql(_inherit_tags)(store, project)
    result = CliRunner().invoke(cli, ["verify", *cfg])
    assert result.exit_code == 1
    assert "metadata is not the file's" in result.output
    assert "key 'fm.tags' is ['getting-started', 'secret'], the file says ['getting-started']" in result.output
    fixed = CliRunner().invoke(cli, ["verify", "--repair", *cfg])
    assert fixed.exit_code == 0, fixed.output
    assert "ok: the index is what a clean build" in CliRunner().invoke(cli, ["verify", *cfg]).output
