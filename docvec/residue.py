"""What Chroma 1.5.9 leaves in a local index's files after deletes, found and swept with SQLite itself.

Measured (bench/README.md, "What Chroma leaves"): deleting records by id, by where, updating a key to None and
upserting leave nothing; `delete_collection` leaves every list-valued metadata row of the collection's records in
`embedding_metadata_array` and the collection's vector segment folder on disk. `embeddings.id` is a plain
INTEGER PRIMARY KEY, so SQLite gives the highest freed ids to the next records written, and Chroma then returns
the leftover list values as theirs: a new untagged page matched `tag=secret`. docvec sweeps a local index right
after it deletes a collection (on a server, which it cannot sweep, it deletes the records first: no rows are
left), and every writer sweeps what an older docvec, another tool or a kill left before its first write;
`verify` reports any residue it finds.

Each check is "rows that name a record, segment or collection that does not exist": the same query finds and
sweeps, whichever kind of delete left them. A whole sweep reads every metadata row (10 s at a million chunks), so
a writer makes it only when the catalog's collections and segments are not those stamped in docvec-residue-swept
beside the index by the last whole sweep; otherwise it sweeps only the rows a new record could inherit: those
above the highest record id (SQLite gives a new record the highest id + 1), found through the id index. What is
left below it cannot be inherited: `verify` reports it (it looks everywhere) and its repair sweeps it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from docvec.smallfiles import read_small_file, write_json_atomically
from docvec.store import CHROMA_FILE  # (imported by Store's methods: no import cycle at load)

STAMP_FILE = "docvec-residue-swept"  # the catalog's stamp at the last complete sweep

# kind -> (table, the rows that point nowhere)
_ORPHANS = {
    "metadata_array": ("embedding_metadata_array", "id NOT IN (SELECT id FROM embeddings)"),
    "metadata": ("embedding_metadata", "id NOT IN (SELECT id FROM embeddings)"),
    "fulltext": ("embedding_fulltext_search", "rowid NOT IN (SELECT id FROM embeddings)"),
    "records": ("embeddings", "segment_id NOT IN (SELECT id FROM segments)"),
    "segment_metadata": ("segment_metadata", "segment_id NOT IN (SELECT id FROM segments)"),
    "max_seq_id": ("max_seq_id", "segment_id NOT IN (SELECT id FROM segments)"),
    "collection_metadata": ("collection_metadata", "collection_id NOT IN (SELECT id FROM collections)"),
}
_ABOVE = {kind: f"{column} > (SELECT coalesce(max(id), 0) FROM embeddings)"  # the rows a new record could inherit
          for kind, column in (("metadata_array", "id"), ("metadata", "id"), ("fulltext", "rowid"))}
# hnswlib's header.bin (chroma-core/hnswlib, HEADER_FIELDS): int version, then size_t offsetLevel0_, max_elements_,
# cur_element_count (every slot ever filled: a deleted vector keeps its slot) and size_data_per_element_.
_HNSW_HEADER = struct.Struct("<i4Q")
_HNSW_VERSION = 1
_SEGMENT_DIR = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def find(index: Path) -> dict[str, int]:
    """Rows and folders of deleted records, segments and collections, by kind (kinds with none left out)."""
    if not (index / CHROMA_FILE).is_file():
        return {}
    with _connect(index, read_only=True) as db:
        tables = _tables(db)
        found = {kind: int(db.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])
                 for kind, (table, where) in _ORPHANS.items() if table in tables}
        folders = len(_stray_folders(index, db))
    if folders:
        found["segment_folders"] = folders
    return {kind: n for kind, n in found.items() if n}


@dataclass(frozen=True)
class HnswSlots:
    """A local collection's HNSW graph as last saved: every slot ever filled, and the bytes each holds in memory."""

    slots: int
    slot_bytes: int

    @property
    def memory_bytes(self) -> int:
        """What the graph's vectors and links take in memory (the level-0 array: nearly all of it)."""
        return self.slots * self.slot_bytes


def hnsw_slots(index: Path, collection_id: str) -> HnswSlots | None:
    """The slots of a collection's HNSW graph, read from its saved header (None: not saved yet, or a layout
    this docvec does not know). Chroma's local HNSW marks a deleted vector and never gives its slot to a new one
    (rust/segment/src/local_hnsw.rs: labels only grow), so slots minus records is the dead weight of every delete
    since the collection was built; only a rebuild (`docvec reindex --compact`) drops it."""
    if not (index / CHROMA_FILE).is_file():
        return None
    with _connect(index, read_only=True) as db:
        segment = segment_of(db, collection_id, "VECTOR")
    if segment is None:
        return None
    try:
        with open(index / segment / "header.bin", "rb") as f:
            head = f.read(_HNSW_HEADER.size)
    except OSError:
        return None
    if len(head) < _HNSW_HEADER.size:
        return None
    version, _, _, slots, slot_bytes = _HNSW_HEADER.unpack(head)
    return HnswSlots(slots, slot_bytes) if version == _HNSW_VERSION else None


def sweep(index: Path, always: bool = False) -> dict[str, int]:
    """Delete what `find` reports (when the catalog changed since the last whole sweep, or `always`), else the rows
    a new record could inherit; returns what was removed. Call it holding the index's writer lock."""
    if not (index / CHROMA_FILE).is_file():
        return {}
    removed: dict[str, int] = {}
    with _connect(index, read_only=False) as db:
        stamp = _catalog_stamp(db)
        whole = always or read_small_file(index / STAMP_FILE) != json.dumps(stamp).encode()
        tables = _tables(db)
        for kind, (table, where) in _ORPHANS.items():
            if table in tables and (whole or kind in _ABOVE):
                n = db.execute(f"DELETE FROM {table} WHERE {where if whole else _ABOVE[kind]}").rowcount
                if n:
                    removed[kind] = n
        db.commit()
        folders = _stray_folders(index, db)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    if folders:
        removed["segment_folders"] = len(folders)
    if whole:
        # only once all is swept: a kill before it sweeps whole again; so does a stamp that cannot be written
        with contextlib.suppress(OSError):
            write_json_atomically(index / STAMP_FILE, stamp, 0o600)
    return removed


def _catalog_stamp(db: sqlite3.Connection) -> str:
    """What every kind of residue needs to change first: the set of collections and segments (Chroma's deletes
    by id, by where, updates and upserts leave none; a delete_collection removes its collection and segments)."""
    ids = sorted(str(r[0]) for r in db.execute("SELECT id FROM collections UNION ALL SELECT id FROM segments"))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _stray_folders(index: Path, db: sqlite3.Connection) -> list[Path]:
    """Vector segment folders (named by segment uuid) of segments that no longer exist."""
    live = {str(r[0]) for r in db.execute("SELECT id FROM segments")}
    return [p for p in index.iterdir() if p.is_dir() and _SEGMENT_DIR.fullmatch(p.name) and p.name not in live]


def _tables(db: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def segment_of(db: sqlite3.Connection, collection_id: str, scope: str) -> str | None:
    """The id of a collection's segment of one scope (VECTOR: the HNSW folder; METADATA: its records' rows)."""
    rows = db.execute("SELECT id FROM segments WHERE collection = ? AND scope = ?", (collection_id, scope)).fetchall()
    return str(rows[0][0]) if rows else None


def catalog_uri(index: Path, read_only: bool) -> str:
    """The SQLite URI of the index's catalog (read-only: never creates or writes it)."""
    return (index / CHROMA_FILE).resolve().as_uri() + ("?mode=ro" if read_only else "")


def _connect(index: Path, read_only: bool) -> contextlib.closing[sqlite3.Connection]:
    """A short SQLite connection to the index's catalog that waits for Chroma's own writes."""
    return contextlib.closing(sqlite3.connect(catalog_uri(index, read_only), uri=True, timeout=30))
