"""Keyword search over the same chunk ids as the vector index: SQLite FTS5 with its bm25() ranking.

Local Chroma has no keyword ranking, so docvec keeps an FTS5 table beside the index. It is derived entirely
from the collection (chunk label + text by id) and re-synced from it after every ingest and whenever a query finds
it behind, so a crash can never leave the two disagreeing for long, and a lost file is simply rebuilt.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from docvec.errors import StoreError
from docvec.store import GENERATION_KEY, WRITING_KEY, Store, StoreLocation

# English stop words (the common list used by IR toolkits); dropping them keeps bm25 from rewarding filler.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves
""".split())
_WORD = re.compile(r"\w+", re.UNICODE)
SCHEMA_VERSION = "1"
OPTIMIZE_AFTER = 1000  # rows changed by a sync after which the FTS segments are merged (100k rows: 1.7 s, then
                       # each search is ~25 % faster)


@dataclass(frozen=True)
class KeywordHit:
    """A chunk id and its bm25 score (higher is better)."""

    id: str
    score: float


class KeywordIndex:
    """An FTS5 table of chunk id -> label and text, porter-stemmed."""

    def __init__(self, path: Path, read_only: bool = False, check_same_thread: bool = True) -> None:
        """`check_same_thread=False` lets a server's worker threads share it (its caller serialises calls)."""
        self.path = path
        try:
            if read_only:  # never creates or changes the file (verify, and readers of a read-only index)
                self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                           check_same_thread=check_same_thread)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=check_same_thread)
            self._db.executescript(
                "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(id UNINDEXED, label UNINDEXED, body, "
                "tokenize='porter unicode61 remove_diacritics 2');"
                "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the keyword index {path}: {exc}") from exc

    @classmethod
    def of(cls, store: Store, read_only: bool = False, check_same_thread: bool = True) -> "KeywordIndex":
        """The keyword index of a store's live collection (use it in a `with` block); a store read from a copy
        (a read-only index) uses the copy's keyword index."""
        return cls(keyword_path(store.files_location, store.name), read_only, check_same_thread)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "KeywordIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entries(self) -> set[tuple[str, str]]:
        """Every (chunk id, label) pair in the keyword index."""
        try:
            return {(row[0], row[1]) for row in self._db.execute("SELECT id, label FROM chunks")}
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the keyword index {self.path}: {exc}") from exc

    def get_state(self, key: str) -> str | None:
        try:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the keyword index {self.path}: {exc}") from exc
        return str(row[0]) if row else None

    def apply(self, add: Iterable[tuple[str, str, str]], delete: Sequence[str], state: dict[str, str]) -> None:
        """Delete rows by id, add (id, label, text) rows and record `state`, in one transaction."""
        rows = [(rid, label, f"{label}\n{text}") for rid, label, text in add]
        try:
            with self._db:
                self._db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in delete])
                self._db.executemany("INSERT INTO chunks (id, label, body) VALUES (?, ?, ?)", rows)
                self._db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", state.items())
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the keyword index {self.path}: {exc}") from exc

    def optimize(self) -> None:
        """Merge the FTS5 index's segments into one (faster searches after many inserts)."""
        try:
            with self._db:
                self._db.execute("INSERT INTO chunks(chunks) VALUES('optimize')")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the keyword index {self.path}: {exc}") from exc

    def search(self, question: str, k: int) -> list[KeywordHit]:
        """The k best chunks for the question's words (stop words dropped, any word may match), best first."""
        match = match_expression(question)
        if not match:
            return []
        # FTS5 sorts by bm25 alone fast (twice as fast as with a second sort key); equal scores are put in id
        # order here, over a margin that only 33 identical scores in a row could exceed.
        rows = self._db.execute(
            "SELECT id, bm25(chunks) AS s FROM chunks WHERE chunks MATCH ? ORDER BY s LIMIT ?", (match, k + 32))
        ordered = sorted((float(score), rid) for rid, score in rows)[:k]
        return [KeywordHit(rid, -score) for score, rid in ordered]  # FTS5's bm25 is negative: lower is better

    def scores(self, question: str, ids: Sequence[str]) -> dict[str, float]:
        """The bm25 score of each given chunk for the question; chunks without any of its words are left out."""
        match = match_expression(question)
        out: dict[str, float] = {}
        if not match:
            return out
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):  # SQLite's host-parameter limit
            batch = unique[start:start + 500]
            rows = self._db.execute(
                f"SELECT id, bm25(chunks) FROM chunks WHERE chunks MATCH ? AND id IN ({','.join('?' * len(batch))})",
                (match, *batch))
            out.update((rid, -float(score)) for rid, score in rows)
        return out


def match_expression(question: str) -> str:
    """The FTS5 query for a question: its distinct words, stop words dropped, any of them matching ("" if none)."""
    terms = [t for t in dict.fromkeys(w.lower() for w in _WORD.findall(question)) if t not in STOP_WORDS]
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def keyword_path(location: StoreLocation, collection: str) -> Path:
    """Where the keyword index of a physical collection lives (a local file, also for a Chroma server)."""
    if location.host:
        scope = "" if location.tenant == "default_tenant" and location.database == "default_database" else \
            f"-{location.tenant}-{location.database}"
        return location.path / f"keyword-{location.host}-{location.port}{scope}-{collection}.sqlite3"
    return location.path / f"keyword-{collection}.sqlite3"


def keyword_differences(store: Store, index: KeywordIndex) -> tuple[list[str], list[str]]:
    """(ids the keyword index lacks or has outdated, ids it has that the collection does not)."""
    wanted = {(rid, str(meta.get("label", ""))) for rid, meta in store.iter_metadata()}
    have = index.entries()
    return sorted({rid for rid, _ in wanted - have}), sorted({rid for rid, _ in have - wanted})


def sync_keyword_index(store: Store, index: KeywordIndex, force: bool = False, reader: bool = False) -> int:
    """Make the keyword index hold exactly the collection's chunks; returns the rows changed.

    The collection's generation says whether the keyword index is behind. While a writer's mark is set (a run is
    writing, or one died mid-run) the generation does not tell: a writer then always compares row by row, and a
    reader (`reader=True`) keeps the index it has, which the next completed run brings in line."""
    meta = store.collection_metadata()
    generation = str(meta.get(GENERATION_KEY, 0))
    recorded = index.get_state("generation")
    current = recorded == generation and index.get_state("schema") == SCHEMA_VERSION
    if WRITING_KEY in meta and recorded is not None:
        if reader:
            return 0
        current = False
    if current and not force:
        return 0
    missing, extra = keyword_differences(store, index)
    stale = sorted(set(extra) | set(missing))  # an outdated row is replaced: delete, then add
    docs = store.get_documents(missing)
    add = [(rid, str(docs[rid][1].get("label", "")), docs[rid][0]) for rid in missing if rid in docs]
    index.apply(add, stale, {"generation": generation, "schema": SCHEMA_VERSION})
    if len(add) + len(stale) >= OPTIMIZE_AFTER:
        index.optimize()
    return len(extra) + len(add)
