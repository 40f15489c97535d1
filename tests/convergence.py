"""A model of docvec's promise, run by Hypothesis: the index is a function of the docs folder and the configuration.

`Convergence` is a RuleBasedStateMachine. Its rules create, edit, rename and delete pages, add, remove and change
front-matter keys (tags, audience, title), and run every writer — ingest, reindex into another chunking,
rollback, prune, prune --all, verify --repair — each possibly killed before any of its write boundaries. After
every step, `verify` must say ok exactly when the index equals a clean build of the same folder; after every
completed ingest, reindex or repair it must equal one. "Equal" is: the same ids,
texts and full metadata, vectors equal to 1e-6 (Chroma may return a copied vector an ulp off), the same keyword
hits with the same bm25 scores (to 1e-6, relative) and, while HNSW's search is exhaustive (up to 100 chunks), the
same vector hits with the same similarities (to 1e-5), for a fixed set of questions.

A kill is simulated in-process: the N-th write boundary (tests/killpoint.py's) raises `Killed` before it
writes. `Killed` is a SystemExit, which docvec's own handlers let through as they let a real kill: no cleanup of
a first build, no bookkeeping. tests/test_crash.py kills real processes with SIGKILL at every boundary.

Used by tests/test_convergence.py (the CI profile) and bench/convergence_soak.py (the soak profile).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import yaml
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from docvec.chunker import ChunkParams
from docvec.errors import DocvecError
from docvec.keyword import KeywordIndex, keyword_path
from docvec.store import Store, StoreLocation, dumps_metadata, forget_cached_client
from docvec.ingest.pipeline import SyncGuard
from docvec.ingest.reindex import prune, reindex, rollback
from docvec.ingest.scan import ScanOptions
from docvec.ingest.sync import sync_index
from docvec.ingest.verify import chunk_params, repair, verify
from tests.conftest import RecordingEmbedder
from tests.killpoint import boundaries

NAMES = ("intro.md", "guides/auth.md", "guides/deep/tokens.md", "tutorial/marmosets.md", "ref/errors.md")
TAGS = ("internal", "secret", "public")
WORDS = ("token", "rejected", "request", "api", "marmosets", "forest", "retry", "error", "key", "rotate",
         "header", "bearer", "limit", "page", "secret", "cursor", "webhook", "signature", "timeout", "model")
QUESTIONS = ("token rejected", "marmosets forest", "retry error limit", "secret key rotate", "webhook signature")
PARAMS = (ChunkParams(), ChunkParams(max_tokens=64, min_tokens=16, overlap_tokens=8))
ALL = SyncGuard(allow_mass_delete=True)
SERVER: dict[str, Any] = {}  # {"host": ..., "port": ...} when the machine runs against a Chroma server
STATS: Counter[str] = Counter()  # what the runs did (reported by bench/convergence_soak.py)


class Killed(SystemExit):
    """The process died here (a kill -9 between two writes)."""


@contextlib.contextmanager
def killed_at(n: int | None, passed: list[int] | None = None) -> Iterator[None]:
    """Raise Killed before the n-th write boundary inside the block (None: never); `passed` counts them."""
    seen = passed if passed is not None else [0]

    def before(count: int) -> None:
        seen[0] = count
        if count == n:
            raise Killed(137)

    with boundaries(before):
        yield


@dataclass(frozen=True)
class Snapshot:
    """Everything a query can see of an index, in comparable form."""

    records: dict[str, tuple[str, str]]  # id -> (text, metadata as stable JSON)
    vectors: dict[str, np.ndarray]
    keyword: dict[str, dict[str, float]]  # question -> id -> bm25 score
    vector: dict[str, dict[str, float]]  # question -> id -> cosine similarity, every chunk (see `snapshot`)
    leftovers: dict[str, int]  # residue of deleted records, deleted keyword rows bm25 counts, no keyword index

    def differences(self, other: "Snapshot") -> list[str]:
        """What differs from `other` (a clean build), one line per kind, with an example."""
        out = []
        if self.records.keys() != other.records.keys():
            out.append(f"ids: extra {sorted(self.records.keys() - other.records.keys())[:3]}, missing "
                       f"{sorted(other.records.keys() - self.records.keys())[:3]}")
        both = self.records.keys() & other.records.keys()
        for rid in sorted(both):
            if self.records[rid] != other.records[rid]:
                out.append(f"record {rid}: {self.records[rid]} != clean {other.records[rid]}")
                break
        for rid in sorted(both):
            if not np.allclose(self.vectors[rid], other.vectors[rid], atol=1e-6, rtol=0):
                out.append(f"vector {rid} differs")
                break
        if self.leftovers != other.leftovers:
            out.append(f"leftovers {self.leftovers} != clean {other.leftovers}")
        for side, tolerance in (("keyword", 1e-6), ("vector", 1e-5)):
            for q in QUESTIONS:
                mine, clean = getattr(self, side)[q], getattr(other, side)[q]
                if mine.keys() != clean.keys() or any(not math.isclose(mine[r], clean[r], rel_tol=tolerance,
                                                                       abs_tol=tolerance) for r in mine):
                    out.append(f"{side} '{q}': {sorted(mine.items())[:3]} != clean {sorted(clean.items())[:3]}")
                    break
        return out


def snapshot(location: StoreLocation) -> Snapshot:
    """Read an index whole (ids, texts, metadata, vectors, keyword scores)."""
    store = Store.open(location)
    ids = [rid for rid, _ in store.iter_metadata()]
    docs = store.get_documents(ids)
    records = {rid: (doc, dumps_metadata(meta)) for rid, (doc, meta) in docs.items()}
    leftovers: dict[str, int] = store.residue()
    if (keyword_path(store.location, store.name) / "meta.json").is_file():
        with KeywordIndex.of(store, read_only=True) as index:
            keyword = {q: {h.id: h.score for h in index.search(q, 10_000)} for q in QUESTIONS}
            leftovers["keyword_deleted_rows"] = index.deleted_rows()
    else:  # a first build killed before its keyword index was made
        keyword, leftovers["keyword_index_missing"] = {q: {} for q in QUESTIONS}, 1
    # Every chunk, by Chroma's HNSW search: exhaustive while the index holds no more chunks than the beam (ef_search
    # 100), so it must equal a clean build's; above that, HNSW's answer depends on the graph's history.
    embedder = RecordingEmbedder()
    vector = {q: {r.id: r.similarity for r in store.query(embedder.embed_query(q).tolist(), len(ids), with_text=False)}
              if 0 < len(ids) <= 100 else {} for q in QUESTIONS}
    return Snapshot(records, store.get_embeddings(ids), keyword, vector, leftovers)


def location_in(folder: Path) -> StoreLocation:
    """A new index: a folder of its own, or a collection of its own on the server."""
    if SERVER:
        return StoreLocation(folder, f"conv-{uuid.uuid4().hex[:12]}", host=SERVER["host"], port=SERVER["port"])
    return StoreLocation(folder / "index", "docvec")


def render(front: dict[str, Any], body: str) -> str:
    """A markdown page with optional YAML front matter."""
    head = f"---\n{yaml.safe_dump(front, sort_keys=True)}---\n" if front else ""
    return head + body


words = st.lists(st.sampled_from(WORDS), min_size=3, max_size=120).map(" ".join)
section = st.tuples(st.sampled_from(WORDS), st.lists(words, min_size=1, max_size=4)).map(
    lambda s: f"## {s[0].title()}\n\n" + "\n\n".join(s[1]) + "\n")
sections = st.lists(section, min_size=2, max_size=8).map("\n".join)
fronts = st.fixed_dictionaries({}, optional={"title": st.sampled_from(["Auth", "Tokens", "Marmosets"]),
                                             "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=3),
                                             "audience": st.sampled_from(["dev", "ops"])})
# A writer passes 3 to ~30 write boundaries: early ones are drawn as often as any later one, so most kills land.
kills = st.none() | st.integers(min_value=1, max_value=6) | st.integers(min_value=7, max_value=40)


class Convergence(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="docvec-model-"))
        self.docs = self.root / "docs"
        self.docs.mkdir()
        self.location = location_in(self.root)
        self.embedder = RecordingEmbedder()
        self.pages: dict[str, tuple[dict[str, Any], str]] = {}
        self.params = PARAMS[0]  # the configuration: the live index's chunking
        self.settled = False
        self.clean: dict[tuple[str, ChunkParams], Snapshot] = {}
        self.builds = 0

    @initialize(page=sections)
    def first_page(self, page: str) -> None:
        self._write("intro.md", {}, page)

    # --- the docs folder -------------------------------------------------------------------------------------

    def _write(self, name: str, front: dict[str, Any], body: str) -> None:
        path = self.docs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(front, body), encoding="utf-8")
        self.pages[name] = (front, body)
        self.settled = False

    @rule(name=st.sampled_from(NAMES), front=fronts, body=sections)
    def write_page(self, name: str, front: dict[str, Any], body: str) -> None:
        self._write(name, front, body)

    @precondition(lambda self: self.pages)
    @rule(data=st.data(), front=fronts)
    def change_front_matter_only(self, data: st.DataObject, front: dict[str, Any]) -> None:
        name = data.draw(st.sampled_from(sorted(self.pages)))
        self._write(name, front, self.pages[name][1])

    @precondition(lambda self: self.pages)
    @rule(data=st.data(), new=section)
    def edit_one_section(self, data: st.DataObject, new: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.pages)))
        front, body = self.pages[name]
        parts = body.split("\n## ")
        at = data.draw(st.integers(0, len(parts)))
        parts[at:at + 1] = [new.removeprefix("## ")]  # replaces a section, or appends one
        self._write(name, front, "\n## ".join(parts).replace("## ## ", "## "))

    @precondition(lambda self: len(self.pages) > 1)
    @rule(data=st.data())
    def delete_page(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.pages)))
        (self.docs / name).unlink()
        del self.pages[name]
        self.settled = False

    @precondition(lambda self: self.pages)
    @rule(data=st.data(), to=st.sampled_from(NAMES))
    def rename_page(self, data: st.DataObject, to: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.pages)))
        if to != name:
            front, body = self.pages.pop(name)
            (self.docs / name).unlink()
            self._write(to, front, body)

    # --- the writers -----------------------------------------------------------------------------------------

    def _run(self, kill: int | None, action: Callable[[], Any]) -> bool:
        """Run a writer, killed at boundary `kill`; True when it completed."""
        STATS["writer runs"] += 1
        try:
            with killed_at(kill):
                action()
        except Killed:
            STATS["killed"] += 1
            return False
        except DocvecError:
            STATS["refused"] += 1
            return False  # a refusal (nothing to roll back to, a build that must be finished first)
        return True

    def _scan(self) -> ScanOptions:
        return ScanOptions(self.docs)

    @rule(kill=kills)
    def ingest(self, kill: int | None) -> None:
        self.settled = self._run(kill, lambda: sync_index(self.location, self.embedder, self._scan(), self.params,
                                                          ALL))

    @precondition(lambda self: self._live() is not None)
    @rule(kill=kills)
    def reindex_other_chunking(self, kill: int | None) -> None:
        other = PARAMS[1] if self.params == PARAMS[0] else PARAMS[0]
        done = self._run(kill, lambda: reindex(self.location, self.embedder, self._scan(), other, guard=ALL))
        self._follow_live()
        self.settled = done

    @precondition(lambda self: self._live() is not None)
    @rule(kill=kills)
    def roll_back(self, kill: int | None) -> None:
        self._run(kill, lambda: rollback(self.location))
        self._follow_live()
        self.settled = False

    @precondition(lambda self: self._live() is not None)
    @rule(kill=kills, everything=st.booleans())
    def prune_backups(self, kill: int | None, everything: bool) -> None:
        self._run(kill, lambda: prune(self.location, keep_previous=not everything))

    @precondition(lambda self: self._live() is not None)
    @rule(kill=kills)
    def verify_repair(self, kill: int | None) -> None:
        def run() -> None:
            store = Store.open(self.location)
            found = verify(store, self.embedder.count_tokens, store.fingerprint(), self._scan(), ALL)
            repair(store, self.embedder, self._scan(), self.params, found, guard=ALL)

        self.settled = self._run(kill, run)

    def _live(self) -> Store | None:
        try:
            return Store.open(self.location)
        except DocvecError:
            return None

    def _follow_live(self) -> None:
        """The configuration follows the live index (after a rollback, the user restores its settings)."""
        live = self._live()
        if live is not None:
            self.params = chunk_params(live.fingerprint())

    # --- the promise -----------------------------------------------------------------------------------------

    @invariant()
    def verify_is_ok_exactly_when_the_index_is_a_clean_build(self) -> None:
        live = self._live()
        if live is None:
            return
        found = verify(live, self.embedder.count_tokens, live.fingerprint(), self._scan(), ALL)
        diffs = snapshot(self.location).differences(self._clean_build(live))
        STATS["checks"] += 1
        STATS["verify ok"] += found.problems == 0
        STATS["settled"] += self.settled
        STATS["equal to a clean build"] += not diffs
        STATS["chunks compared"] += live.count()
        assert not (self.settled and diffs), ("a completed run differs from a clean build", diffs)
        assert not (found.problems == 0 and diffs), ("verify says ok, but it differs from a clean build", diffs)
        assert not (found.problems and not diffs), ("equal to a clean build, but verify says", found.as_dict())

    def _clean_build(self, live: Store) -> Snapshot:
        params = chunk_params(live.fingerprint())
        key = ("\n".join(f"{n}\n{render(*p)}" for n, p in sorted(self.pages.items())), params)
        if key not in self.clean:
            self.builds += 1
            folder = self.root / f"clean{self.builds}"
            location = location_in(folder)
            sync_index(location, self.embedder, ScanOptions(self.docs), params, ALL)
            self.clean[key] = snapshot(location)
            forget_cached_client(location)
        return self.clean[key]

    def teardown(self) -> None:
        STATS["sequences"] += 1
        forget_cached_client(self.location)
        shutil.rmtree(self.root, ignore_errors=True)
