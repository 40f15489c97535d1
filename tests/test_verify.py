"""verify finds every kind of damage; verify --repair fixes it with the least re-embedding."""

from __future__ import annotations

from pathlib import Path

from docvec.chunker import ChunkParams
from docvec.fingerprint import Fingerprint
from docvec.keyword import KeywordIndex, keyword_path
from docvec.store import Store, StoreLocation
from docvec.ingest.pipeline import ingest, open_for_writing
from docvec.ingest.scan import ScanOptions
from docvec.ingest.verify import repair, verify
from tests.conftest import RecordingEmbedder

PARAMS = ChunkParams()


def _store(index: Path, embedder: RecordingEmbedder) -> Store:
    return open_for_writing(StoreLocation(index, "test"), Fingerprint.build(embedder.info, PARAMS))


def test_clean_index_verifies(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    store = _store(tmp_path / "idx", recorder)
    ingest(store, recorder, ScanOptions(docs), PARAMS)
    report = verify(store, recorder.count_tokens, Fingerprint.build(recorder.info, PARAMS), ScanOptions(docs))
    assert report.problems == 0 and report.files_checked == 12 and report.chunks_checked > 12


def test_every_kind_of_damage_is_found_and_repaired(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    store = _store(tmp_path / "idx", recorder)
    ingest(store, recorder, ScanOptions(docs), PARAMS)
    records = {rid: m for rid, m in store.iter_metadata()}
    by_source: dict[str, list[str]] = {}
    for rid, m in sorted(records.items()):
        by_source.setdefault(m["source"], []).append(rid)
    store.delete(by_source["guides/api-keys.md"][:1])  # incomplete
    (docs / "guides" / "sdks.md").unlink()  # orphans
    (docs / "guides" / "new.md").write_text("# New\n\nA page nobody indexed yet.\n")  # missing
    stale = docs / "reference" / "versioning.md"
    stale.write_text(stale.read_text().replace("72 hours", "96 hours"))  # stale
    wrong = by_source["guides/webhooks.md"][0]
    store.replace_metadata([wrong], [{**records[wrong], "fp": "000000000000"}], {})  # another model's record
    bad = by_source["reference/errors.md"][0]
    store._collection.update(ids=[bad], embeddings=[[0.0] * 384])  # a vector no model produced
    dup_src = by_source["guides/quickstart.md"][0]
    store.add(["duplicate-id"], [[1.0] + [0.0] * 383], ["dup"], [dict(records[dup_src])])  # duplicate

    keyword = KeywordIndex(keyword_path(store.location, store.name))
    keyword.apply([], [by_source["reference/pagination.md"][0]], {})  # a keyword row lost
    keyword.close()

    found = verify(store, recorder.count_tokens, Fingerprint.build(recorder.info, PARAMS), ScanOptions(docs))
    assert by_source["reference/pagination.md"][0] in found.keyword_out_of_sync
    assert found.incomplete == ["guides/api-keys.md", "guides/quickstart.md"]
    assert set(found.orphans) == set(by_source["guides/sdks.md"])
    assert found.missing == ["guides/new.md"] and found.stale == ["reference/versioning.md"]
    assert found.wrong_fingerprint == [wrong] and found.bad_vectors == [bad]
    assert len(found.duplicates) == 1

    fixer = RecordingEmbedder()
    after = repair(store, fixer, ScanOptions(docs), PARAMS, found)
    assert after.problems == 0, after.as_dict()
    # Only the damaged or changed chunks were embedded: one per broken record, plus the new and edited texts.
    assert 0 < len(fixer.embedded) <= 6


def test_verify_cli_exit_codes(project: Path) -> None:
    from click.testing import CliRunner

    from docvec.cli import cli

    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", *cfg]).exit_code == 0
    ok = CliRunner().invoke(cli, ["verify", *cfg])
    assert ok.exit_code == 0 and "ok: the index is what a clean build" in ok.output
    (project / "docs" / "guides" / "sdks.md").unlink()
    bad = CliRunner().invoke(cli, ["verify", *cfg])
    assert bad.exit_code == 1 and "chunks no file has" in bad.output and "--repair" in bad.output
    fixed = CliRunner().invoke(cli, ["verify", "--repair", *cfg])
    assert fixed.exit_code == 0 and "after repair" in fixed.output
    assert CliRunner().invoke(cli, ["verify", *cfg]).exit_code == 0
