"""Keyword search over the same chunk ids as the vector index: a tantivy full-text index with BM25 ranking.

Local Chroma has no keyword ranking, so docvec keeps a tantivy index beside the collection (tantivy answers a
top-k question with block-max WAND instead of scoring every matching chunk: ~1 ms at 100k chunks where SQLite's
FTS5 took 50-100 ms). It is derived entirely from the collection (chunk label + text by id) and re-synced from it
after every ingest and whenever a query finds it behind, so a crash can never leave the two disagreeing for long,
and a lost index is simply rebuilt. The generation it reflects is a document of the index itself, written in the
same commit as the rows: one tantivy commit is atomic, like the collection write it follows.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import itertools
import json
import multiprocessing
import re
import shutil
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, MutableMapping, Sequence

import Stemmer
import tantivy

from docvec.errors import DocvecError, LockHeld, StoreError
from docvec.smallfiles import write_json_atomically
from docvec.store import GENERATION_KEY, JOURNAL_MAX_IDS, PAGE, WRITING_KEY, Store, StoreLocation

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
_HEX_ID = re.compile(r"[0-9a-f]{32}")
SCHEMA_VERSION = "5"  # part of the folder name: another version's index is never opened, only replaced
# 4: Porter's stemmer (FTS5's, Lucene's and Anserini's) instead of tantivy's Porter2 (bench/README.md, session 15)
# 5: a digest of each row's text; what the index reflects is a file beside the rows, not a document among them
# (every commit replaced that document, and each deleted copy counted in bm25's statistics)
STATE_FILE = "docvec-state.json"  # what the index reflects: {"generation": ...}, written after the rows' commit
MAX_SETTLE_ROUNDS = 3  # rewrites of segments holding deleted rows before the index is rebuilt whole
SETTLE_BATCH = 5_000  # rows rewritten per commit
WRITER_HEAP = 50_000_000  # bytes tantivy may buffer before it writes a segment
WRITER_WAIT_S = 30.0  # how long a writer waits for another process's keyword writer (a query catching up)
MAX_TERMS = 1024  # distinct words of one question that count (a 10,000-character question has fewer)
ANALYSE_AHEAD_FROM = 20_000  # rows a first build reads before a second process analyses the rest (~0.5 s to start)


def _words_analyzer() -> tantivy.TextAnalyzer:
    """Words (letters and digits), lower-cased, accents folded; stemmed by `analyzed`."""
    return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.ascii_fold()).build())


_WORDS_ANALYZER = _words_analyzer()
# The body is stored as its stems, space-separated: tantivy's stemmers are Snowball's (English is Porter2), and
# Porter's original algorithm ranks better here (SciFact hybrid nDCG@10 0.732 -> 0.739; bench/README.md).
_STEMS = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build()
_STEMMERS = threading.local()  # a PyStemmer object must not be shared between threads (serve answers in several)


def analyzed(text: str) -> list[str]:
    """The text's terms as the keyword index holds them: words, lower-cased, accents folded, Porter-stemmed
    ('Tokens' matches 'token')."""
    stemmer = getattr(_STEMMERS, "porter", None)
    if stemmer is None:
        stemmer = _STEMMERS.porter = Stemmer.Stemmer("porter")
    return list(stemmer.stemWords(_WORDS_ANALYZER.analyze(text)))


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    # docvec's chunk ids are 32 hex digits: as two 64-bit columns they are read for a thousand hits in ~0.3 ms,
    # where the stored document costs ~8 µs per hit. Other ids (none docvec makes) are read from the document.
    builder.add_unsigned_field("hi", fast=True)
    builder.add_unsigned_field("lo", fast=True)
    builder.add_text_field("label", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("digest", stored=True, tokenizer_name="raw", index_option="basic")  # verify's check
    # bm25 needs frequencies only. Stored (as its stems): a segment is rewritten from the index itself (`settle`).
    builder.add_text_field("body", stored=True, tokenizer_name="docvec", index_option="freq")
    return builder.build()


_SCHEMA = _schema()


@dataclass
class KeywordChanges:
    """A run's writes to the collection, passed on to the keyword index window by window while that index reflects
    the generation the run started from, `since` (None: it does not, or a write failed part-way; the index is then
    compared row by row when the run ends). Nothing is held: a run of any size keeps no chunk text for later.
    Holds the keyword writer from the first window to `close` (use it in a `with` block)."""

    since: str | None
    index: KeywordIndex | None = None
    rows: int = 0  # rows passed on so far
    session: KeywordSession | None = None
    # Every id the run touched, for a server's change journal (Store.bump_generation); None: not known (a run
    # after one that died mid-way, a failed write, a local index, or more than the journal keeps).
    touched: list[str] | None = None

    @classmethod
    def follow(cls, store: Store, was_writing: bool) -> "KeywordChanges":
        """Changes to pass on to `store`'s keyword index, if it is in line with the collection now (a first run
        starts an empty one); after a run that died mid-way nothing is known row by row."""
        if was_writing:
            return cls(None)
        touched: list[str] | None = [] if store.location.host else None
        since = str(store.collection_metadata().get(GENERATION_KEY, 0))
        try:
            index = KeywordIndex.of(store)
            recorded = index.get_state("generation")
            if recorded is None and store.count() == 0:
                index.apply([], [], {"generation": since}, wait=False)
                recorded = since
        except DocvecError:  # busy or unreadable: the comparison at the end brings it in line
            return cls(None, touched=touched)
        return cls(since if recorded == since else None, index, touched=touched)

    def record(self, add: Sequence[tuple[str, str, str]], delete: Sequence[str],
               stems: MutableMapping[str, str] | None = None) -> None:
        """Pass on (id, label, text) rows written and ids removed (with the stems of some texts, analysed ahead by
        id: see `body`); the index's generation stays until the end."""
        if self.touched is not None:
            self.touched.extend(rid for rid, _, _ in add)
            self.touched.extend(delete)
            if len(self.touched) > JOURNAL_MAX_IDS:
                self.touched = None
        if self.since is None or self.index is None or not (add or delete):
            return
        try:
            self.session = self.session or self.index.session(wait=False)
            self.rows += self.session.write(add, delete, {}, stems) + len(delete)
        except DocvecError:  # another keyword writer, a full disk: compare row by row at the end
            self._stop_following()  # (the collection's writes are still known: `touched` stays)

    def finish(self, generation: str) -> None:
        """Record that the index now reflects `generation` (every row of the run is in already)."""
        assert self.index is not None
        self.session = self.session or self.index.session()
        self.session.write([], [], {"generation": generation})
        self.close()

    def forget(self) -> None:
        """What was written is not known row by row (a failed write): compare every row at the end."""
        self.touched = None
        self._stop_following()

    def _stop_following(self) -> None:
        self.since = None
        with contextlib.suppress(DocvecError):
            self.close()

    def close(self) -> None:
        """Release the keyword writer."""
        session, self.session = self.session, None
        if session is not None:
            session.close()

    def __enter__(self) -> "KeywordChanges":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.close()
        except DocvecError:
            if exc_type is None:
                raise  # else the run's own error (a full disk, an interrupt) is the one to report


class KeywordSession:
    """tantivy's writer of one keyword index, held across commits. One writer for a whole run, not one per
    window: each writer takes a WRITER_HEAP arena, and glibc kept the freed ones (+4 KB of RSS per chunk)."""

    def __init__(self, index: KeywordIndex, writer: tantivy.IndexWriter) -> None:
        self.index = index
        self._writer: tantivy.IndexWriter | None = writer

    def write(self, add: Iterable[tuple[str, str, str]], delete: Sequence[str], state: dict[str, str],
              stems: MutableMapping[str, str] | None = None) -> int:
        """Delete rows by id and add (id, label, text) rows in one atomic commit, then merge `state` into the
        recorded one; returns the rows added. A kill between the two leaves the old state: the next writer then
        compares every row, which is slower but never wrong. `stems`: texts analysed ahead, by id, each taken
        out as its row is made (`add` may fill it as it goes: _every_chunk)."""
        ahead = {} if stems is None else stems
        added = self._commit(delete, (_document(rid, label, text, ahead.pop(rid, None)) for rid, label, text in add))
        if state:
            self.index.set_state(state)
        return added

    def rewrite(self, docs: Sequence[tantivy.Document]) -> None:
        """Delete stored rows by id and add them again as they are, in one commit (see `settle`)."""
        self._commit([str(doc["id"][0]) for doc in docs], (_copy(doc) for doc in docs))

    def _commit(self, delete: Sequence[str], add: Iterable[tantivy.Document]) -> int:
        """Delete rows by id, then add rows, in one atomic commit; returns the rows added."""
        writer = self._writer
        if writer is None:
            raise StoreError(f"the keyword index {self.index.path} was closed for writing")
        added = 0
        try:
            for rid in delete:
                writer.delete_documents_by_term("id", rid)
            for doc in add:
                writer.add_document(doc)
                added += 1
            writer.commit()
        except (ValueError, OSError) as exc:
            with contextlib.suppress(DocvecError):  # this error is the one to report
                self.close()
            raise StoreError(f"cannot write the keyword index {self.index.path}: {exc}") from exc
        return added

    def wipe(self) -> None:
        """Delete every row (committed with the next write)."""
        if self._writer is not None:
            self._writer.delete_all_documents()

    def settle_merges(self) -> None:
        """Wait for the merges the last commit started, and keep the writer."""
        if self._writer is not None:
            self._writer.wait_merging_threads()
            self._writer = self.index._writer(WRITER_WAIT_S)

    def close(self) -> None:
        """Let merges finish now (not in a thread a process exit would cut short) and release the writer."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.rollback()  # anything not committed (a write that failed part-way) is dropped
            writer.wait_merging_threads()
        except (ValueError, OSError) as exc:
            raise StoreError(f"cannot write the keyword index {self.index.path}: {exc}") from exc
        finally:
            del writer


@dataclass(frozen=True)
class KeywordHit:
    """A chunk id and its bm25 score (higher is better)."""

    id: str
    score: float


class KeywordIndex:
    """A tantivy index of chunk id -> label and text (see the module docstring)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        """`read_only` never creates or changes anything (verify, and readers of a read-only index)."""
        self.path = path
        try:
            if read_only:
                if not (path / "meta.json").is_file():
                    raise StoreError(f"cannot open the keyword index {path}: it does not exist")
                self._index = tantivy.Index.open(str(path))
            else:  # opens the index there, or creates it (also over what a killed first build left)
                path.mkdir(parents=True, exist_ok=True)
                self._index = tantivy.Index(_SCHEMA, path=str(path), reuse=True)
            self._index.register_tokenizer("docvec", _STEMS)
            self._index.config_reader(reload_policy="Manual")
            self._schema = self._index.schema
        except (ValueError, OSError) as exc:
            raise StoreError(f"cannot open the keyword index {path}: {exc}") from exc
        self._seen = self._meta_stamp()

    @classmethod
    def of(cls, store: Store, read_only: bool = False) -> "KeywordIndex":
        """The keyword index of a store's live collection (use it in a `with` block); a store read from a copy
        (a read-only index) uses the copy's keyword index."""
        return cls(keyword_path(store.files_location, store.name), read_only)

    def close(self) -> None:
        """Nothing stays locked between calls: closing only drops the reference."""

    def __enter__(self) -> "KeywordIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _meta_stamp(self) -> tuple[int, int]:
        try:
            st = (self.path / "meta.json").stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def _searcher(self) -> tantivy.Searcher:
        """A searcher over the last commit, by this process or another (reloaded only when meta.json moved)."""
        stamp = self._meta_stamp()
        try:
            if stamp != self._seen:
                self._index.reload()
                self._seen = stamp
            return self._index.searcher()
        except ValueError as exc:
            raise StoreError(f"cannot read the keyword index {self.path}: {exc}") from exc

    def entries(self) -> set[tuple[str, str]]:
        """Every (chunk id, label) pair in the keyword index."""
        return {(rid, label) for rid, label, _ in self.rows()}

    def rows(self) -> list[tuple[str, str, str]]:
        """Every row as (chunk id, label, digest of label and text); a repeated id is listed each time."""
        searcher = self._searcher()
        try:
            return [(str(d["id"][0]), str(d.get_first("label") or ""), str(d.get_first("digest") or ""))
                    for _, d in _every_row(searcher)]
        except ValueError as exc:
            raise StoreError(f"cannot read the keyword index {self.path}: {exc}") from exc

    def row_count(self) -> int:
        """Live rows."""
        return int(self._searcher().num_docs)

    def deleted_rows(self) -> int:
        """Deleted rows still held in segments: bm25 counts them in its statistics until they are gone."""
        return sum(int((seg.get("deletes") or {}).get("num_deleted_docs", 0)) for seg in self._segments())

    def _segments(self) -> list[dict[str, Any]]:
        try:
            meta = json.loads((self.path / "meta.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the keyword index {self.path}: {exc}") from exc
        return list(meta.get("segments") or [])

    def get_state(self, key: str) -> str | None:
        """A value recorded with the last write ('generation': the collection generation it reflects)."""
        value = self._state().get(key)
        return None if value is None else str(value)

    def _state(self) -> dict[str, str]:
        try:
            state = json.loads((self.path / STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the keyword index {self.path}: {exc}") from exc
        return state if isinstance(state, dict) else {}

    def set_state(self, state: dict[str, str]) -> None:
        """Merge `state` into the recorded one (written whole, then renamed: never half a file)."""
        write_json_atomically(self.path / STATE_FILE, {**self._state(), **state})

    def settle(self, store: Store, wait: bool = True) -> int:
        """Rewrite the segments that hold deleted rows, so that bm25's statistics (documents, document
        frequencies, average length) count exactly the live rows, as a clean build's do; returns rows rewritten.

        tantivy counts a deleted row in its statistics until a merge drops it, and its Python binding offers no
        merge: a segment whose every row is deleted is dropped at commit, so its live rows are deleted and added
        again as stored (no text is read or analysed again). The cost is the size of those segments, not of the
        index: ~0.1 s per 1,000 rows (bench/README.md, "What exactness costs")."""
        if not self.deleted_rows():
            return 0
        session = self.session(wait)
        rewritten = 0
        try:
            for _ in range(MAX_SETTLE_ROUNDS):
                batches = self._rows_in_segments_with_deletes()
                if batches is None:
                    break
                for docs in batches:  # each batch a commit of its own: the same rows before and after it
                    session.rewrite(docs)
                    rewritten += len(docs)
                session.settle_merges()
            else:
                session.wipe()  # still deleted rows after rewriting: rebuild the whole index from the collection
                ahead: dict[str, str] = {}
                session.write(_every_chunk(store, ahead), [], {}, ahead)
        finally:
            session.close()
        return rewritten

    def _rows_in_segments_with_deletes(self) -> Iterator[list[tantivy.Document]] | None:
        """The live rows of every segment holding a deleted row, SETTLE_BATCH at a time, read from one snapshot
        (None when no segment holds one). Held a batch at a time: a merged segment of a million-chunk index holds
        most of its rows, and holding them all made a 1 % sync's peak grow with the index."""
        segments = self._segments()
        dirty = {n for n, seg in enumerate(segments) if seg.get("deletes")}
        if not dirty:
            return None
        self._index.reload()
        self._seen = self._meta_stamp()
        searcher = self._index.searcher()
        whole = searcher.num_segments != len(segments)  # it saw other segments than meta.json listed: all rows
        hits = searcher.search(tantivy.Query.all_query(), max(searcher.num_docs, 1)).hits
        addresses = [address for _, address in hits if whole or address.segment_ord in dirty]
        del hits
        return ([searcher.doc(a) for a in addresses[i:i + SETTLE_BATCH]]
                for i in range(0, len(addresses), SETTLE_BATCH))

    def apply(self, add: Iterable[tuple[str, str, str]], delete: Sequence[str], state: dict[str, str],
              wait: bool = True, stems: MutableMapping[str, str] | None = None) -> int:
        """Delete rows by id, add (id, label, text) rows and record `state`, in one atomic commit; returns the rows
        added (`stems`: see KeywordSession.write). LockHeld if another keyword writer is busy (after waiting for it
        when `wait`)."""
        session = self.session(wait)
        try:
            added = session.write(add, delete, state, stems)
        finally:
            session.close()
        return added

    def session(self, wait: bool = True) -> "KeywordSession":
        """Hold tantivy's one writer for several commits (a run commits each window with it); close it."""
        return KeywordSession(self, self._writer(WRITER_WAIT_S if wait else 0.0))

    def _writer(self, wait_s: float) -> tantivy.IndexWriter:
        """tantivy's one writer per index; another one (a query catching up) is waited for up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self._index.writer(heap_size=WRITER_HEAP, num_threads=1)
            except ValueError as exc:
                if "LockBusy" not in str(exc):
                    raise StoreError(f"cannot write the keyword index {self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise LockHeld(f"the keyword index {self.path} is being written by another process") from exc
                time.sleep(0.05)

    def search(self, question: str, k: int) -> list[KeywordHit]:
        """The k best chunks for the question's words (stop words dropped, any word may match), best first."""
        query = self._query(question)
        if query is None or k <= 0:
            return []
        searcher = self._searcher()
        # Equal scores are put in id order here, over a margin that only 33 identical scores in a row could exceed.
        found = self._hits(searcher, query, k + 32)
        ordered = sorted(((-score, rid) for rid, score in found.items()))[:k]
        return [KeywordHit(rid, -score) for score, rid in ordered]

    def scores(self, question: str, ids: Sequence[str]) -> dict[str, float]:
        """The bm25 score of each given chunk for the question; chunks without any of its words are left out."""
        query = self._query(question)
        unique = list(dict.fromkeys(ids))
        if query is None or not unique:
            return {}
        only = tantivy.Query.const_score_query(tantivy.Query.term_set_query(self._schema, "id", unique), 0.0)
        both = tantivy.Query.boolean_query([(tantivy.Occur.Must, only), (tantivy.Occur.Must, query)])
        return self._hits(self._searcher(), both, len(unique))

    def _hits(self, searcher: tantivy.Searcher, query: tantivy.Query, limit: int) -> dict[str, float]:
        try:
            found = searcher.search(query, limit, count=False).hits  # no total count: it would defeat WAND
            addresses = [address for _, address in found]
            his = searcher.fast_field_values("hi", addresses)
            los = searcher.fast_field_values("lo", addresses)
            return {f"{hi:016x}{lo:016x}" if isinstance(hi, int) and isinstance(lo, int)
                    else str(searcher.doc(address)["id"][0]): float(score)
                    for (score, address), hi, lo in zip(found, his, los)}
        except ValueError as exc:
            raise StoreError(f"cannot read the keyword index {self.path}: {exc}") from exc

    def _query(self, question: str) -> tantivy.Query | None:
        """Any of the question's words (stop words dropped), each counted once: a bm25 sum over its terms."""
        terms = list(dict.fromkeys(t for word in question_words(question) for t in analyzed(word)))
        if not terms:
            return None
        return tantivy.Query.boolean_query([(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "body", t))
                                            for t in terms[:MAX_TERMS]])


def _row(rid: str) -> tantivy.Document:
    """A new row holding its id (and, for docvec's 32-hex-digit ids, the two 64-bit columns read back fast)."""
    doc = tantivy.Document()
    doc.add_text("id", rid)
    if _HEX_ID.fullmatch(rid):
        doc.add_unsigned("hi", int(rid[:16], 16))
        doc.add_unsigned("lo", int(rid[16:], 16))
    return doc


def _document(rid: str, label: str, text: str, text_stems: str | None = None) -> tantivy.Document:
    doc = _row(rid)
    doc.add_text("label", label)
    doc.add_text("digest", row_digest(label, text))
    doc.add_text("body", body(label, text, text_stems))
    return doc


def text_stems(text: str) -> str:
    """A chunk text's part of its row's body, each stem after a space (so an empty stem, as Porter makes of "s",
    still counts); a big run computes it in its chunking worker (ingest/prefetch.py)."""
    return "".join(" " + stem for stem in analyzed(text))


def body(label: str, text: str, stems: str | None = None) -> str:
    """A row's stored body: the stems of its label, then of its text (`stems`, when analysed ahead). The same as
    analysing f"{label}\n{text}" whole: the words analyser splits at the newline and treats each word alone."""
    text_part = text_stems(text) if stems is None else stems
    label_part = _label_stems(label)
    return text_part[1:] if label_part is None else label_part + text_part


@functools.lru_cache(maxsize=4096)
def _label_stems(label: str) -> str | None:
    """A label's stems (None: no word; "" is one word Porter stems to nothing, as "s"): the chunks of a section
    share their label (5 % of a large run's main process was analysing the same labels again)."""
    words = analyzed(label)
    return " ".join(words) if words else None


def _every_row(searcher: tantivy.Searcher) -> list[tuple[int, tantivy.Document]]:
    """Every live row, with the ordinal of the segment holding it."""
    hits = searcher.search(tantivy.Query.all_query(), max(searcher.num_docs, 1)).hits
    return [(address.segment_ord, searcher.doc(address)) for _, address in hits]


def _copy(stored: tantivy.Document) -> tantivy.Document:
    """A new row equal to a stored one (its body is stored as stems, which the whitespace tokenizer reads back)."""
    doc = _row(str(stored.get_first("id") or ""))
    for name in ("label", "digest", "body"):
        doc.add_text(name, str(stored.get_first(name) or ""))
    return doc


def row_digest(label: str, text: str) -> str:
    """What a keyword row was made from, as `verify` compares it with the collection's label and text."""
    return hashlib.sha256(f"{label}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def question_words(question: str) -> list[str]:
    """The question's distinct words, lower-cased, stop words dropped."""
    return [t for t in dict.fromkeys(w.lower() for w in _WORD.findall(question)) if t not in STOP_WORDS]


def keyword_path(location: StoreLocation, collection: str) -> Path:
    """Where the keyword index of a physical collection lives (a local folder, also for a Chroma server)."""
    if location.host:
        scope = "" if location.tenant == "default_tenant" and location.database == "default_database" else \
            f"-{location.tenant}-{location.database}"
        return location.path / f"keyword-{location.host}-{location.port}{scope}-{collection}.v{SCHEMA_VERSION}.tantivy"
    return location.path / f"keyword-{collection}.v{SCHEMA_VERSION}.tantivy"


def _other_versions(path: Path) -> list[Path]:
    """Keyword indexes of the same collection made by other docvec versions (0.1's was an SQLite file)."""
    stem = path.name.rsplit(".v", 1)[0]
    return [p for p in path.parent.glob(f"{stem}.*") if p.name != path.name and p.name.split(".")[-1] in
            ("tantivy", "sqlite3") and p.name[len(stem):].count(".") <= 2]


def remove_keyword_index(location: StoreLocation, collection: str) -> None:
    """Delete a physical collection's keyword index, of this docvec version and any other."""
    path = keyword_path(location, collection)
    for p in [path, *_other_versions(path)]:
        _remove(p)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _rows(store: Store, ids: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    """(id, label, text) of the given chunks, read a page at a time (a first build reads every chunk)."""
    for begin in range(0, len(ids), PAGE):
        docs = store.get_documents(ids[begin:begin + PAGE])
        yield from ((rid, str(docs[rid][1].get("label", "")), docs[rid][0]) for rid in ids[begin:begin + PAGE]
                    if rid in docs)


def keyword_differences(store: Store, index: KeywordIndex) -> tuple[list[str], list[str]]:
    """(ids the keyword index lacks or has outdated, ids it has that the collection does not)."""
    wanted = {(rid, str(meta.get("label", ""))) for rid, meta in store.iter_metadata()}
    have = index.entries()
    return sorted({rid for rid, _ in wanted - have}), sorted({rid for rid, _ in have - wanted})


def sync_keyword_index(store: Store, index: KeywordIndex, force: bool = False, reader: bool = False,
                       changes: KeywordChanges | None = None) -> int:
    """Make the keyword index hold exactly the collection's chunks, with no deleted row left in its statistics;
    returns the rows changed.

    The collection's generation says whether the keyword index is behind. While a writer's mark is set (a run is
    writing, or one died mid-run) the generation does not tell: a writer then always compares row by row, and a
    reader (`reader=True`) keeps the index it has, which the next completed run brings in line. A run whose
    `changes` were passed on window by window from the generation the index reflects only records the new
    generation (no comparison of every row: the cost of a watch-mode sync at 100k chunks)."""
    if not reader:
        # Another version's index of this collection is never opened again. A query may have built this one
        # already, so a writer removes the others whatever state it finds this one in.
        for p in _other_versions(index.path):
            _remove(p)
    changed = _bring_in_line(store, index, force, reader, changes)
    if reader and not changed:
        return 0  # a query reads meta.json no more than it did
    try:
        index.settle(store, wait=not reader)
    except LockHeld:
        if not reader:
            raise
    return changed


def _replace_rows(store: Store, index: KeywordIndex, ids: list[str], generation: str, reader: bool,
                  rows: Iterable[tuple[str, str, str]] | None = None,
                  stems: MutableMapping[str, str] | None = None) -> int:
    """Delete the rows of `ids` and add them again as the collection holds them now (those it still holds), or
    add `rows` (with `stems` analysed ahead); returns the rows deleted or added."""
    try:
        added = index.apply(_rows(store, ids) if rows is None else rows, ids, {"generation": generation},
                            wait=not reader, stems=stems)
    except LockHeld:
        if reader:  # a writer is catching the index up right now: answer from what it holds
            return 0
        raise
    return max(added, len(ids))


def _every_chunk(store: Store, ahead: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(id, label, text) of every chunk, in one read of the collection. Once ANALYSE_AHEAD_FROM rows are read, a
    second process analyses each page's texts while this one reads the next page and indexes the last, and their
    stems are put in `ahead` by id before the page's rows are handed on (analysis was 45 % of a first build, the
    reads 35 %; a second core did neither). A worker that dies leaves its pages to this process."""
    rows = ((rid, str(meta.get("label", "")), text) for rid, text, meta in store.iter_documents())
    pool: concurrent.futures.ProcessPoolExecutor | None = None
    pending: deque[tuple[list[tuple[str, str, str]], concurrent.futures.Future[list[str]] | None]] = deque()
    read = 0
    try:
        while page := list(itertools.islice(rows, PAGE)):
            if pool is None and read >= ANALYSE_AHEAD_FROM:
                pool = concurrent.futures.ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"), initializer=_analysis_worker)
            read += len(page)
            pending.append((page, _submitted(pool, [text for _, _, text in page])))
            while pending and (pool is None or len(pending) > 2):
                yield from _handed_on(*pending.popleft(), ahead)
        while pending:
            yield from _handed_on(*pending.popleft(), ahead)
    finally:
        if pool is not None:  # no join: a generator closed early may be finalised anywhere
            pool.shutdown(wait=False, cancel_futures=True)


def _submitted(pool: concurrent.futures.ProcessPoolExecutor | None,
               texts: list[str]) -> concurrent.futures.Future[list[str]] | None:
    if pool is None:
        return None
    try:
        return pool.submit(_texts_stems, texts)
    except concurrent.futures.process.BrokenProcessPool:
        return None


def _handed_on(page: list[tuple[str, str, str]], future: concurrent.futures.Future[list[str]] | None,
               ahead: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    if future is not None:
        with contextlib.suppress(concurrent.futures.process.BrokenProcessPool, OSError):
            ahead.update(zip((rid for rid, _, _ in page), future.result()))
    yield from page


def _analysis_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the build in the main process


def _texts_stems(texts: list[str]) -> list[str]:
    """Each text's part of its row's body (run in the analysis worker)."""
    return [text_stems(text) for text in texts]


def _bring_in_line(store: Store, index: KeywordIndex, force: bool, reader: bool,
                   changes: KeywordChanges | None) -> int:
    meta = store.collection_metadata()
    generation = str(meta.get(GENERATION_KEY, 0))
    recorded = index.get_state("generation")
    if (changes is not None and changes.since is not None and not force and WRITING_KEY not in meta
            and recorded == changes.since != generation):
        changes.finish(generation)
        return changes.rows
    if changes is not None:
        changes.close()  # its writer is needed below
    current = recorded == generation
    if WRITING_KEY in meta and recorded is not None:
        if reader:
            return 0
        current = False
    if current and not force:
        return 0
    if not force and WRITING_KEY not in meta and recorded is not None and recorded.isdigit() and generation.isdigit():
        touched = store.touched_between(int(recorded), int(generation))
        if touched is not None:  # a server's journal covers every sync since: re-read only what they touched
            return _replace_rows(store, index, sorted(touched), generation, reader)
    if not index.row_count():  # a first build (a new client of a server): one read of every record, no comparison
        ahead: dict[str, str] = {}
        return _replace_rows(store, index, [], generation, reader, _every_chunk(store, ahead), ahead)
    missing, extra = keyword_differences(store, index)
    stale = sorted(set(extra) | set(missing))  # an outdated row is replaced: delete, then add
    try:
        added = index.apply(_rows(store, missing), stale, {"generation": generation}, wait=not reader)
    except LockHeld:
        if reader:  # a writer is catching the index up right now: answer from what it holds
            return 0
        raise
    return len(extra) + added
