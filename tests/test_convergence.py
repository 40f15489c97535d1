"""The model-based proof, CI profile: any history of edits and writers (killed or not) converges to a clean build,
and `verify` says ok exactly when the index is one (tests/convergence.py). The soak profile is
bench/convergence_soak.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, Phase, settings

from docvec.chunker import ChunkParams
from docvec.store import Store, StoreLocation, forget_cached_client
from docvec.ingest.reindex import prune, reindex, rollback
from docvec.ingest.scan import ScanOptions
from docvec.ingest.sync import sync_index
from docvec.ingest.verify import chunk_params, repair, verify
from tests.conftest import RecordingEmbedder
from tests.convergence import (ALL, PARAMS, SERVER, WORDS, Convergence, Killed, Snapshot, killed_at, render,
                               snapshot)
from tests.test_server_mode import chroma_server  # noqa: F401 - the real `chroma run` fixture

CI = settings(max_examples=30, stateful_step_count=20, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
# No shrinking in CI: a failure prints the whole sequence at once (shrinking one took 5 minutes); the soak shrinks.


def test_any_history_converges_to_a_clean_build() -> None:
    Convergence.TestCase.settings = CI
    Convergence.TestCase().runTest()


WRITERS = ("ingest", "repair", "reindex", "rollback", "prune", "prune_all")


def _base(folder: Path) -> tuple[Path, StoreLocation, RecordingEmbedder]:
    """Docs and an index with a previous collection and a backup (other chunkings), then edits the index has not seen: a page
    deleted (its records are orphans for repair), a section changed, tags removed, a page added."""
    docs = folder / "docs"
    pages = {"intro.md": ({"tags": ["internal", "secret"]}, 3), "guides/auth.md": ({"audience": "dev"}, 4),
             "tutorial/marmosets.md": ({"tags": ["secret"], "title": "Marmosets"}, 5), "ref/errors.md": ({}, 2)}
    for name, (front, n) in pages.items():
        _page(docs / name, front, n, "first")
    location = StoreLocation(folder / "index", "docvec")
    embedder = RecordingEmbedder()
    sync_index(location, embedder, ScanOptions(docs), ChunkParams(128, 24, 16), ALL)  # a backup, for prune
    reindex(location, embedder, ScanOptions(docs), PARAMS[1], guard=ALL)  # the previous one, for rollback
    reindex(location, embedder, ScanOptions(docs), PARAMS[0], guard=ALL)
    (docs / "ref" / "errors.md").unlink()
    _page(docs / "intro.md", {}, 3, "first")  # the same body, its tags removed
    _page(docs / "guides" / "auth.md", {"audience": "dev"}, 4, "second")
    _page(docs / "public.md", {}, 2, "third")
    return docs, location, embedder


def _page(path: Path, front: dict[str, object], sections: int, variant: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"## {WORDS[i].title()}\n\n" + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(60))
                     + (f" {variant}" if i == sections - 1 else "") + "\n" for i in range(sections))
    path.write_text(render(dict(front), body), encoding="utf-8")


def _writer(name: str, location: StoreLocation, docs: Path, embedder: RecordingEmbedder) -> Callable[[], Any]:
    def run_repair() -> None:
        store = Store.open(location)
        found = verify(store, embedder.count_tokens, store.fingerprint(), ScanOptions(docs), ALL)
        repair(store, embedder, ScanOptions(docs), PARAMS[0], found, guard=ALL)

    return {"ingest": lambda: sync_index(location, embedder, ScanOptions(docs), PARAMS[0], ALL),
            "repair": run_repair,
            "reindex": lambda: reindex(location, embedder, ScanOptions(docs), PARAMS[1], guard=ALL),
            "rollback": lambda: rollback(location),
            "prune": lambda: prune(location),
            "prune_all": lambda: prune(location, keep_previous=False)}[name]


def _boundaries(name: str, tmp_path: Path) -> int:
    """How many write boundaries the writer passes when nothing stops it."""
    docs, location, embedder = _base(tmp_path / f"{name}-count")
    passed = [0]
    with killed_at(10_000, passed):
        _writer(name, location, docs, embedder)()
    return passed[0]


@pytest.mark.parametrize("name", WRITERS)
def test_a_kill_at_any_boundary_of_any_writer_converges(name: str, tmp_path: Path) -> None:
    """Every writer killed before each of its write boundaries in turn: the next ingest (under the live index's
    configuration) gives exactly a clean build, and verify says ok; before it, verify says ok exactly if equal."""
    total = _boundaries(name, tmp_path)
    assert total >= (1 if name == "rollback" else 3)
    base = tmp_path / "base"
    docs, location, embedder = _base(base)
    clean: dict[ChunkParams, Snapshot] = {}
    for n in range(1, total + 1):
        case = tmp_path / f"kill{n}"
        shutil.copytree(base / "index", case / "index")
        here = StoreLocation(case / "index", "docvec")
        with pytest.raises(Killed):
            with killed_at(n):
                _writer(name, here, docs, embedder)()
        params = chunk_params(Store.open(here).fingerprint())
        if params not in clean:
            build = StoreLocation(tmp_path / f"clean-{len(clean)}", "docvec")
            sync_index(build, RecordingEmbedder(), ScanOptions(docs), params, ALL)
            clean[params] = snapshot(build)
        live = Store.open(here)
        ok = verify(live, embedder.count_tokens, live.fingerprint(), ScanOptions(docs), ALL).problems == 0
        assert ok == (not snapshot(here).differences(clean[params])), (name, n, "verify ok" if ok else "verify not ok")
        sync_index(here, embedder, ScanOptions(docs), params, ALL)
        assert not snapshot(here).differences(clean[params]), (name, n)
        live = Store.open(here)
        found = verify(live, embedder.count_tokens, live.fingerprint(), ScanOptions(docs), ALL)
        assert found.problems == 0, (name, n, found.as_dict())
        forget_cached_client(here)


SERVER_CI = settings(CI, max_examples=10, stateful_step_count=12)


def test_any_history_converges_on_a_chroma_server(chroma_server: int) -> None:
    """The same proof against a real `chroma run` (each sequence on its own collections of one server)."""
    SERVER.update(host="127.0.0.1", port=chroma_server)
    try:
        Convergence.TestCase.settings = SERVER_CI
        Convergence.TestCase().runTest()
    finally:
        SERVER.clear()
