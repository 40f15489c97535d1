"""Model switches: refused by ingest, done by reindex beside the live index, undone by rollback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from docvec.chunker import ChunkParams, content_hash
from docvec.cli import cli
from docvec.embedders.builtin import BuiltinEmbedder
from docvec.errors import IndexMismatch, Refused
from docvec.fingerprint import Fingerprint
from docvec.store import Store, StoreLocation
from docvec.ingest.pipeline import SyncGuard, ingest, open_for_writing
from docvec.ingest.reindex import prune, reindex, rollback
from docvec.ingest.scan import ScanOptions
from docvec.ingest.verify import verify
from docvec.query.search import search
from tests.conftest import RecordingEmbedder
from tests.test_crash import _corpus

PARAMS = ChunkParams()
QUESTION = "My API request keeps getting rejected even though I send a token."


def _answers(location: StoreLocation, embedder: object) -> list[tuple[str, float]]:
    store = Store.open(location)
    return [(h.id, round(h.score, 5)) for h in search(store, embedder, QUESTION, 5)]  # type: ignore[arg-type]


def test_same_dimension_model_switch_is_detected(tmp_path: Path, docs: Path, builtin: BuiltinEmbedder) -> None:
    location = StoreLocation(tmp_path / "idx", "docs")
    ingest(open_for_writing(location, Fingerprint.build(builtin.info, PARAMS)), builtin, ScanOptions(docs), PARAMS)
    other = RecordingEmbedder("other-minilm")
    assert other.info.dimension == builtin.info.dimension == 384
    with pytest.raises(IndexMismatch, match=r"provider: 'builtin' → 'test'.*model: 'all-MiniLM-L6-v2' → "
                                            r"'other-minilm'.*docvec reindex"):
        open_for_writing(location, Fingerprint.build(other.info, PARAMS))


def test_a_reindex_that_would_drop_most_files_asks_for_yes(tmp_path: Path) -> None:
    """Switching to an index built from a half-empty folder (an unmounted volume, a wrong checkout) deletes those
    files from what queries see, like a sync would: the same --yes. The built index is kept for the re-run."""
    docs = tmp_path / "docs"
    _corpus(docs, 10, seed=5)
    location = StoreLocation(tmp_path / "idx", "docs")
    embedder = RecordingEmbedder()
    ingest(open_for_writing(location, Fingerprint.build(embedder.info, PARAMS)), embedder, ScanOptions(docs), PARAMS)
    live_name = Store.open(location).name
    for f in sorted(docs.glob("*.md"))[:7]:
        f.unlink()
    smaller = ChunkParams(max_tokens=128)
    with pytest.raises(Refused, match=r"lacks 7 of the live index's 10 files.*--yes"):
        reindex(location, embedder, ScanOptions(docs), smaller)
    assert Store.open(location).name == live_name  # still answering from all ten files
    embedder.embedded.clear()
    report = reindex(location, embedder, ScanOptions(docs), smaller, guard=SyncGuard(allow_mass_delete=True))
    assert report.switched and report.resumed and not embedder.embedded  # the kept build, nothing embedded again
    assert Store.open(location).name != live_name


def test_reindex_switches_and_rollback_restores_exactly(tmp_path: Path, docs: Path) -> None:
    location = StoreLocation(tmp_path / "idx", "docs")
    old, new = RecordingEmbedder("model-a"), RecordingEmbedder("model-b")
    ingest(open_for_writing(location, Fingerprint.build(old.info, PARAMS)), old, ScanOptions(docs), PARAMS)
    before = _answers(location, old)
    report = reindex(location, new, ScanOptions(docs), PARAMS)
    assert report.switched and report.changes == ["model: 'model-a' → 'model-b'"]
    live = Store.open(location)
    assert live.fingerprint().model == "model-b" and live.name == report.live
    assert {c.name: (c.live, c.previous) for c in live.physical_collections()} == {
        report.live: (True, False), report.previous: (False, True)}
    rollback(location)
    assert Store.open(location).fingerprint().model == "model-a"
    assert _answers(location, old) == before
    # switching back to model-b reuses the kept backup: nothing to embed
    again = RecordingEmbedder("model-b")
    second = reindex(location, again, ScanOptions(docs), PARAMS)
    assert second.resumed and second.switched and again.calls == 0
    assert prune(location) == [] and prune(location, keep_previous=False) == [second.previous]
    assert [c.name for c in Store.open(location).physical_collections()] == [second.live]


def test_a_chunking_change_copies_the_vectors_of_texts_the_live_index_has(tmp_path: Path, docs: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    location = StoreLocation(tmp_path / "idx", "docs")
    before = RecordingEmbedder("model-a")
    ingest(open_for_writing(location, Fingerprint.build(before.info, PARAMS)), before, ScanOptions(docs), PARAMS)
    old_live = Store.open(location)
    old_metas = dict(old_live.iter_metadata())
    old_vectors = {old_metas[rid]["hash"]: v for rid, v in old_live.get_embeddings(list(old_metas)).items()}
    # A new chunker version cutting the same texts: nothing to embed, every vector the live one's
    monkeypatch.setattr("docvec.fingerprint.CHUNKER_VERSION", "test-bump")
    same = RecordingEmbedder("model-a")
    report = reindex(location, same, ScanOptions(docs), PARAMS)
    assert report.switched and report.changes == ["chunker_version: '7' → 'test-bump'"]
    assert same.calls == 0 and report.ingest and report.ingest.chunks_reused == report.ingest.chunks_total > 0
    live = Store.open(location)
    metas = dict(live.iter_metadata())
    stored = live.get_embeddings(list(metas))
    # (Chroma's read of a stored vector can differ from what was written by an ulp)
    assert all(np.allclose(stored[rid], old_vectors[m["hash"]], atol=1e-6) for rid, m in metas.items())
    assert verify(live, same.count_tokens, live.fingerprint(), ScanOptions(docs)).problems == 0
    # Smaller chunks: only the texts the live index does not have are embedded
    smaller = ChunkParams(max_tokens=64, min_tokens=16, overlap_tokens=8)
    resized = RecordingEmbedder("model-a")
    known = {str(m["hash"]) for m in metas.values()}
    second = reindex(location, resized, ScanOptions(docs), smaller)
    new_hashes = {str(m["hash"]) for _, m in Store.open(location).iter_metadata()}
    assert second.switched and 0 < len(resized.embedded) == len(new_hashes - known) < len(new_hashes)
    assert {content_hash(t) for t in resized.embedded} == new_hashes - known
    # Another model lends nothing
    other = RecordingEmbedder("model-b")
    reindex(location, other, ScanOptions(docs), smaller)
    assert len(other.embedded) == len(new_hashes)


def _docvec(args: list[str], config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DOCVEC_CONFIG": str(config)}
    return subprocess.Popen([sys.executable, "-m", "docvec.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _size(index: Path) -> int:
    return sum(p.stat().st_size for p in index.rglob("*") if p.is_file())


def _query(config: Path) -> list[tuple[str, float]]:
    proc = _docvec(["query", "tokens rejected with a quota error", "-k", "5", "--json"], config)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return [(h["id"], h["score"]) for h in map(json.loads, out.splitlines())]


def test_killed_reindex_leaves_the_live_index_answering_and_resumes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 60, seed=3)
    config = tmp_path / "config.yaml"
    config.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n")
    assert _docvec(["ingest", "-q"], config).wait(timeout=300) == 0
    before = _query(config)
    config.write_text(config.read_text() + "chunking:\n  max_tokens: 64\n  min_tokens: 16\n  overlap_tokens: 16\n")  # another fingerprint
    refused = _docvec(["ingest", "-q"], config)
    assert refused.wait(timeout=120) == 1 and "max_tokens: 256 → 64" in refused.communicate()[1]

    baseline = _size(tmp_path / "index")
    running = _docvec(["reindex", "-q"], config)
    during = _query(config)  # a query from another process while the new index is being built
    assert running.poll() is None, "the reindex finished before the test could query during it"
    assert during == before
    # SIGKILL once its first window of vectors is stored: an add of 128 chunks writes ~1.1 MB, a reader's
    # WAL activity well under 600 kB
    while running.poll() is None and _size(tmp_path / "index") - baseline < 600_000:
        time.sleep(0.005)
    running.send_signal(signal.SIGKILL)
    running.wait()
    assert _query(config) == before  # killed half-way: the live index answers exactly as before

    done = _docvec(["reindex", "--json", "-q"], config)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    report = json.loads(out)
    assert report["switched"] and report["resumed"]
    assert report["ingest"]["chunks_embedded"] < report["ingest"]["chunks_total"]  # finished, not restarted
    after = _query(config)
    assert after != before
    assert _docvec(["verify"], config).wait(timeout=120) == 0

    assert _docvec(["rollback"], config).wait(timeout=120) == 0
    config.write_text(config.read_text().replace("  max_tokens: 64\n  min_tokens: 16\n  overlap_tokens: 16\n", ""))
    assert _query(config) == before


def test_status_lists_live_and_backups(project: Path) -> None:
    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", *cfg]).exit_code == 0
    (project / "config.yaml").write_text((project / "config.yaml").read_text() + "chunking:\n  overlap_tokens: 0\n")
    result = CliRunner().invoke(cli, ["reindex", *cfg])
    assert result.exit_code == 0, result.output
    assert "kept for `docvec rollback`" in result.output and "overlap_tokens: 32 → 0" in result.output
    status = CliRunner().invoke(cli, ["status", *cfg]).output
    assert ": live," in status and "previous (rollback)" in status
    assert CliRunner().invoke(cli, ["prune", "--all", *cfg]).exit_code == 0
    assert "previous (rollback)" not in CliRunner().invoke(cli, ["status", *cfg]).output


def test_query_with_an_unavailable_index_model_is_a_clear_error(project: Path, docs: Path) -> None:
    location = StoreLocation(project / "index", "docvec")
    other = RecordingEmbedder("someone-elses-model")
    ingest(open_for_writing(location, Fingerprint.build(other.info, PARAMS)), other, ScanOptions(docs), PARAMS)
    result = CliRunner().invoke(cli, ["query", "token", "--config", str(project / "config.yaml")])
    assert result.exit_code == 1
    assert "note: the index was built with test:someone-elses-model" in result.output
    assert "cannot be loaded here" in result.output and "docvec reindex" in result.output


def _churned(tmp_path: Path) -> tuple[StoreLocation, Path, RecordingEmbedder]:
    """An index whose every chunk was deleted and written again once: Chroma saves its graph's header only every
    ~1,000 writes, so the corpus is large enough for each sync to save it."""
    docs = tmp_path / "docs"
    _corpus(docs, 480, seed=11)
    location = StoreLocation(tmp_path / "idx", "docs")
    embedder = RecordingEmbedder()
    ingest(open_for_writing(location, Fingerprint.build(embedder.info, PARAMS)), embedder, ScanOptions(docs), PARAMS)
    for f in docs.glob("*.md"):  # every chunk's text changes: its old vector is deleted, a new one added
        f.write_text(f.read_text().replace("# Document", "# Chapter"))
    report = ingest(Store.open(location), embedder, ScanOptions(docs), PARAMS)
    assert report.warnings == [f"{report.chunks_total} of the HNSW graph's {2 * report.chunks_total} slots hold "
                               f"deleted chunks (memory and search time): `docvec reindex --compact` rebuilds it "
                               f"without them, re-embedding nothing"]
    return location, docs, embedder


def test_status_counts_graph_slots_of_deleted_chunks_and_compact_drops_them(tmp_path: Path) -> None:
    """Chroma's local HNSW never reuses a deleted vector's slot (its memory and search time grow with every
    edit); `status` counts them and `reindex --compact` copies the live vectors into a new graph, embedding
    nothing, and answers as before."""
    location, docs, embedder = _churned(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {location.path}\n  collection: docs\n")
    status = json.loads(CliRunner().invoke(cli, ["status", "--json", "--config", str(cfg)]).output)
    chunks, hnsw = status["chunks"], status["hnsw"]
    assert chunks >= 1000 and hnsw["slots"] == 2 * chunks and hnsw["dead_slots"] == chunks
    assert hnsw["memory_bytes"] >= hnsw["slots"] * 384 * 4
    assert "50%): `docvec reindex --compact` rebuilds" in CliRunner().invoke(cli, ["status", "--config",
                                                                                    str(cfg)]).output
    before, calls = _answers(location, embedder), embedder.calls
    report = reindex(location, embedder, ScanOptions(docs), PARAMS, compact=True)
    assert report.switched and report.changes == [f"compacted: {chunks} graph slots of deleted chunks dropped"]
    assert embedder.calls == calls and _answers(location, embedder) == before
    live = Store.open(location)
    assert live.name == f"{report.previous}-c2"
    assert live.hnsw_slots().slots <= chunks  # type: ignore[union-attr]  # (the saved header trails <1,000 writes)
    after = json.loads(CliRunner().invoke(cli, ["status", "--json", "--config", str(cfg)]).output)["hnsw"]
    assert after["dead_slots"] == 0
    assert ingest(Store.open(location), embedder, ScanOptions(docs), PARAMS).warnings == []
    # the rebuild is the configuration's own index: a plain reindex syncs it, switching nothing
    assert not reindex(location, embedder, ScanOptions(docs), PARAMS).switched
    assert reindex(location, embedder, ScanOptions(docs), PARAMS, compact=True).live == f"{report.previous}-c3"


def test_a_stopped_compaction_is_resumed_by_the_next_reindex(tmp_path: Path) -> None:
    """A compaction killed half-way leaves an incomplete rebuild: the next `reindex`, --compact or not, completes
    that one (copying only what it lacks) rather than starting another or leaving it behind."""
    location, docs, embedder = _churned(tmp_path)
    live = Store.open(location)
    stopped = Store.open_physical(location, live.name + "-c2", live.fingerprint())
    stopped.begin_write()
    page = live._collection.get(limit=300, include=["embeddings", "documents", "metadatas"])
    stopped.add(page["ids"], page["embeddings"], page["documents"], page["metadatas"])
    report = reindex(location, embedder, ScanOptions(docs), PARAMS)
    assert report.switched and report.resumed and report.live == live.name + "-c2"
    assert Store.open(location).count() == live.count() and not Store.open(location).writing()
    assert [c.name for c in Store.open(location).physical_collections()] == [live.name, live.name + "-c2"]
