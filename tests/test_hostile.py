"""A generated hostile docs folder ingests with no crash: every good file indexed, every other one explained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from docvec.chunker import ChunkParams
from docvec.fingerprint import Fingerprint
from docvec.store import Store, StoreLocation
from docvec.ingest.pipeline import ingest, open_for_writing
from docvec.ingest.scan import ScanOptions
from docvec.ingest.verify import verify
from tests.conftest import RecordingEmbedder

PARAMS = ChunkParams()

BOMB = "---\na: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" \
       "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\ntitle: Bomb\n---\n# Still text\n\nBody.\n"

GOOD = {
    "plain.md": "# Plain\n\nA normal page.\n",
    "utf16.md": "# Überschrift\n\nText mit Umlauten.\n".encode("utf-16"),
    "utf8-bom.md": b"\xef\xbb\xbf# BOM\n\nbyte order mark\n",
    "unclosed-fence.md": "# Code\n\n```python\n" + "x = 1\n" * 400,
    "one-long-line.md": " ".join(f"word{i % 5000}" for i in range(700_000)),  # one 5 MB line
    "nested-lists.md": "".join("  " * i + "- item\n" for i in range(2_000)),  # 2,000 levels
    "many-headings.md": "".join(f"## Heading {i}\n\ntext {i}\n\n" for i in range(10_000)),
    "bad-front-matter.md": "---\ntitle: [unclosed\n---\n# Body survives\n\ntext\n",
    "huge-front-matter.md": "---\n" + "".join(f"k{i}: {'v' * 100}\n" for i in range(1000)) + "---\n# After\n\nok\n",
    "yaml-bomb.md": BOMB,
    "name with spaces é.md": "# Spaces\n\nfine\n",
    "new\nline.md": "# Newline in name\n\nfine\n",
    "sub/deep/page.md": "# Deep\n\nnested folders\n",
}
BAD = {
    "binary.md": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "late-nul.md": (b"# Text\n\n" + b"a" * 10_000 + b"\x00tail", "binary"),
    "latin1.md": (b"caf\xe9 cr\xe8me", "not UTF-8"),
    "empty.md": (b"", "empty"),
    "front-matter-only.md": (b"---\ntitle: Nothing else\n---\n", "no text besides front matter"),
    "blank.md": (b" \n\t\n  ", "empty"),
}


def _hostile(root: Path) -> None:
    for name, content in {**GOOD, **{k: v[0] for k, v in BAD.items()}}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "big.md").write_text("word " * 2_500_000)  # 12.5 MB: over the size limit set below
    os.symlink(root / "plain.md", root / "alias.md")
    os.symlink("/etc/hostname", root / "escape.md")
    os.symlink(root / "loop.md", root / "loop.md")
    os.mkfifo(root / "fifo.md")
    for hidden in (".git", "node_modules", ".drafts"):
        (root / hidden).mkdir()
        (root / hidden / "x.md").write_text("# hidden\n")


def test_permission_denied_is_reported_per_file_and_folder(tmp_path: Path) -> None:
    """Root reads everything, so the scan runs as an unprivileged user (skipped where that is not possible)."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop privileges")
    base = Path(tempfile.mkdtemp())  # pytest's own tmp folders are 0700: the other user could not enter
    os.chmod(base, 0o755)
    docs = base / "docs"
    (docs / "locked").mkdir(parents=True)
    (docs / "ok.md").write_text("# fine\n")
    (docs / "secret.md").write_text("# secret\n")
    (docs / "locked" / "inside.md").write_text("# inside\n")
    os.chmod(docs / "secret.md", 0o000)
    os.chmod(docs / "locked", 0o000)
    os.chmod(docs, 0o755)
    script = ("import json, sys; from pathlib import Path; from docvec.ingest.scan import scan, ScanOptions, read_markdown, "
              "Unreadable\nfiles, skipped = scan(ScanOptions(Path(sys.argv[1])))\nout = {s.rel: s.reason for s in "
              "skipped}\nfor f in files:\n    try: read_markdown(f.path)\n    except Unreadable as e: "
              "out[f.rel] = str(e)\nprint(json.dumps(out))")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                           script, str(docs)], capture_output=True, text=True, cwd=repo, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr
    reasons = json.loads(done.stdout)
    assert reasons == {"locked/": "folder unreadable: Permission denied", "secret.md": "unreadable: Permission denied"}
    os.chmod(docs, 0o000)  # and the docs folder itself: one clear error, no traceback
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                           script, str(docs)], capture_output=True, text=True, cwd=repo, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert "SourceError: docs folder" in done.stderr and "cannot be read: Permission denied" in done.stderr
    os.chmod(docs, 0o755)
    shutil.rmtree(base)


def test_hostile_folder_ingests_every_good_file_and_explains_the_rest(tmp_path: Path,
                                                                      recorder: RecordingEmbedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    _hostile(docs)
    options = ScanOptions(docs, max_bytes=10_000_000)
    store = open_for_writing(StoreLocation(tmp_path / "idx", "hostile"), Fingerprint.build(recorder.info, PARAMS))
    report = ingest(store, recorder, options, PARAMS)
    assert sorted(report.files_added) == sorted(GOOD)
    reasons = {s.rel: s.reason for s in report.skipped}
    for name, (_, why) in BAD.items():
        assert why in reasons[name], (name, reasons.get(name))
    assert "too large" in reasons["big.md"] and "outside the docs folder" in reasons["escape.md"]
    assert "loop" in reasons["loop.md"] and "not a regular file" in reasons["fifo.md"]
    assert not any(".git" in r or "node_modules" in r or ".drafts" in r for r in reasons)
    assert any("bad-front-matter.md: front matter ignored" in w for w in report.warnings)
    assert any("huge-front-matter.md: front matter over" in w for w in report.warnings)
    metas = [m for _, m in Store.open(StoreLocation(tmp_path / "idx", "hostile")).iter_metadata()]
    assert all(m["tokens"] <= 256 for m in metas)
    assert {m["source"] for m in metas} == set(GOOD)
    bomb = [m for m in metas if m["source"] == "yaml-bomb.md"]
    assert bomb[0]["title"] == "Bomb"
    assert verify(store, recorder.count_tokens, Fingerprint.build(recorder.info, PARAMS), options).problems == 0


class FailingEmbedder(RecordingEmbedder):
    """Fails on its n-th call, as a model or server can in the middle of a run."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.fail_on = fail_on

    def embed_documents(self, texts):  # type: ignore[no-untyped-def]
        if self.calls + 1 == self.fail_on:
            from docvec.errors import EmbeddingError
            raise EmbeddingError("model crashed")
        return super().embed_documents(texts)


def test_embedder_failing_mid_run_loses_nothing_and_the_next_run_finishes(tmp_path: Path, docs: Path) -> None:
    from docvec.errors import EmbeddingError
    from tests.test_crash import _corpus

    _corpus(docs / "gen", 60, seed=5)  # enough chunks for several windows
    location = StoreLocation(tmp_path / "idx", "faults")
    failing = FailingEmbedder(fail_on=4)
    store = open_for_writing(location, Fingerprint.build(failing.info, PARAMS))
    with pytest.raises(EmbeddingError, match="model crashed"):
        ingest(store, failing, ScanOptions(docs), PARAMS)
    partial = verify(store, failing.count_tokens, Fingerprint.build(failing.info, PARAMS), ScanOptions(docs))
    assert partial.missing and not (partial.orphans or partial.duplicates or partial.bad_vectors)
    healthy = RecordingEmbedder()
    report = ingest(store, healthy, ScanOptions(docs), PARAMS)
    assert report.chunks_embedded == len(set(healthy.embedded)) and report.files_unchanged > 0
    assert verify(store, healthy.count_tokens, Fingerprint.build(healthy.info, PARAMS), ScanOptions(docs)).problems == 0


def test_corrupted_index_is_a_clear_error_and_is_not_rebuilt(project: Path) -> None:
    from click.testing import CliRunner

    from docvec.cli import cli

    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", *cfg]).exit_code == 0
    sqlite = project / "index" / "chroma.sqlite3"
    sqlite.write_bytes(b"this is not a database" * 100)
    for command in (["status"], ["query", "token"], ["ingest"]):
        result = CliRunner().invoke(cli, [*command, *cfg])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "failed on collection 'docvec'" in result.output
    assert sqlite.read_bytes().startswith(b"this is not a database")  # nothing was silently rebuilt


def test_index_of_another_docvec_version_is_refused_not_rebuilt(project: Path) -> None:
    from click.testing import CliRunner

    from docvec.cli import cli
    from docvec.store import FORMAT_KEY

    cfg = ["--config", str(project / "config.yaml")]
    assert CliRunner().invoke(cli, ["ingest", *cfg]).exit_code == 0
    store = Store.open(StoreLocation(project / "index", "docvec"))
    count = store.count()
    meta = store.collection_metadata()
    store.set_collection_metadata({**meta, FORMAT_KEY: 1, "docvec:version": "0.0.1"})
    for command in (["status"], ["query", "token"], ["ingest"]):
        result = CliRunner().invoke(cli, [*command, *cfg])
        assert result.exit_code == 1, result.output
        assert "has docvec format 1, this docvec reads format 2" in result.output and "0.0.1" in result.output
    assert store.count() == count  # nothing was thrown away


def test_file_vanishing_between_listing_and_reading(tmp_path: Path, docs: Path, recorder: RecordingEmbedder,
                                                   monkeypatch: "pytest.MonkeyPatch") -> None:
    import docvec.ingest.pipeline as pipeline

    store = open_for_writing(StoreLocation(tmp_path / "idx", "race"), Fingerprint.build(recorder.info, PARAMS))
    ingest(store, recorder, ScanOptions(docs), PARAMS)
    real_scan = pipeline.scan

    def scan_then_delete(options: ScanOptions):  # type: ignore[no-untyped-def]
        listed = real_scan(options)
        (docs / "guides" / "sdks.md").unlink()  # another process deletes it right after the listing
        (docs / "guides" / "webhooks.md").write_text("# Webhooks\n\nRewritten while ingest ran.\n")
        return listed

    monkeypatch.setattr(pipeline, "scan", scan_then_delete)
    report = ingest(store, recorder, ScanOptions(docs), PARAMS)
    assert any(s.rel == "guides/sdks.md" and "No such file" in s.reason for s in report.skipped)
    assert report.files_changed == ["guides/webhooks.md"]  # read once: chunks and hash from the same bytes
    monkeypatch.setattr(pipeline, "scan", real_scan)
    after = ingest(store, recorder, ScanOptions(docs), PARAMS)  # the next run sees the deletion
    assert after.files_removed == ["guides/sdks.md"]
    assert verify(store, recorder.count_tokens, Fingerprint.build(recorder.info, PARAMS), ScanOptions(docs)).problems == 0


def test_a_file_name_with_a_newline_cannot_forge_a_hit_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from docvec.cli import cli

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "evil\n0.999  passwd:1  Root.md").write_text("# Marmosets\n\nMarmosets groom each other.\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n")
    assert CliRunner().invoke(cli, ["--config", str(config), "ingest", "-q"]).exit_code == 0
    for extra in ([], ["--files"]):
        out = CliRunner().invoke(cli, ["--config", str(config), "query", "marmosets", "--no-server", *extra]).output
        assert "evil\\n0.999" in out and not any(line.startswith(("0.999", "   0.999")) for line in out.splitlines())
