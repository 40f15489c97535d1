"""The vector store: one Chroma collection, cosine space, our own vectors. The only module that imports chromadb.

Chroma errors are mapped to `StoreError` in `_chroma` and nowhere else. Reads of many records are paged (a `get`
over ~32k ids fails with "too many SQL variables") and writes are batched under Chroma's maximum batch size.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from docvec import __version__
from docvec.errors import IndexMismatch, IndexNotFound, StoreError, interrupt_behind
from docvec.fingerprint import FORMAT_VERSION, Fingerprint
from docvec.location import Hnsw as Hnsw, StoreLocation as StoreLocation  # re-exported: where a Store opens

if TYPE_CHECKING:
    from docvec.recordfile import RecordFile
    from docvec.residue import HnswSlots

PAGE = 1_000  # records per read: Chroma keeps memory that grows with one get's size (reading 100k records' metadata
# peaked at 472 MB by 2,500, 376 MB by 1,000, 347 MB by 500, and 1,000 was the fastest)
ID_PAGE = 50_000  # fewest ids per read when listing a whole collection (see Store._id_pages)
ID_PAGES = 4  # reads a listing takes, its pages a share of the collection up to ID_PAGE_MAX ids each
ID_PAGE_MAX = 500_000
JOURNAL_SUFFIX = ".changes"  # `<physical>.changes` on a server: the chunk ids each sync touched (Store.bump_generation)
JOURNAL_KEEP = 32  # generations the journal covers; a client further behind compares every record
JOURNAL_MAX_IDS = 200_000  # a run touching more records no one: the comparison costs about the same
JOURNAL_PART = 2_000  # ids per journal record
WRITE_BATCH = 5_000  # Chroma's limit is 5,461 records per call
FINGERPRINT_KEY = "docvec:fingerprint"
FORMAT_KEY = "docvec:format"
ALIAS_KEY = "docvec:live"  # on the pointer collection: the physical collection queries read
PREVIOUS_KEY = "docvec:previous"  # on the pointer collection: what `rollback` restores
GENERATION_KEY = "docvec:generation"  # bumped by every write, so derived indexes can tell they are behind
WRITING_KEY = "docvec:writing"  # set before a run's first write, cleared by its last: a killed run leaves it set
DOCS_ROOT_KEY = "docvec:docs_root"  # the docs folder the index was built from (absolute)
STATS_KEY = "docvec:stats"  # JSON: files, chunks, skipped by reason, last sync time and duration (for `status`)
CHROMA_FILE = "chroma.sqlite3"
# Chroma writes while it opens an index (its catalog); on a read-only or full disk that fails with these.
_UNWRITABLE = ("readonly database", "read-only file system", "disk is full", "no space left", "disk i/o error",
               "input/output error", "backfill request to compactor", "permission denied")  # compactor: no room for its log


def is_unwritable(exc: BaseException) -> bool:
    """Whether an error says the index's disk cannot be written (read-only, full, failing, not permitted): the
    one test shared by readers (who then read a copy) and writers (who then stop instead of retrying)."""
    text = str(exc).lower()
    return any(m in text for m in _UNWRITABLE)

Metadata = dict[str, Any]
DEFAULT_EF_SEARCH = 100  # Chroma's HNSW defaults
DEFAULT_EF_CONSTRUCTION = 100
DEFAULT_MAX_NEIGHBORS = 16


@dataclass(frozen=True)
class QueryResult:
    """One nearest neighbour as Chroma returns it."""

    id: str
    document: str
    metadata: Metadata
    similarity: float  # cosine similarity (1 - Chroma's cosine distance)


@contextlib.contextmanager
def _chroma(action: str, location: StoreLocation) -> Iterator[None]:
    """Turn any Chroma failure inside the block into a StoreError naming the action and the index."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # Chroma raises many unrelated types (ValueError, its own, sqlite's, httpx's)
        if (stop := interrupt_behind(exc)) is not None:
            raise stop from None
        raise StoreError(f"{action} failed on {location.describe()}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """The first line of the first message down the exception chain that says something: Chroma re-raises an HTTP
    error from a server that is not Chroma as ValueError(its body), empty or an HTML page, while the chain holds
    httpx's message (Client error '404 Not Found' for url ...)."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).strip()
        if text and not text.startswith("<"):
            return text.splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


@dataclass(frozen=True)
class PhysicalCollection:
    """One physical collection behind a logical index name: the live one, a backup, or a build in progress."""

    name: str
    fingerprint: Fingerprint | None
    count: int
    live: bool
    previous: bool  # what `rollback` would restore
    writing: bool = False  # a write to it began and did not complete (a killed reindex's build, a half-pruned one)


class Store:
    """A docvec index: the live physical collection that the logical name's pointer names.

    The logical name (store.collection) is a pointer collection holding no records; its metadata names the live
    physical collection `<name>--<fingerprint hash>`. Switching models builds another physical collection and
    then rewrites the pointer: one metadata write, so readers see the old index or the new one, never a mix.
    """

    def __init__(self, location: StoreLocation, client: Any, collection: Any) -> None:
        self.location = location
        self._client = client
        self._collection = collection
        self.name: str = collection.name
        self.read_copy: Path | None = None  # set when reading from a copy of a read-only index
        self._swept = False  # residue swept since this Store was opened (the sweep covers the whole database)
        self._records: RecordFile | None = None  # its records' file, once read

    @classmethod
    def open(cls, location: StoreLocation, create_with: Fingerprint | None = None) -> "Store":
        """Open the live index; create it with `create_with` as its fingerprint when there is none yet.

        Without `create_with` nothing is created: a folder that holds no index is IndexNotFound."""
        if create_with is None and not location.host and not (location.path / CHROMA_FILE).is_file():
            raise IndexNotFound(f"no index at {location.path}: build it with `docvec ingest`")
        with _chroma("opening the index", location):
            client = _client(location)
            pointer = _get_collection(client, location.collection)
            live = (pointer.metadata or {}).get(ALIAS_KEY) if pointer is not None else None
            if pointer is not None and live is None:
                raise IndexMismatch(f"{location.describe()} exists but was not made by docvec: choose another "
                                    f"store.collection, or delete it yourself if it is disposable")
            if live is None:
                if create_with is None:
                    raise IndexNotFound(f"no {location.describe()}: build it with `docvec ingest`")
                store = cls.open_physical(location, physical_name(location, create_with), create_with,
                                          client)
                _set_pointer(client, location.collection, store.name, None)
                return store
        return cls.open_physical(location, str(live), None, client)

    @classmethod
    def open_physical(cls, location: StoreLocation, name: str, create_with: Fingerprint | None,
                      client: Any = None) -> "Store":
        """Open (or create, given a fingerprint) one physical collection by name."""
        with _chroma("opening the index", location):
            client = client or _client(location)
            collection = _get_collection(client, name)
            if collection is None:
                if create_with is None:
                    raise IndexNotFound(f"{location.describe()} points to collection '{name}', which is missing: "
                                        f"run `docvec rollback` or `docvec reindex`")
                collection = client.create_collection(
                    name, embedding_function=None, configuration=location.hnsw.creation(),
                    metadata={FINGERPRINT_KEY: create_with.to_json(), FORMAT_KEY: FORMAT_VERSION,
                              "docvec:version": __version__, "docvec:model": create_with.model})
        store = cls(location, client, collection)
        store._check_format()
        return store

    @classmethod
    def open_for_reading(cls, location: StoreLocation, records: bool = True) -> "Store":
        """Open the live index for reading only; an index on a read-only or full disk is read from a copy.

        Chroma writes its catalog when it opens a folder, so a read-only medium (a container's read-only layer, a
        mounted snapshot) or a full disk would fail every query. The copy lives in memory-backed /dev/shm when
        there is room (else the temp folder) and is removed when the process exits. `records=False`: the caller
        reads collection metadata only (`status`), so no record is read here."""
        try:
            store = cls.open(location)
            if records:
                store.count()  # Chroma applies its pending log on the first read: that needs to write too
            return store
        except StoreError as exc:
            if location.host or not is_unwritable(exc):
                raise
            copy = _snapshot(location.path)
        store = cls.open(dataclasses.replace(location, path=copy))
        store.location = location  # messages name the real index
        store.read_copy = copy
        return store

    def stored_generation(self) -> object:
        """The collection's sync counter as stored now (a Collection object keeps the metadata it was read with)."""
        with _chroma("reading the index metadata", self.location):
            collection = _get_collection(self._client, self.name)
        return (collection.metadata or {}).get(GENERATION_KEY) if collection is not None else None

    def live_name(self) -> str | None:
        """The physical collection the pointer names now (another process's reindex or rollback moves it)."""
        with _chroma("reading the index pointer", self.location):
            pointer = _get_collection(self._client, self.location.collection)
        return str((pointer.metadata or {}).get(ALIAS_KEY)) if pointer is not None else None

    @property
    def files_location(self) -> StoreLocation:
        """Where this store's local files are: the index itself, or the copy it is read from."""
        return self.location if self.read_copy is None else dataclasses.replace(self.location, path=self.read_copy)

    def physical_collections(self) -> list[PhysicalCollection]:
        """Every physical collection of this logical index: live, previous and other backups."""
        with _chroma("listing collections", self.location):
            pointer = _get_collection(self._client, self.location.collection)
            meta = pointer.metadata or {} if pointer is not None else {}
            names = [c.name if hasattr(c, "name") else str(c) for c in self._client.list_collections()]
        out = []
        prefix = self.location.collection + "--"
        for name in sorted(n for n in names if n.startswith(prefix) and "." not in n[len(prefix):]):  # not journals
            other = Store.open_physical(self.location, name, None, self._client)
            try:
                fp: Fingerprint | None = other.fingerprint()
            except IndexMismatch:
                fp = None
            out.append(PhysicalCollection(name, fp, other.recorded_count(), name == meta.get(ALIAS_KEY),
                                          name == meta.get(PREVIOUS_KEY), other.writing()))
        return out

    def point_to(self, name: str) -> None:
        """Make physical collection `name` the live index (one metadata write); the old one becomes 'previous'."""
        with _chroma("switching the live index", self.location):
            _set_pointer(self._client, self.location.collection, name, self.name if self.name != name else None)

    def forget_previous(self) -> None:
        """Keep no 'previous' index (before deleting it: a half-deleted collection is never rolled back to)."""
        with _chroma("switching the live index", self.location):
            _set_pointer(self._client, self.location.collection, self.name, None)

    def drop_physical(self, name: str) -> None:
        """Delete a physical collection that is not live (on a server its records first), then sweep residue.

        Chroma 1.5.9's `delete_collection` leaves the collection's list-valued metadata rows behind
        (`embedding_metadata_array`), and SQLite gives their integer ids to the next records written, which then
        carry list values (dirs, tags) of records that no longer exist (bench/README.md, "What Chroma leaves").
        A local index is swept right after (and by every writer before its first write, should a kill come
        between). A server's files cannot be swept, so there its records are deleted by id first, which leaves
        no rows. Locally that would cost an HNSW update a call: a 1M-record backup took over 34 minutes in pages
        of 1,000 (bench/README.md, session 24)."""
        if name == self.name:
            raise StoreError(f"refusing to delete the live collection '{name}'")
        with _chroma("deleting a backup", self.location):
            doomed = _get_collection(self._client, name)
        if doomed is not None:
            other = Store(self.location, self._client, doomed)
            other.mark_writing_quietly()
            while self.location.host and (ids := other.ids_page()):
                other.delete(ids)
            with _chroma("deleting a backup", self.location):
                self._client.delete_collection(name)
        if self.location.host and _get_collection(self._client, name + JOURNAL_SUFFIX) is not None:
            with _chroma("deleting a backup", self.location):
                self._client.delete_collection(name + JOURNAL_SUFFIX)
        self.sweep_residue()

    def sweep_residue(self, always: bool = False) -> dict[str, int]:
        """Remove what deleted records and collections left in a local index's files (skipped when no collection
        or segment went since the last sweep, unless `always`); returns rows by kind."""
        from docvec.residue import sweep

        self._swept = True
        return {} if self.location.host or self.read_copy else sweep(self.location.path, always)

    def residue(self) -> dict[str, int]:
        """What deleted records and collections left in a local index's files, by kind ({} for a server)."""
        from docvec.residue import find

        return {} if self.location.host else find(self.files_location.path)

    def hnsw_slots(self) -> "HnswSlots | None":
        """The collection's HNSW slots as Chroma last saved them (None for a server, or before the first save)."""
        from docvec.residue import hnsw_slots

        return None if self.location.host else hnsw_slots(self.files_location.path, str(self._collection.id))

    def ids_page(self) -> list[str]:
        """Up to WRITE_BATCH record ids, Chroma's largest delete (for deleting a collection record by record)."""
        with _chroma("reading ids", self.location):
            return list(self._collection.get(include=[], limit=WRITE_BATCH)["ids"])

    def _check_format(self) -> None:
        meta = self._collection.metadata or {}
        if FINGERPRINT_KEY not in meta:
            raise IndexMismatch(f"{self.location.describe()} was not built by docvec (no fingerprint): "
                                f"choose another store.collection, or delete it yourself if it is disposable")
        if meta.get(FORMAT_KEY) != FORMAT_VERSION:
            raise IndexMismatch(f"{self.location.describe()} has docvec format {meta.get(FORMAT_KEY)}, this docvec "
                                f"reads format {FORMAT_VERSION}: use the docvec version that built it "
                                f"({meta.get('docvec:version')}) or re-ingest into a new collection")

    def fingerprint(self) -> Fingerprint:
        """The fingerprint recorded when this index was created."""
        raw = (self._collection.metadata or {})[FINGERPRINT_KEY]
        try:
            return Fingerprint.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexMismatch(f"{self.location.describe()} has an unreadable fingerprint: {exc}") from exc

    def count(self) -> int:
        """Number of chunks in the index."""
        with _chroma("counting records", self.location):
            return int(self._collection.count())

    def iter_metadata(self) -> Iterator[tuple[str, Metadata]]:
        """Every record's id and metadata, read page by page."""
        for ids in self._id_pages("reading metadata"):
            for begin in range(0, len(ids), PAGE):
                yield from self.get_metadatas(ids[begin:begin + PAGE]).items()

    def iter_documents(self) -> Iterator[tuple[str, str, Metadata]]:
        """Every record's id, text and metadata, read page by page."""
        for ids in self._id_pages("reading records"):
            for begin in range(0, len(ids), PAGE):
                for rid, (doc, meta) in self.get_documents(ids[begin:begin + PAGE]).items():
                    yield rid, doc, meta

    def _pages(self, include: list[str], action: str) -> Iterator[Any]:
        """The whole collection, PAGE records per `get` (one `get` over ~32k rows fails in Chroma).

        The ids are listed first (Store._id_pages), and the records then read by id: Chroma steps over every row before
        an offset (~0.3 µs a row), so reading PAGE records at a time by offset made a full read quadratic — at 150k
        records the last page cost twice the first, and at 1M the skipping alone would be ~160 s of ~200 s."""
        for ids in self._id_pages(action):
            for begin in range(0, len(ids), PAGE):
                with _chroma(action, self.location):
                    yield self._collection.get(ids=ids[begin:begin + PAGE], include=include)

    def _id_pages(self, action: str) -> Iterator[list[str]]:
        """Every record id, in about ID_PAGES reads of a share of the collection each.

        A read at an offset steps over every row before it — on a Chroma server ~5 µs a row, as much as returning
        it (locally ~0.3 µs) — so pages of a fixed 50k ids made the listing quadratic: 42.8 s of a 1M-chunk server
        index's keyword build against 8 s at 500k (the build's 1.33 slope). Pages of a quarter of the collection
        list 1M ids in 13.2 s; the cap keeps one read's ids small in memory (500k ids: ~40 MB)."""
        page = min(ID_PAGE_MAX, max(ID_PAGE, self.count() // ID_PAGES + 1))
        offset = 0
        while True:
            with _chroma(action, self.location):
                ids = list(self._collection.get(include=[], limit=page, offset=offset)["ids"])
            if ids:
                yield ids
            if len(ids) < page:
                return
            offset += page

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        """Stored vectors by id, as float32 arrays (ids that are missing are left out)."""
        out: dict[str, NDArray[np.float32]] = {}
        for begin in range(0, len(ids), PAGE):
            with _chroma("reading vectors", self.location):
                page = self._collection.get(ids=list(ids[begin:begin + PAGE]), include=["embeddings"])
            # Chroma hands back numpy rows: converting 384 numbers to Python floats cost as much as the read.
            for rid, vec in zip(page["ids"], page["embeddings"] if page["embeddings"] is not None else []):
                out[rid] = np.asarray(vec, dtype=np.float32)
        return out

    def get_documents(self, ids: Sequence[str]) -> dict[str, tuple[str, Metadata]]:
        """Stored texts and metadata by id."""
        return self.get_texts(ids)[0]

    def get_texts(self, ids: Sequence[str], keys: Sequence[str] | None = None
                  ) -> tuple[dict[str, tuple[str, Metadata]], bool]:
        """Stored texts and metadata by id, of every key or at least of `keys`; and whether the metadata is whole
        (Chroma's `get` reads every key whatever is asked; a local index's file can read just those)."""
        fast = self._record_file()
        found = fast.documents(ids, keys) if fast is not None else None
        if found is not None:
            return found, keys is None
        out: dict[str, tuple[str, Metadata]] = {}
        for begin in range(0, len(ids), PAGE):
            with _chroma("reading records", self.location):
                page = self._collection.get(ids=list(ids[begin:begin + PAGE]), include=["documents", "metadatas"])
            for rid, doc, meta in zip(page["ids"], page["documents"] or [], page["metadatas"] or []):
                out[rid] = (doc or "", dict(meta or {}))
        return out, True

    def get_metadatas(self, ids: Sequence[str]) -> dict[str, Metadata]:
        """Stored metadata by id."""
        fast = self._record_file()
        found = fast.metadatas(ids) if fast is not None else None
        if found is not None:
            return found
        out: dict[str, Metadata] = {}
        for begin in range(0, len(ids), PAGE):
            with _chroma("reading metadata", self.location):
                page = self._collection.get(ids=list(ids[begin:begin + PAGE]), include=["metadatas"])
            for rid, meta in zip(page["ids"], page["metadatas"] or []):
                out[rid] = dict(meta or {})
        return out

    def _record_file(self) -> "RecordFile | None":
        """A local index's records read from its SQLite file (3x Chroma's get: docvec.recordfile); None: a server."""
        if self.location.host:
            return None
        if self._records is None:
            from docvec.recordfile import RecordFile

            self._records = RecordFile(self.files_location.path, str(self._collection.id))
        return self._records

    def has_source(self, source: str) -> bool:
        """Whether the index holds chunks of this file (relative path as stored)."""
        with _chroma("reading metadata", self.location):
            page = self._collection.get(where={"source": source}, limit=1, include=[])
        return bool(page["ids"])

    def filter_ids(self, ids: Sequence[str], where: Mapping[str, Any]) -> set[str]:
        """The subset of ids whose metadata matches a where clause."""
        with _chroma("filtering records", self.location):
            page = self._collection.get(ids=list(ids), where=dict(where), include=[])
        return set(page["ids"])

    def add(self, ids: Sequence[str], vectors: Sequence[Sequence[float]] | Sequence[NDArray[np.float32]],
            documents: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        """Add new records (ids must not exist yet: `add` is ~10x faster than upserting over existing ids)."""
        if ids:
            self._ensure_space(len(ids), len(vectors[0]), sum(len(d.encode()) for d in documents))
        for begin in range(0, len(ids), WRITE_BATCH):
            end = begin + WRITE_BATCH
            with _chroma("writing chunks", self.location):
                self._collection.add(ids=list(ids[begin:end]),
                                     embeddings=np.asarray(vectors[begin:end], dtype=np.float32),
                                     documents=list(documents[begin:end]), metadatas=list(metadatas[begin:end]))
            if self.location.host:
                self._heal_inherited(ids[begin:end], metadatas[begin:end])

    def _heal_inherited(self, ids: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        """Make just-added records carry exactly their metadata. A server's catalog may hold rows that another
        client's `delete_collection` left (docvec.residue), which new records inherit; docvec cannot sweep a
        server's files, so it reads what it wrote back and removes what it did not write (one read per batch)."""
        stored = self.get_metadatas(ids)
        wrong = [(rid, m) for rid, m in zip(ids, metadatas) if dumps_metadata(stored.get(rid, {})) != dumps_metadata(m)]
        if wrong:
            self.replace_metadata([r for r, _ in wrong], [m for _, m in wrong], stored)

    def copy_from(self, other: "Store") -> int:
        """Copy every record of another collection that this one lacks, vectors included; returns how many."""
        have = {rid for rid, _ in self.iter_metadata()}
        copied = 0
        for page in other._pages(["embeddings", "documents", "metadatas"], "copying records"):
            rows = [(i, e, d, m) for i, e, d, m in zip(page["ids"], page["embeddings"], page["documents"],
                                                      page["metadatas"]) if i not in have]
            if rows:
                ids, vectors, docs, metas = zip(*rows)
                self.add(ids, vectors, [d or "" for d in docs], [dict(m or {}) for m in metas])
                copied += len(rows)
        return copied

    def _ensure_space(self, records: int, dimension: int, text_bytes: int) -> None:
        """Refuse a write that could fill the index's disk: Chroma stops answering if it runs out of space while
        compacting, until space is freed. Measured: ~4 copies of each vector plus ~3 of its text and 2 KB; the
        same again is kept free for compaction."""
        if self.location.host:
            return
        need = 2 * (records * (dimension * 4 * 4 + 2048) + 3 * text_bytes)
        try:
            free = shutil.disk_usage(self.location.path).free
        except OSError:
            return
        if free < need:
            raise StoreError(f"the disk of {self.location.path} is full ({free / 2**20:.1f} MB free; the next write "
                             f"of {records} chunks needs about {need / 2**20:.1f} MB): free some space and run "
                             f"again — what is indexed stays and keeps answering")

    def replace_metadata(self, ids: Sequence[str], metadatas: Sequence[Metadata],
                         stored: Mapping[str, Metadata]) -> None:
        """Make existing records' metadata exactly `metadatas` (vectors untouched). Chroma's `update` merges keys:
        only the keys whose value differs from the stored metadata (`stored`, by id) are sent, and a key the new one
        lacks is sent as None, which removes it. (A file's edit moves its version on every chunk it keeps: sending
        that one key instead of all ~15 made an update ~3x cheaper, and these were 12 s of a 1 % sync at 1M.)"""
        changes = [(rid, _changed_keys(stored.get(rid, {}), m)) for rid, m in zip(ids, metadatas)]
        changes = [(rid, c) for rid, c in changes if c]
        for begin in range(0, len(changes), WRITE_BATCH):
            batch = changes[begin:begin + WRITE_BATCH]
            with _chroma("updating chunk metadata", self.location):
                self._collection.update(ids=[rid for rid, _ in batch], metadatas=[c for _, c in batch])

    def delete(self, ids: Sequence[str]) -> None:
        """Delete records by id."""
        for begin in range(0, len(ids), WRITE_BATCH):
            with _chroma("deleting chunks", self.location):
                self._collection.delete(ids=list(ids[begin:begin + WRITE_BATCH]))

    def query(self, vector: Sequence[float], k: int, where: Mapping[str, Any] | None = None,
              with_text: bool = True) -> list[QueryResult]:
        """The k nearest records to a vector, best first (without text and metadata unless `with_text`)."""
        # No count() first: Chroma 1.x returns fewer than k when it has fewer, and count() costs ~17 ms at 100k.
        include = ["documents", "metadatas", "distances"] if with_text else ["distances"]
        with _chroma("querying", self.location):
            res = self._collection.query(query_embeddings=[list(vector)], n_results=k, where=dict(where) if where
                                         else None, include=include)
        docs = res["documents"][0] if with_text else [None] * len(res["ids"][0])
        metas = res["metadatas"][0] if with_text else [None] * len(res["ids"][0])
        rows = zip(res["ids"][0], docs, metas, res["distances"][0])
        return [QueryResult(i, d or "", dict(m or {}), 1.0 - float(dist)) for i, d, m, dist in rows]

    def size_on_disk(self) -> int | None:
        """Bytes used by the index folder (None for a server)."""
        if self.location.host:
            return None
        return sum(p.stat().st_size for p in self.location.path.rglob("*") if p.is_file())

    def collection_metadata(self) -> Metadata:
        """The collection's own metadata (fingerprint, docvec version)."""
        return dict(self._collection.metadata or {})

    def hnsw_settings(self) -> dict[str, Any]:
        """The live collection's HNSW configuration as Chroma reports it."""
        with _chroma("reading the collection configuration", self.location):
            return dict((self._collection.configuration or {}).get("hnsw") or {})

    def beam(self) -> int:
        """How deep a vector read stays inside one HNSW beam (the live ef_search): Chroma widens the beam to a
        deeper read's depth, so reads up to this deep are prefixes of one list and a deeper one may reorder them."""
        return int(self.hnsw_settings().get("ef_search") or DEFAULT_EF_SEARCH)

    def hnsw_rebuild_needed(self) -> str | None:
        """Which configured HNSW build settings the live collection lacks (they take a `docvec reindex`)."""
        have, want = self.hnsw_settings(), self.location.hnsw
        diffs = [f"{key} {have.get(key)} → {value}" for key, value in (("ef_construction", want.ef_construction),
                                                                        ("max_neighbors", want.max_neighbors))
                 if value is not None and have.get(key) != value]
        return ", ".join(diffs) or None

    def apply_ef_search(self) -> int | None:
        """Set the configured ef_search on the collection when it differs; returns the old value if changed."""
        wanted = self.location.hnsw.ef_search
        current = self.hnsw_settings().get("ef_search")
        if wanted is None or wanted == current:
            return None
        with _chroma("changing hnsw ef_search", self.location):
            self._collection.modify(configuration={"hnsw": {"ef_search": wanted}})
        return int(current) if current is not None else None

    def bump_generation(self, extra: Metadata | None = None, touched: Sequence[str] | None = None) -> None:
        """Record that the collection changed (and any extra collection metadata, e.g. measured speed); clears
        the writing mark. `touched`: every chunk id the run added, changed or deleted, when the run knows them all
        (None: it does not) — kept on a server so that another machine's keyword index catches up by them."""
        meta = self.collection_metadata()
        generation = int(meta.get(GENERATION_KEY, 0)) + 1
        self._journal(generation, touched)
        meta[GENERATION_KEY] = generation
        meta.pop(WRITING_KEY, None)
        meta.update(extra or {})
        self.set_collection_metadata(meta)

    def _journal(self, generation: int, touched: Sequence[str] | None) -> None:
        """On a server, keep which ids the run that makes `generation` touched (written before the generation:
        a reader that sees the generation finds its entry). Entries of a run that died before its generation
        (same or later number) and of generations older than JOURNAL_KEEP go first; a writer that does not know
        what it touched leaves its generation without an entry, and clients then compare every record."""
        if not self.location.host:
            return  # a local index's keyword index is written by the writer itself
        journal = self._journal_collection(create=True)
        with _chroma("writing the change journal", self.location):
            journal.delete(where={"$or": [{"gen": {"$gte": generation}},
                                          {"gen": {"$lte": generation - JOURNAL_KEEP}}]})
            if touched is None or len(touched) > JOURNAL_MAX_IDS:
                return
            ids = sorted(set(touched))
            parts = [ids[i:i + JOURNAL_PART] for i in range(0, len(ids), JOURNAL_PART)] or [[]]
            journal.add(ids=[f"{generation}-{n}" for n in range(len(parts))], embeddings=[[1.0]] * len(parts),
                        documents=[" ".join(p) for p in parts],
                        metadatas=[{"gen": generation, "parts": len(parts)} for _ in parts])

    def _journal_collection(self, create: bool) -> Any:
        name = self.name + JOURNAL_SUFFIX
        with _chroma("reading the change journal", self.location):
            found = _get_collection(self._client, name)
            if found is None and create:
                found = self._client.get_or_create_collection(name, embedding_function=None)
        return found

    def touched_between(self, since: int, until: int) -> set[str] | None:
        """Every chunk id the syncs after generation `since` up to `until` touched, from a server's journal; None
        when it does not cover each of those generations (a local index, a writer that did not record them, a
        client more than JOURNAL_KEEP generations behind)."""
        if not self.location.host or not 0 <= since < until or until - since >= JOURNAL_KEEP:
            return None
        journal = self._journal_collection(create=False)
        if journal is None:
            return None
        with _chroma("reading the change journal", self.location):
            got = journal.get(where={"$and": [{"gen": {"$gt": since}}, {"gen": {"$lte": until}}]},
                              include=["documents", "metadatas"])
        parts: dict[int, list[int]] = {}
        touched: set[str] = set()
        for meta, doc in zip(got["metadatas"] or [], got["documents"] or []):
            parts.setdefault(int(meta["gen"]), []).append(int(meta["parts"]))
            touched.update((doc or "").split())
        complete = all(g in parts and len(parts[g]) == parts[g][0] for g in range(since + 1, until + 1))
        return touched if complete else None

    def begin_write(self) -> None:
        """The write protocol's first step, before any writer's first write to this collection (ingest, repair,
        reindex's copy, prune): set the writing mark, so that a run killed from here on is visible to the next
        one and to the derived keyword index, and sweep residue that a new record could inherit. The last step
        is `bump_generation`, which clears the mark."""
        self.mark_writing()
        if not self._swept:  # a writer that opened the index with open_for_writing swept it then
            self.sweep_residue()

    def mark_writing(self) -> None:
        """Mark the collection as being written (see `begin_write`)."""
        meta = self.collection_metadata()
        if WRITING_KEY not in meta:
            meta[WRITING_KEY] = time.time()
            self.set_collection_metadata(meta)

    def mark_writing_quietly(self) -> None:
        """The writing mark on a collection that may have lost its fingerprint (a collection being deleted)."""
        meta = self.collection_metadata()
        if FINGERPRINT_KEY in meta:
            self.mark_writing()

    def writing(self) -> bool:
        """Whether a run has written (or is writing) since the last completed one."""
        return WRITING_KEY in self.collection_metadata()

    def docs_root(self) -> str | None:
        """The docs folder the index was built from (None for an index made before docvec recorded it)."""
        root = self.collection_metadata().get(DOCS_ROOT_KEY)
        return str(root) if root else None

    def recorded_count(self) -> int:
        """Chunks as the last completed sync counted them, read from the collection's metadata; an exact count
        when none was recorded or a run was interrupted since. (Any read of a record makes local Chroma load the
        collection's whole vector index, ~2.5 KB a chunk: 200 MB for `status` at 100k chunks.)"""
        chunks = self.stats().get("chunks")
        return chunks if isinstance(chunks, int) and not self.writing() else self.count()

    def stats(self) -> dict[str, Any]:
        """What the last completed sync recorded (files, chunks, skipped, when, how long); {} if none."""
        try:
            data = json.loads(str(self.collection_metadata().get(STATS_KEY) or "{}"))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def set_collection_metadata(self, meta: Metadata) -> None:
        """Replace the collection's metadata (Chroma's modify replaces the whole dict: pass all of it)."""
        if FINGERPRINT_KEY not in meta:
            raise StoreError("refusing to drop the fingerprint from the collection metadata")
        with _chroma("updating collection metadata", self.location):
            self._collection.modify(metadata=dict(meta))


class LeaseBoard:
    """Where the writer lease of a server-mode index lives: a collection `<name>.writer-lock` with no records.

    Creating a collection is atomic on the server (a second create of the same name fails), which is the one
    compare-and-set Chroma offers; the lease's holder, token and expiry are that collection's metadata.
    """

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self.name = f"{location.collection}.writer-lock"
        self._client: Any = None

    def _c(self) -> Any:
        if self._client is None:
            self._client = _client(self.location)
        return self._client

    def create(self, meta: Metadata) -> bool:
        """Create the lease with `meta`; False when it already exists."""
        with _chroma("taking the writer lock", self.location):
            try:
                self._c().create_collection(self.name, embedding_function=None, metadata=dict(meta))
                return True
            except Exception:
                if _get_collection(self._c(), self.name) is not None:
                    return False
                raise

    def read(self) -> Metadata | None:
        """The lease's metadata, or None when nobody holds it."""
        with _chroma("reading the writer lock", self.location):
            found = _get_collection(self._c(), self.name)
        return dict(found.metadata or {}) if found is not None else None

    def write(self, meta: Metadata) -> None:
        """Replace the lease's metadata (a heartbeat)."""
        with _chroma("renewing the writer lock", self.location):
            found = _get_collection(self._c(), self.name)
            if found is not None:
                found.modify(metadata=dict(meta))

    def delete(self) -> None:
        """Remove the lease."""
        from chromadb.errors import NotFoundError

        with _chroma("releasing the writer lock", self.location):
            try:
                self._c().delete_collection(self.name)
            except (NotFoundError, ValueError):
                pass


def _client(location: StoreLocation) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if location.host:
        return chromadb.HttpClient(host=location.host, port=location.port, ssl=location.ssl,
                                   headers=dict(location.headers) or None, settings=settings,
                                   tenant=location.tenant, database=location.database)
    location.path.mkdir(parents=True, exist_ok=True)  # readers checked that the index exists before coming here
    return chromadb.PersistentClient(path=str(location.path), settings=settings, tenant=location.tenant,
                                     database=location.database)


def forget_cached_client(location: StoreLocation) -> None:
    """Drop Chroma's per-process cache of a local index, so that the next Store opened on it reads what other
    processes wrote since (a long-lived reader otherwise keeps a stale vector index: "Error finding id").

    Only safe while nothing in this process uses a Store of that index (the caller serialises)."""
    if location.host:
        return  # a server's client asks the server every time
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(str(location.path), None)
    SharedSystemClient._identifier_to_refcount.pop(str(location.path), None)
    if system is not None:
        with contextlib.suppress(Exception):  # it is being thrown away: a failure to stop changes nothing
            system.stop()


def _snapshot(path: Path) -> Path:
    """A private, writable copy of an index folder (for reading an index that cannot be written)."""
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    places = [Path("/dev/shm"), Path(tempfile.gettempdir())]
    for place in places:
        try:
            if place.is_dir() and shutil.disk_usage(place).free > 2 * size + 2**20:
                target = Path(tempfile.mkdtemp(prefix="docvec-readonly-", dir=place))
                atexit.register(shutil.rmtree, target, True)
                _SNAPSHOTS.append(target)
                shutil.copytree(path, target / "index", ignore=shutil.ignore_patterns(".docvec-*"))
                return target / "index"
        except OSError:
            continue
    raise StoreError(f"the index at {path} cannot be written (read-only or full disk) and there is no room to read "
                     f"it from a copy ({size / 2**20:.0f} MB needed in /dev/shm or {tempfile.gettempdir()}): free "
                     f"some space")


_SNAPSHOTS: list[Path] = []


def remove_snapshots() -> None:
    """Delete the copies made by `open_for_reading` (for callers that exit without running atexit hooks)."""
    while _SNAPSHOTS:
        shutil.rmtree(_SNAPSHOTS.pop(), ignore_errors=True)


def physical_name(location: StoreLocation, fingerprint: Fingerprint) -> str:
    """The physical collection that holds the index's vectors under one fingerprint (and HNSW build settings,
    when set: they are fixed at creation, so other values mean another collection, built by `docvec reindex`)."""
    name = f"{location.collection}--{fingerprint.short_hash()}"
    h = location.hnsw
    if h.ef_construction is not None or h.max_neighbors is not None:
        name += f"-hnsw{h.ef_construction or DEFAULT_EF_CONSTRUCTION}x{h.max_neighbors or DEFAULT_MAX_NEIGHBORS}"
    return name


def _set_pointer(client: Any, logical: str, live: str, previous: str | None) -> None:
    meta: Metadata = {ALIAS_KEY: live, FORMAT_KEY: FORMAT_VERSION}
    if previous:
        meta[PREVIOUS_KEY] = previous
    pointer = _get_collection(client, logical)
    if pointer is None:
        client.create_collection(logical, embedding_function=None, metadata=meta)
    else:
        pointer.modify(metadata=meta)


def _get_collection(client: Any, name: str) -> Any:
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except NotFoundError:
        return None


def _changed_keys(old: Metadata, new: Metadata) -> dict[str, Any]:
    """What `update` (which merges keys) must send to turn `old` into exactly `new`: the keys whose value differs
    (compared as JSON, so True is not 1 and 1 is not 1.0, as Chroma stores them apart), None for those `new` lacks."""
    out: dict[str, Any] = {k: None for k in old if k not in new}
    out.update((k, v) for k, v in new.items()
               if k not in old or dumps_metadata({k: old[k]}) != dumps_metadata({k: v}))
    return out


def dumps_metadata(meta: Mapping[str, Any]) -> str:
    """Stable JSON of a metadata dict (for comparing what is stored with what would be written)."""
    return json.dumps(meta, sort_keys=True, default=str)
