"""A local index's records read from Chroma's SQLite file directly, by id: what searches read most.

Chroma 1.5.9's `get` by id costs ~0.1 ms a record with docvec's 14 metadata keys (it rebuilds each record through
its Rust and Python layers: 0.043 ms with 4 keys, 0.088 ms with 14, measured side by side); the same rows read
here cost ~0.034 ms. Searches read texts and metadata by id to fold duplicates and show hits, so at a million
chunks those reads were most of a search's time (bench/README.md, "A million chunks").

The file is read only when it is exactly what this code knows, and otherwise left to Chroma:
- its schema is the one Chroma 1.5.9 migrates to (the `migrations` table, dir by dir);
- the collection's metadata segment has applied every write of Chroma's log: a writer killed between its log
  write and applying it leaves records that Chroma applies at its next read of the collection, and reading the
  file before that would miss them;
- no SQLite error occurs (a lock held past the timeout, a damaged file): the caller reads through Chroma, which
  reports what is wrong.
A record is returned as Chroma returns it: the text (key `chroma:document`), scalar keys by their typed column,
list values from `embedding_metadata_array` in the order they were written (tests/test_recordfile.py checks the
equality against Chroma's own `get`, property by property).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

from docvec.residue import catalog_uri, segment_of

KNOWN_SCHEMA = {"embeddings_queue": 2, "metadb": 6, "sysdb": 10}  # Chroma 1.5.9's last migration of each part
DOCUMENT_KEY = "chroma:document"
BATCH = 900  # ids per statement: well under SQLite's limit on bound parameters
TIMEOUT_S = 10.0  # a write holds the file's lock for one commit: longer means something is wrong, ask Chroma

_SCALARS = """SELECT e.embedding_id, m.key, m.string_value, m.int_value, m.float_value, m.bool_value
FROM embeddings e LEFT JOIN embedding_metadata m ON m.id = e.id{keys}
WHERE e.segment_id = ? AND e.embedding_id IN ({marks})"""
_LISTS = """SELECT e.embedding_id, a.key, a.string_value, a.int_value, a.float_value, a.bool_value
FROM embeddings e JOIN embedding_metadata_array a ON a.id = e.id{keys}
WHERE e.segment_id = ? AND e.embedding_id IN ({marks}) ORDER BY a.rowid"""
# (the key filter is part of the join: a record holding none of the keys is still returned, with no metadata)
# Every write in the log applied to the metadata segment: first against the log's last entry (its primary key),
# then, when a later entry is another collection's, against this collection's own (Chroma purges the log as
# segments apply it, so the scan by topic reads a few rows)
_APPLIED_ALL = """SELECT (SELECT coalesce(max(seq_id), 0) FROM embeddings_queue)
    <= coalesce((SELECT seq_id FROM max_seq_id WHERE segment_id = ?), 0)"""
_APPLIED = """SELECT (SELECT coalesce(max(seq_id), 0) FROM embeddings_queue WHERE topic LIKE ?)
    <= coalesce((SELECT seq_id FROM max_seq_id WHERE segment_id = ?), 0)"""

Row = tuple[str, Any, Any, Any, Any, Any]


class RecordFile:
    """Reads one local collection's records by id from the index's SQLite file (None: read through Chroma)."""

    def __init__(self, index: Path, collection_id: str) -> None:
        self._uri = catalog_uri(index, read_only=True)
        self._collection = collection_id
        self._local = threading.local()  # a connection per thread: searches run side by side
        self._segment: str | None = None
        self._known: bool | None = None  # the schema is the one this code reads (checked once)

    def documents(self, ids: Sequence[str], keys: Sequence[str] | None = None
                  ) -> dict[str, tuple[str, dict[str, Any]]] | None:
        """Text and metadata by id, as Chroma's get returns them (ids it does not hold are left out); with `keys`,
        only those of each record's metadata (half the cost of a record with docvec's ~15 keys)."""
        records = self._records(ids, None if keys is None else (DOCUMENT_KEY, *keys))
        if records is None:
            return None
        return {rid: (str(meta.pop(DOCUMENT_KEY, None) or ""), meta) for rid, meta in records.items()}

    def metadatas(self, ids: Sequence[str]) -> dict[str, dict[str, Any]] | None:
        """Metadata by id, as Chroma's get returns it."""
        records = self._records(ids)
        if records is None:
            return None
        for meta in records.values():
            meta.pop(DOCUMENT_KEY, None)
        return records

    def _records(self, ids: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]] | None:
        try:
            db = self._connection()
            out: dict[str, dict[str, Any]] = {}
            db.execute("BEGIN")  # one snapshot: a write between two statements would mix two versions
            try:
                if not self._usable(db):
                    return None
                for begin in range(0, len(ids), BATCH):
                    batch = list(ids[begin:begin + BATCH])
                    args = (*(keys or ()), self._segment, *batch)
                    _scalars(out, db.execute(_statement(_SCALARS, "m", keys, len(batch)), args))
                    _lists(out, db.execute(_statement(_LISTS, "a", keys, len(batch)), args))
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")  # a read: nothing to keep, and the lock goes
            return out
        except sqlite3.Error:
            return None

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:  # transactions are begun explicitly (isolation_level None: no implicit ones)
            db = self._local.db = sqlite3.connect(self._uri, uri=True, timeout=TIMEOUT_S, check_same_thread=False,
                                                  isolation_level=None)
        return db

    def _usable(self, db: sqlite3.Connection) -> bool:
        if self._known is None:
            done = dict(db.execute("SELECT dir, max(version) FROM migrations GROUP BY dir").fetchall())
            self._segment = segment_of(db, self._collection, "METADATA")
            self._known = done == KNOWN_SCHEMA and self._segment is not None
        if not self._known:
            return False
        # fetchall: a statement left unfinished would keep a read lock on the file, and Chroma's writer waits on it
        return bool(db.execute(_APPLIED_ALL, (self._segment,)).fetchall()[0][0]
                    or db.execute(_APPLIED, ("%/" + self._collection, self._segment)).fetchall()[0][0])


def _statement(template: str, table: str, keys: Sequence[str] | None, ids: int) -> str:
    """A read of `ids` records, of every key or only of `keys`."""
    only = "" if keys is None else f" AND {table}.key IN ({','.join('?' * len(keys))})"
    return template.format(keys=only, marks=",".join("?" * ids))


def _value(s: Any, i: Any, f: Any, b: Any) -> Any:
    """A metadata value from Chroma's typed columns (exactly one is set)."""
    return s if s is not None else i if i is not None else f if f is not None else bool(b)


def _scalars(out: dict[str, dict[str, Any]], rows: Iterable[Row]) -> None:
    for rid, key, s, i, f, b in rows:
        meta = out.setdefault(rid, {})
        if key is not None:  # None: a record without metadata or text (the LEFT JOIN keeps it)
            meta[key] = _value(s, i, f, b)


def _lists(out: dict[str, dict[str, Any]], rows: Iterable[Row]) -> None:
    for rid, key, s, i, f, b in rows:
        values = out[rid].setdefault(key, [])
        values.append(_value(s, i, f, b))
