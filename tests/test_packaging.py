"""docvec installs as one import package, `docvec`, with its stages inside it and its types shipped."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from_source = pytest.mark.skipif(not (REPO / "docvec").exists(), reason="runs against the installed wheel (.ci/versions)")


def _build(source: Path, out: Path, *kinds: str) -> None:
    subprocess.run([sys.executable, "-m", "build", "-q", "--no-isolation", *kinds, "--outdir", str(out), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)


def _contents(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: hashlib.sha256(zf.read(name)).hexdigest() for name in zf.namelist()
                if ".dist-info/" not in name}


@from_source
def test_wheel_and_sdist_hold_one_package_and_the_sdist_builds_the_same_wheel(tmp_path: Path) -> None:
    _build(REPO, tmp_path / "dist", "--sdist", "--wheel")
    wheel = next((tmp_path / "dist").glob("docvec-*.whl"))
    contents = _contents(wheel)
    assert {name.split("/")[0] for name in contents} == {"docvec"}
    for shipped in ("docvec/py.typed", "docvec/ingest/pipeline.py", "docvec/query/search.py", "docvec/serve/index.py",
                    "docvec/embedders/minilm/tokenizer.json", "docvec/embedders/minilm/NOTICE"):
        assert shipped in contents, shipped
    sdist = next((tmp_path / "dist").glob("docvec-*.tar.gz"))
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    _build(unpacked, tmp_path / "again", "--wheel")
    assert _contents(next((tmp_path / "again").glob("docvec-*.whl"))) == contents


def test_scripts_named_like_the_stages_do_not_shadow_docvec(tmp_path: Path) -> None:
    # The most natural names for a user's scripts: with top-level stage modules they broke `import docvec`.
    for name in ("ingest", "query", "serve"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('the user script was imported instead of docvec')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import docvec, docvec.ingest.pipeline, docvec.query.search, docvec.serve.index; "
            "print(docvec.serve.index.open_index.__module__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "docvec.serve.index"


def test_stages_run_as_modules_of_the_package(tmp_path: Path) -> None:
    for stage in ("ingest", "query", "serve"):
        done = subprocess.run([sys.executable, "-m", f"docvec.{stage}", "--help"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and f"python -m docvec.{stage}" in done.stdout, done.stderr
