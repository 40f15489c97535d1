"""The sync bookkeeping a completed run leaves (IndexState), kept in a file beside the index so that the next
`docvec ingest` need not read every record's metadata back from Chroma: that read costs ~160 µs a record (20 s of
a 22 s no-op sync at 100k chunks, ~170 s at a million). The file is derived, like the keyword index: it is used
only for the very collection, generation and fingerprint it was written for, with no write begun since (the
pipeline checks, `IndexState.still_valid`); anything else reads the records as before, and a lost or damaged
file costs one full read.

Format: JSON lines, streamed both ways (a million records never sit in memory twice): a header, then one line per
source file, [source, [[id, file_hash, chunks_in_file, chunk_index, hash, fp], ...]].
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from docvec.smallfiles import beside_index, open_regular
from docvec.store import StoreLocation
from docvec.ingest.pipeline import IndexState, Record

VERSION = 1


def state_path(location: StoreLocation, collection: str) -> Path:
    """Where the sync state of a physical collection lives (a server's: in this machine's index folder)."""
    return beside_index(location.path, "sync-state", collection, location.host, ".jsonl")


def save_state(location: StoreLocation, state: IndexState) -> None:
    """Write the state a completed run left (whole, then renamed into place; owner-only)."""
    if state.left_at is None or not location.path.is_dir():
        return
    name, generation, fingerprint = state.left_at
    path = state_path(location, name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(_lines(state, name, generation, fingerprint))
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):  # a cache: a full disk or an odd value only costs the next run a read
        tmp.unlink(missing_ok=True)


def _lines(state: IndexState, name: str, generation: object, fingerprint: str) -> Iterator[str]:
    yield json.dumps({"version": VERSION, "collection": name, "generation": generation, "fingerprint": fingerprint,
                      "orphans": state.orphans}) + "\n"
    for source, indexed in state.files.items():
        yield json.dumps([source, [[rid, *record] for rid, record in indexed.records.items()]]) + "\n"


def load_state(location: StoreLocation, collection: str, fingerprint: str) -> IndexState | None:
    """The state the last completed run left for this collection, if its file is there and whole (the caller
    still checks that no one wrote since)."""
    try:
        with os.fdopen(open_regular(state_path(location, collection))[0], encoding="utf-8") as f:
            header = json.loads(f.readline())
            if not isinstance(header, dict) or header.get("version") != VERSION or \
                    header.get("collection") != collection or header.get("fingerprint") != fingerprint:
                return None
            state = IndexState(orphans=[str(rid) for rid in header["orphans"]])
            for line in f:
                _take(state, json.loads(line), fingerprint)
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None
    state.left_at = (collection, header["generation"], fingerprint)
    return state


def _take(state: IndexState, row: Any, fingerprint: str) -> None:
    source, records = row
    indexed = state.files[sys.intern(str(source))]
    for rid, *fields in records:
        record = Record.of_fields(*fields)  # another shape: TypeError, a full read
        indexed.records[str(rid)] = record
        if isinstance(record.hash, str) and record.fp == fingerprint:
            state.by_hash.setdefault(record.hash, str(rid))
