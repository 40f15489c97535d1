"""The outside findings of issue 29, replayed through the CLI as a user met them: each ends in exactly what a clean
build holds, and `verify` says so."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from docvec.chunker import ChunkParams
from docvec.cli import cli
from docvec.fingerprint import Fingerprint
from docvec.ingest.pipeline import open_for_writing
from docvec.lock import lock_path_for, writer_lock
from docvec.store import Store, StoreLocation
from tests.conftest import RecordingEmbedder
from tests.convergence import snapshot
from tests.test_server_mode import chroma_server  # noqa: F401 - the real `chroma run` fixture

SECRET = "---\ntitle: {title}\ntags: [internal, secret]\naudience: staff\n---\n# {title}\n\n{body}\n"
BODY = "Marmosets live in the forest canopy and eat tree gum. They groom each other for hours every day."


def _docvec(project: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _project(tmp_path: Path, extra: str = "") -> Path:
    docs = tmp_path / "docs"
    for n in range(3):
        path = docs / "tutorial" / f"private{n}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SECRET.format(title=f"Marmosets {n}", body=f"{BODY} Troop {n} counts {n + 5} animals."))
    (tmp_path / "config.yaml").write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n{extra}")
    return tmp_path


def _files(output: str) -> list[str]:
    return [json.loads(line)["source"] for line in output.splitlines() if line.startswith("{")]


def test_a_pruned_index_leaves_nothing_new_records_inherit(tmp_path: Path) -> None:
    """The repro of finding 1: reindex (other HNSW), rollback, prune --all, then a new untagged page."""
    project = _project(tmp_path)
    _docvec(project, "ingest", "-q")
    config = project / "config.yaml"
    plain = config.read_text()
    config.write_text(plain + "  hnsw_max_neighbors: 24\n")
    _docvec(project, "reindex", "-q")
    _docvec(project, "rollback")
    _docvec(project, "prune", "--all")
    config.write_text(plain)
    (project / "docs" / "public.md").write_text("# Public\n\nMarmosets are small monkeys anyone may read about.\n")
    _docvec(project, "ingest", "-q")
    secret = _docvec(project, "query", "marmosets", "--where", "tag=secret", "--files", "--json", "--no-server")
    assert "public.md" not in _files(secret)
    tutorial = _docvec(project, "query", "marmosets", "--where", "source=tutorial/", "--json", "--no-server")
    assert "public.md" not in _files(tutorial)
    assert "ok: the index is what a clean build" in _docvec(project, "verify")


def test_front_matter_keys_removed_from_a_file_leave_the_index(tmp_path: Path) -> None:
    """Finding 2: the body is unchanged, the front matter loses tags and audience."""
    project = _project(tmp_path)
    _docvec(project, "ingest", "-q")
    page = project / "docs" / "tutorial" / "private0.md"
    page.write_text(f"---\ntitle: Marmosets 0\n---\n# Marmosets 0\n\n{BODY} Troop 0 counts 5 animals.\n")
    _docvec(project, "ingest", "-q")
    secret = _docvec(project, "query", "marmosets", "--where", "tag=secret", "--files", "--json", "--no-server")
    assert "tutorial/private0.md" not in _files(secret) and len(_files(secret)) == 2
    store = Store.open(StoreLocation(project / "index", "docvec"))
    metas = [m for _, m in store.iter_metadata() if m["source"] == "tutorial/private0.md"]
    assert metas and all("fm.tags" not in m and "fm.audience" not in m for m in metas)
    assert "ok: the index is what a clean build" in _docvec(project, "verify")


def test_replacing_metadata_sends_the_changed_keys_and_leaves_exactly_the_new_metadata(
        tmp_path: Path, recorder: RecordingEmbedder) -> None:
    """Chroma's update merges keys: docvec sends only what differs (a kept chunk's new file version, not all its
    keys) and None for keys that go, and the record ends up exactly as a clean build writes it, types included
    (True is not 1, 1 is not 1.0, as Chroma stores them apart)."""
    fingerprint = Fingerprint.build(recorder.info, ChunkParams())
    store = open_for_writing(StoreLocation(tmp_path / "index", "docvec"), fingerprint)
    old = {"source": "a.md", "file_hash": "v1", "n": 1, "flag": True, "x": 1.0, "dirs": ["a", "b"], "fm.tags": "s"}
    new = {"source": "a.md", "file_hash": "v2", "n": True, "flag": True, "x": 1, "dirs": ["a", "b"], "added": 3}
    store.add(["r1", "r2"], recorder.embed_documents(["one", "two"]), ["one", "two"], [old, {**old, "source": "b.md"}])
    sent: list[object] = []
    update = store._collection.update

    def spy(**kwargs: object) -> None:
        sent.append(kwargs["metadatas"])
        update(**kwargs)  # type: ignore[arg-type]
    store._collection.update = spy  # type: ignore[method-assign]
    stored = store.get_metadatas(["r1", "r2"])
    store.replace_metadata(["r1", "r2"], [new, stored["r2"]], stored)  # r2 unchanged: nothing to send
    assert sent == [[{"file_hash": "v2", "n": True, "x": 1, "added": 3, "fm.tags": None}]]
    after = store.get_metadatas(["r1", "r2"])
    assert json.dumps(after["r1"], sort_keys=True) == json.dumps(new, sort_keys=True)
    assert after["r2"] == stored["r2"]


def test_scores_after_many_edits_are_a_clean_builds(tmp_path: Path) -> None:
    """Finding 4: twelve edits of one file; bm25 statistics count no deleted row, so every score is a clean
    build's."""
    project = _project(tmp_path)
    page = project / "docs" / "guide.md"
    for n in range(12):
        sections = [f"## Part {i}\n\nMarmosets part {i} {'groom ' * (i + 1)}forest." for i in range(6)]
        sections[n % 6] = f"## Part {n % 6}\n\nEdit {n}: marmosets sleep in tree holes."
        page.write_text("# Guide\n\n" + "\n\n".join(sections) + "\n")
        _docvec(project, "ingest", "-q")
    clean = _project(tmp_path / "clean")
    (clean / "docs" / "guide.md").write_text(page.read_text())
    (clean / "config.yaml").write_text(f"docs:\n  path: {project / 'docs'}\nstore:\n  path: {clean / 'index'}\n")
    _docvec(clean, "ingest", "-q")
    edited = snapshot(StoreLocation(project / "index", "docvec"))
    assert not edited.differences(snapshot(StoreLocation(clean / "index", "docvec")))
    args = ["query", "marmosets groom tree holes", "--mode", "keyword", "-k", "20", "--json", "--no-server"]
    assert _docvec(project, *args) == _docvec(clean, *args)


def test_status_names_a_killed_builds_collection_and_counts_new_files_as_such(tmp_path: Path) -> None:
    """Finding 5: a collection a run stopped writing is not a 'backup'; a new file is not 'modified'."""
    project = _project(tmp_path)
    _docvec(project, "ingest", "-q")
    live = Store.open(StoreLocation(project / "index", "docvec"))
    other = Store.open_physical(live.location, "docvec--000000000000", live.fingerprint())
    other.begin_write()  # as a reindex killed after its first write leaves it
    (project / "docs" / "tutorial" / "private0.md").write_text(SECRET.format(title="Changed", body=BODY))
    (project / "docs" / "new.md").write_text("# New\n\nA new page.\n")
    shown = _docvec(project, "status")
    assert "docvec--000000000000: incomplete: a run stopped while writing it" in shown
    assert "backup" not in shown
    assert "2 files new or modified since, 4 files now, 3 then" in shown


def test_verify_while_a_writer_runs_says_so_instead_of_suggesting_repair(tmp_path: Path) -> None:
    """Finding 5: what verify finds during another process's run may be that run's work in progress."""
    project = _project(tmp_path)
    _docvec(project, "ingest", "-q")
    (project / "docs" / "new.md").write_text("# New\n\nA new page.\n")
    with writer_lock(lock_path_for(project / "index", "docvec")):
        result = CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), "verify"])
    assert result.exit_code == 1
    assert "a writer is running" in result.output and "--repair" not in result.output


def test_records_written_to_a_server_never_inherit_another_clients_residue(tmp_path: Path,
                                                                            chroma_server: int) -> None:
    """Another client's delete_collection leaves list rows on the server that docvec cannot sweep: a record
    docvec adds next must still carry exactly its own metadata."""
    import chromadb
    import numpy as np
    from chromadb.config import Settings

    project = _project(tmp_path, f"  host: 127.0.0.1\n  port: {chroma_server}\n  collection: inherit\n")
    _docvec(project, "ingest", "-q")
    other = chromadb.HttpClient(host="127.0.0.1", port=chroma_server, settings=Settings(anonymized_telemetry=False))
    foreign = other.create_collection("someone-elses", embedding_function=None)
    foreign.add(ids=[f"x{i}" for i in range(20)], embeddings=np.eye(20, 8, dtype=np.float32) + 0.1,
                documents=["x"] * 20, metadatas=[{"fm.tags": ["secret"], "dirs": ["tutorial"]}] * 20)
    other.delete_collection("someone-elses")
    (project / "docs" / "public.md").write_text("# Public\n\nMarmosets are small monkeys anyone may read about.\n")
    _docvec(project, "ingest", "-q")
    secret = _docvec(project, "query", "marmosets", "--where", "tag=secret", "--files", "--json", "--no-server")
    assert "public.md" not in _files(secret)
    assert "ok: the index is what a clean build" in _docvec(project, "verify")


def test_writers_sweep_what_a_record_could_inherit_and_verify_finds_the_rest(tmp_path: Path) -> None:
    """A whole sweep reads every metadata row (10 s at 1M chunks): writers make it when the catalog changed since the
    last one, else sweep just the rows above the highest record id (the ids SQLite gives new records)."""
    import sqlite3

    project = _project(tmp_path)
    _docvec(project, "ingest", "-q")
    store = Store.open(StoreLocation(project / "index", "docvec"))
    other = store._client.create_collection("someone-elses", embedding_function=None)
    other.add(ids=["x"], embeddings=[[0.1] * 384], metadatas=[{"tags": ["internal", "secret"]}])
    store._client.delete_collection("someone-elses")  # another tool, between two runs: its list rows stay behind
    assert store.residue()
    _docvec(project, "ingest", "-q")
    assert not store.residue()
    for orphan, swept in ((999_999, True), (0, False)):  # above every record's id / below it
        with sqlite3.connect(project / "index" / "chroma.sqlite3") as db:
            db.execute(f"INSERT INTO embedding_metadata_array (id, key, string_value) VALUES ({orphan}, 'tag', 'x')")
        _docvec(project, "ingest", "-q")
        assert store.residue() == ({} if swept else {"metadata_array": 1})
    assert "residue" in CliRunner().invoke(cli, ["--config", str(project / "config.yaml"), "verify"]).output
    _docvec(project, "verify", "--repair")
    assert not store.residue()
    assert "ok: the index is what a clean build" in _docvec(project, "verify")
