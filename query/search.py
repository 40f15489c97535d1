"""Answer a question from the index: vector, keyword or hybrid ranking, in an order that depends on the question
and the index only.

Every mode orders chunks by one number, a fixed function of the chunk's cosine similarity and bm25 score (see
`Fusion`), never of how many candidates were read: the rankings are read `candidates` deep, and deeper (×4 each
time) until every hit returned provably beats every chunk not yet read (Fagin's threshold rule). So the top n of
`-k n` is the first n of `-k m` for any m > n.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from docvec.embedders import Embedder, Vectors
from docvec.errors import ConfigError, InvalidValue
from docvec.keyword import KeywordIndex
from docvec.query.hits import Fusion, Hit, Location, where_keys
from docvec.query.limits import FUSIONS, MAX_K, MAX_QUERY_CHARS, MODES
from docvec.store import Metadata, QueryResult, Store
from docvec.text import valid_text

_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")
FIRST_DEPTH = 50  # candidates read from each ranking at first; most questions need no deeper read
# Every -k up to this makes the same reads: HNSW is approximate, so a deeper read (a wider beam, more keyword
# candidates) can find a chunk that beats a hit the first read certified; with one read plan for -k 1 to 10 their
# lists are prefixes of each other whatever the vector index misses (a -k 3 read deeper than -k 1 in CI and put a
# missed chunk second).
SAME_READS_UP_TO = 10
LOOK_UP_FIRST = 4 * SAME_READS_UP_TO  # candidates looked up at first, the best first; then 4 times as many
# What ranks and folds a candidate the walk reaches (_place, _location) besides its text; only the hits shown are
# read whole. Half the cost of a record's ~15 keys: at 1M chunks folding a beam of ~100 identical copies read
# 100-300 records a question.
PLACE_KEYS = ("source", "start_line", "end_line", "label", "start_char", "end_char")


@dataclass
class _Candidate:
    similarity: float | None = None  # None: not looked up (yet); what the score counts
    keyword_score: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None
    score: float = 0.0
    document: str | None = None
    metadata: Metadata = field(default_factory=dict)
    missed: float | None = None  # the exact cosine of a chunk the HNSW beam missed (counted as the beam's last)


@dataclass
class _Read:
    """What has been read of both rankings so far."""

    pool: dict[str, _Candidate]
    vector_bound: float | None  # no unread chunk is more similar than this (None: nothing left unread)
    keyword_bound: float | None  # no unread chunk has a higher bm25 than this (None: no unread chunk matches)
    best_keyword: float  # the best bm25 of any chunk in the index for this question: the keyword side's scale
    everything: bool = False  # the vector side returned every chunk (that passes the filter)
    vector_capped: bool = False  # the vector side returned its whole beam: it reads no deeper (_Known.beam)


@dataclass
class _Texts:
    """Texts and metadata read by id during one search: each candidate the walk reached with its PLACE_KEYS,
    and the hits shown with every key."""

    placed: dict[str, tuple[str, Metadata]] = field(default_factory=dict)
    whole: dict[str, Metadata] = field(default_factory=dict)


@dataclass
class _Known:
    """Exact scores and texts looked up during one search, so a deeper read does not look them up again."""

    bm25: dict[str, float] = field(default_factory=dict)
    cosine: dict[str, float] = field(default_factory=dict)
    texts: _Texts = field(default_factory=_Texts)
    beam: int = 0  # the deepest vector read: the index's ef_search, or -k when more is asked
    whole: list[QueryResult] | None = None  # hybrid scores: the vector side's whole beam, read once
    in_beam: dict[str, tuple[int, float]] = field(default_factory=dict)  # the same by id: rank, cosine

    @property
    def beam_last(self) -> float | None:
        """The whole beam's last similarity (None: not read, or empty)."""
        return self.whole[-1].similarity if self.whole else None


@dataclass(frozen=True)
class Query:
    """What to look for and how many; `per_file` caps hits per source file (0: no cap)."""

    question: str
    top_k: int
    mode: str = "vector"
    where: Mapping[str, Any] | None = None
    min_score: float = -math.inf
    per_file: int = 0
    fusion: Fusion = Fusion()


def search(store: Store, embedder: Embedder | None, question: str, top_k: int, min_score: float = -1.0,
           where: Mapping[str, Any] | None = None, mode: str = "vector", keyword: KeywordIndex | None = None,
           fusion: Fusion = Fusion(), vector: Vectors | None = None, per_file: int = 0) -> list[Hit]:
    """The top_k chunks for the question, ranked by `mode`; hits scoring below min_score are dropped.

    `vector` is the question's embedding when the caller already has it (the CLI computes it while the index
    opens). `embedder` may be None in keyword mode only (the model is unavailable): similarities are then None."""
    _check_numbers(top_k, min_score, per_file)
    q = Query(_check_question(question), max(top_k, SAME_READS_UP_TO), mode, where, min_score, per_file, fusion)
    if mode not in MODES:
        raise InvalidValue(f"query mode '{mode}' is unknown; expected one of {', '.join(MODES)}")
    if fusion.method not in FUSIONS:
        raise ConfigError(f"fusion '{fusion.method}' is unknown; expected one of {', '.join(FUSIONS)}")
    if mode != "vector" and keyword is None:
        raise ConfigError(f"query mode '{mode}' needs the keyword index")
    if embedder is None and vector is None and mode != "keyword":
        raise ConfigError(f"query mode '{mode}' needs the embedding model")
    if vector is None and embedder is not None:
        vector = embedder.embed_query(q.question)
    qvec = None if vector is None else np.asarray(vector, dtype=np.float32)
    if mode == "hybrid" and fusion.method == "rrf":
        return _rrf(store, keyword, qvec, q)[:top_k]
    depth = max(fusion.candidates or FIRST_DEPTH, 1)
    known = _known(store, q)  # what was looked up, kept across deeper reads
    while True:
        read = _read(store, keyword, qvec, q, depth, known)
        score = _scorer(q, read)
        vector_done = read.vector_bound is None or read.vector_capped
        complete = read.everything or (vector_done and read.keyword_bound is None)
        bound = -math.inf if complete else score(read.vector_bound, read.keyword_bound or 0.0)
        if bound < q.min_score:
            complete, bound = True, -math.inf  # nothing unread can pass min_score
        hits = _certified(store, keyword, qvec, q, read, score, bound, known)
        if len(hits) >= q.top_k or complete:
            if not hits and where:
                check_where_keys(store, where)  # an empty answer because of a mistyped key is an error
            return _shown_similarity(store, qvec, hits[:top_k], known)
        depth *= 4 if 4 * len(hits) >= q.top_k else 16  # few hits certified: duplicates or a flat ranking


def _scorer(q: Query, read: _Read) -> Callable[[float | None, float], float]:
    """The mode's score as a function of (similarity, bm25): monotone in both, so bounds carry over."""
    best_kw = read.best_keyword
    if q.mode == "vector":
        return lambda sim, kw: -1.0 if sim is None else sim
    if q.mode == "keyword":
        return lambda sim, kw: kw / best_kw if best_kw > 0 else 0.0
    wv, wk = q.fusion.vector_weight, q.fusion.keyword_weight
    total = (wv + wk) or 1.0

    def hybrid(sim: float | None, kw: float) -> float:
        return (wv * (sim if sim is not None else -1.0) + wk * (kw / best_kw if best_kw > 0 else 0.0)) / total
    return hybrid


def _known(store: Store, q: Query) -> _Known:
    """A search's memory, with the vector side's deepest read: the HNSW beam (ef_search) unless -k asks more.
    A deeper read would widen the beam, find chunks the shallower reads of smaller -k missed, and reorder their
    hits (a -k 60 read 800 deep in CI put a chunk first that -k 1 and -k 5 never saw)."""
    return _Known(beam=max(store.beam(), q.top_k) if q.mode != "keyword" else 0)


def _read(store: Store, keyword: KeywordIndex | None, qvec: np.ndarray[Any, Any] | None, q: Query,
          depth: int, known: _Known) -> _Read:
    """Both rankings read `depth` deep (the vector side at most its beam); each candidate has the score of the
    side(s) that found it."""
    pool: dict[str, _Candidate] = {}
    vector_bound = keyword_bound = None
    best_kw = 0.0
    everything = capped = False
    if q.mode != "keyword" and qvec is not None:
        n = min(depth, known.beam)
        found = _vector_read(store, qvec, q, n, known)
        for rank, r in enumerate(found, 1):
            pool[r.id] = _Candidate(r.similarity, None, rank)
        # A beam shorter than asked is every chunk, or what a sparse HNSW graph could reach: for hybrid scores,
        # which count a chunk it missed as its last similarity at most, that last is still the bound.
        vector_bound = found[-1].similarity if len(found) == n else known.beam_last
        everything = vector_bound is None
        capped = vector_bound is not None and (n == known.beam or len(found) < n)
    if q.mode != "vector" and keyword is not None:
        raw = keyword.search(q.question, depth)
        keyword_bound = raw[-1].score if len(raw) == depth else None
        best_kw = raw[0].score if raw else 0.0
        allowed = store.filter_ids([h.id for h in raw], q.where) if q.where and raw else None
        for rank, h in enumerate((h for h in raw if allowed is None or h.id in allowed), 1):
            c = pool.setdefault(h.id, _Candidate())
            c.keyword_rank, c.keyword_score = rank, h.score
            if c.vector_rank is None and h.id in known.in_beam:  # deeper in the vector side's beam than this read
                c.vector_rank, c.similarity = known.in_beam[h.id]
    if q.mode == "vector" or keyword_bound is None:  # every chunk with one of the words was read: the rest have 0
        for c in pool.values():
            c.keyword_score = 0.0 if c.keyword_score is None else c.keyword_score
    return _Read(pool, vector_bound, keyword_bound, best_kw, everything, capped)


def _vector_read(store: Store, qvec: np.ndarray[Any, Any], q: Query, n: int, known: _Known) -> list[QueryResult]:
    """The vector ranking's first n (n at most the beam). Hybrid scores read the whole beam once and take its
    first n: whether a chunk is in the beam, and the beam's last similarity, decide what a chunk the keyword side
    found counts as (_settle_beam); Chroma reads the whole beam for any n anyway (~1 ms more to return it)."""
    if q.mode != "hybrid" or q.fusion.method != "score":  # each read of a search goes deeper than the last
        return store.query(qvec.tolist(), n, q.where, with_text=False)
    if known.whole is None:  # a keyword side going deeper takes more of the same beam
        known.whole = store.query(qvec.tolist(), known.beam, q.where, with_text=False)
        known.in_beam = {r.id: (rank, r.similarity) for rank, r in enumerate(known.whole, 1)}
    return known.whole[:n]


def _certified(store: Store, keyword: KeywordIndex | None, qvec: np.ndarray[Any, Any] | None, q: Query,
               read: _Read, score: Callable[[float | None, float], float], bound: float,
               known: _Known) -> list[Hit]:
    """The hits that beat `bound` (the best any unread chunk could score), best first. A candidate missing half
    its score (the bm25 of a chunk only the vector side read, the cosine of one only the keyword side read) is
    looked up only when its best possible score could still place it: best first, in growing batches, until the
    hits found beat the best score any candidate not yet looked up could reach. The hits are those of looking
    every candidate up (a candidate left out scores below every hit kept, so it is neither a hit nor a copy folded
    into one), for any -k; at 1M chunks the keyword side reads 800 deep and looking all up cost ~25 ms."""
    pool = read.pool
    pending = _pending(pool, q, qvec, known)
    _settle_beam(pool, known)  # what an earlier read looked up counts as this beam allows, like the rest
    upper = _upper(read, score, known)
    for rid in [rid for rid in pending if upper(pool[rid]) <= bound or upper(pool[rid]) < q.min_score]:
        del pool[rid]  # cannot beat the bound (a deeper read brings it back if it must) or pass min_score
    pending = sorted((rid for rid in pending if rid in pool), key=lambda rid: (-upper(pool[rid]), rid))
    waiting = set(pending)
    ready = {rid: c for rid, c in pool.items() if rid not in waiting}
    fresh = ready  # scored once each: at first every candidate not waiting, then each batch looked up
    size = LOOK_UP_FIRST
    while True:
        for c in fresh.values():
            c.score = score(c.similarity, c.keyword_score or 0.0)
        edge = max(bound, upper(pool[pending[0]])) if pending else bound
        hits = _select(store, ready, q, edge, known.texts, q.fusion.file_penalty)
        if len(hits) >= q.top_k or not pending:
            return hits
        batch, pending = pending[:size], pending[size:]
        _look_up(store, keyword, qvec if q.mode != "keyword" else None, q, pool, batch, known)
        _settle_beam(pool, known)  # caps the batch's misses; the ready ones were capped before
        fresh = {rid: pool[rid] for rid in batch if rid in pool}  # _look_up drops a chunk that vanished
        ready.update(fresh)
        size *= 4


def _pending(pool: dict[str, _Candidate], q: Query, qvec: np.ndarray[Any, Any] | None,
             known: _Known) -> list[str]:
    """The candidates missing half their score once what this search already looked up is filled in."""
    for rid, c in pool.items():  # looked up by an earlier read of this search
        c.similarity = known.cosine.get(rid) if c.similarity is None else c.similarity
        c.keyword_score = known.bm25.get(rid) if c.keyword_score is None else c.keyword_score
    # Keyword scores do not count the cosine: it is looked up for the hits shown only (_shown_similarity), not
    # for every candidate (800 vector reads a question at 1M chunks, where ties make the keyword side read deep).
    cosines = qvec is not None and q.mode != "keyword"
    return [rid for rid, c in pool.items() if c.keyword_score is None or (c.similarity is None and cosines)]


def _upper(read: _Read, score: Callable[[float | None, float], float],
           known: _Known) -> Callable[[_Candidate], float]:
    """A candidate's best possible score: an unknown half at most what no unread chunk exceeds. A chunk only the
    keyword side read is outside the vector side's whole beam (_read takes any in it from there), so with hybrid
    scores it counts as the beam's last similarity at most (_settle_beam)."""
    sim_cap = known.beam_last if known.beam_last is not None else read.vector_bound

    def upper(c: _Candidate) -> float:
        sim = sim_cap if c.similarity is None else c.similarity
        return score(sim, (read.keyword_bound or 0.0) if c.keyword_score is None else c.keyword_score)
    return upper


def _shown_similarity(store: Store, qvec: np.ndarray[Any, Any] | None, hits: list[Hit], known: _Known) -> list[Hit]:
    """The cosine of each hit shown that its ranking did not need (keyword mode), in one read."""
    need = [h.id for h in hits if h.similarity is None and h.id not in known.cosine]
    if qvec is not None and need:
        _cosines(store, qvec, need, known)
    return [replace(h, similarity=known.cosine.get(h.id)) if h.similarity is None else h for h in hits]


def _settle_beam(pool: dict[str, _Candidate], known: _Known) -> None:
    """A chunk only the keyword side read that is not in the vector side's whole beam but more similar than its
    last was missed by HNSW (approximate): it counts as that last similarity, which is all any read of the beam
    can assume of it, so every -k scores it alike. Counted exactly, a missed chunk came second for -k 60, which
    read it, and nowhere for -k 5, which did not."""
    last = known.beam_last
    if last is None:  # no whole beam: not hybrid scores, or an empty one
        return
    for c in pool.values():
        if c.vector_rank is None and c.similarity is not None and c.similarity > last:
            c.missed, c.similarity = c.similarity, last


def _look_up(store: Store, keyword: KeywordIndex | None, qvec: np.ndarray[Any, Any] | None, q: Query,
             pool: dict[str, _Candidate], batch: list[str], known: _Known) -> None:
    """The missing bm25 scores (0: none of the words) and cosines of a batch of candidates, one read each."""
    need = [rid for rid in batch if pool[rid].keyword_score is None]
    if need and keyword is not None:
        found = keyword.scores(q.question, need)
        for rid in need:
            pool[rid].keyword_score = known.bm25[rid] = found.get(rid, 0.0)
    need = [rid for rid in batch if pool[rid].similarity is None]
    if not need or qvec is None:
        return
    found = _cosines(store, qvec, need, known)
    for rid in need:
        if rid in found:
            pool[rid].similarity = found[rid]
        else:  # the keyword index is behind a concurrent ingest: skip the vanished chunk
            del pool[rid]


def _cosines(store: Store, qvec: np.ndarray[Any, Any], ids: list[str], known: _Known) -> dict[str, float]:
    """The cosines of the chunks of `ids` the collection still holds, in one read (kept in `known`)."""
    vectors = store.get_embeddings(ids)
    found = [rid for rid in ids if rid in vectors]
    if not found:
        return {}
    # one matrix product instead of a dot per chunk
    sims = dict(zip(found, (np.stack([vectors[rid] for rid in found]) @ qvec).tolist()))
    known.cosine.update(sims)
    return sims


def _select(store: Store, pool: dict[str, _Candidate], q: Query, bound: float,
            texts: _Texts | None = None, penalty: float = 0.0) -> list[Hit]:
    """The hits among the candidates, best first: duplicates folded, hits per file capped, and a chunk's score
    lowered by `penalty` for each hit of its file above it. Only hits whose score beats `bound` (the best any
    unread chunk could score) are certain; the walk stops at the first that does not."""
    order = sorted((kv for kv in pool.items() if kv[1].score > bound and kv[1].score >= q.min_score
                    and (q.mode != "keyword" or kv[1].keyword_rank)), key=lambda kv: (-kv[1].score, kv[0]))
    walk = _Walk(store, order, _Texts() if texts is None else texts, q.top_k + 10)
    kept: list[tuple[str, _Candidate, float]] = []
    also: dict[str, list[Location]] = {}
    by_text: dict[str, str] = {}
    per_source: dict[str, int] = {}
    for rid, c, lowered in walk.best_first(lambda c: penalty * per_source.get(_source(c), 0)):
        if c.score - lowered <= bound:
            break  # every later chunk scores no more than this one
        # (min_score filtered the candidates on relevance, before the penalty: a penalty reorders, never removes)
        source, text_key = _source(c), _text_key(c.document or "")
        if text_key in by_text:
            also[by_text[text_key]].append(_location(rid, c.metadata))
            continue
        if q.per_file and per_source.get(source, 0) >= q.per_file:
            continue
        by_text[text_key], also[rid] = rid, []
        per_source[source] = per_source.get(source, 0) + 1
        kept.append((rid, c, lowered))
        if len(kept) == q.top_k:
            break
    whole = _read_whole(store, [rid for rid, _, _ in kept], walk.texts)
    return [_hit(rank, rid, c, q, lowered, whole.get(rid, c.metadata), tuple(also[rid]))
            for rank, (rid, c, lowered) in enumerate(kept, 1)]


class _Walk:
    """Candidates in order of score minus a penalty that only grows as hits are kept (lazily re-ranked: a
    candidate whose penalty grew since it was queued goes back in the queue). Texts are read only as far as
    the walk goes, twice as many each time (duplicates)."""

    def __init__(self, store: Store, order: list[tuple[str, _Candidate]], texts: _Texts, step: int) -> None:
        self.store, self.order, self.texts = store, order, texts
        self.fetched = 0
        self.step = step

    def best_first(self, penalty: Callable[[_Candidate], float]) -> Iterator[tuple[str, _Candidate, float]]:
        # (-(score - penalty), source, start, id, position in order): identical texts score alike, and of copies
        # that rank equal the one shown is the first in path order, then in the file (README: duplicates)
        queue: list[tuple[float, str, int, str, int]] = []
        next_in = 0
        while True:
            # Queue every candidate that could beat the queue's best: its score bounds its lowered score.
            while next_in < len(self.order) and (not queue or self.order[next_in][1].score >= -queue[0][0]):
                rid, c = self._read(next_in)
                if c.document is not None:  # None: deleted by a concurrent ingest since it was ranked
                    heapq.heappush(queue, (penalty(c) - c.score, *_place(c), rid, next_in))
                next_in += 1
            if not queue:
                return
            neg, _, _, rid, at = heapq.heappop(queue)
            c = self.order[at][1]
            lowered = penalty(c)
            if lowered - c.score > neg:  # its file gained a hit since it was queued
                heapq.heappush(queue, (lowered - c.score, *_place(c), rid, at))
                continue
            yield rid, c, lowered

    def _read(self, at: int) -> tuple[str, _Candidate]:
        if at >= self.fetched:
            batch = self.order[self.fetched:self.fetched + self.step]
            _fill_documents(self.store, batch, self.texts)
            self.fetched += len(batch)
            self.step *= 2
        return self.order[at]


def _place(c: _Candidate) -> tuple[str, int]:
    return _source(c), int(c.metadata.get("start_char", 0))


def _source(c: _Candidate) -> str:
    return str(c.metadata.get("source", ""))


def _text_key(text: str) -> str:
    """Identical passages share a key: whitespace and the chunk's own heading lines aside."""
    body = [line for line in text.splitlines() if not _HEADING.match(line)]
    return hashlib.sha1(" ".join(" ".join(body).split()).encode("utf-8", "surrogatepass")).hexdigest()


def _location(rid: str, m: Metadata) -> Location:
    return Location(str(m.get("source", "")), int(m.get("start_line", 0)), int(m.get("end_line", 0)),
                    str(m.get("label", "")), rid, int(m.get("start_char", 0)), int(m.get("end_char", 0)))


def _hit(rank: int, rid: str, c: _Candidate, q: Query, penalty: float, m: Metadata,
         also: tuple[Location, ...]) -> Hit:
    return Hit(rank, c.score - penalty, rid, str(m.get("label", "")), str(m.get("source", "")),
               int(m.get("start_line", 0)), int(m.get("end_line", 0)), c.document or "", m,
               c.similarity if c.missed is None else c.missed, None if q.mode == "vector" else c.keyword_score,
               c.vector_rank, c.keyword_rank, also, None, None, penalty, None if c.missed is None else c.similarity)


def _fill_documents(store: Store, chosen: list[tuple[str, _Candidate]], texts: _Texts) -> None:
    """Text and the PLACE_KEYS of candidates the walk reaches, in one read (`texts` keeps them for a deeper
    read)."""
    missing = [rid for rid, c in chosen if c.document is None and rid not in texts.placed]
    if missing:
        found, whole = store.get_texts(missing, PLACE_KEYS)
        texts.placed.update(found)
        if whole:  # read through Chroma: every key came anyway
            texts.whole.update((rid, meta) for rid, (_, meta) in found.items())
    for rid, c in chosen:
        if rid in texts.placed:
            c.document, c.metadata = texts.placed[rid]


def _read_whole(store: Store, ids: list[str], texts: _Texts) -> dict[str, Metadata]:
    """Every key of the hits shown, in one read (a chunk deleted since it was placed keeps what was read)."""
    missing = [rid for rid in ids if rid not in texts.whole]
    if missing:
        texts.whole.update((rid, meta) for rid, (_, meta) in store.get_documents(missing).items())
    return texts.whole


def _rrf(store: Store, keyword: KeywordIndex | None, qvec: np.ndarray[Any, Any] | None, q: Query) -> list[Hit]:
    """Reciprocal-rank fusion over a fixed depth of both rankings (so the order never depends on -k)."""
    f = q.fusion
    known = _known(store, q)
    read = _read(store, keyword, qvec, q, f.candidates or 100, known)
    # Every candidate is ranked: all get both scores (shown, not used to order).
    _look_up(store, keyword, qvec, q, read.pool, _pending(read.pool, q, qvec, known), known)
    _settle_beam(read.pool, known)
    for c in read.pool.values():
        c.score = sum(w / (f.rrf_k + r) for w, r in ((f.vector_weight, c.vector_rank),
                                                    (f.keyword_weight, c.keyword_rank)) if r)
    return _select(store, read.pool, q, -math.inf)


def _check_numbers(top_k: int, min_score: float, per_file: int) -> None:
    """The numbers every entry point (CLI, HTTP, MCP, library) passes, checked once: NaN compares false with
    everything, so `min_score` NaN silently dropped every hit."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_K:
        raise InvalidValue(f"k must be a whole number in 1..{MAX_K}, got {top_k!r}")
    if isinstance(per_file, bool) or not isinstance(per_file, int) or per_file < 0:
        raise InvalidValue(f"per_file must be a whole number of 0 or more (0: no cap), got {per_file!r}")
    if not isinstance(min_score, (int, float)) or math.isnan(min_score) or min_score > 1:
        raise InvalidValue(f"min_score must be a number up to 1 (scores lie in -1..1), got {min_score!r}")


def _check_question(question: str) -> str:
    question = valid_text(question).strip()
    if not question:
        raise InvalidValue("the query is empty: pass a question, e.g. docvec query \"how do I rotate a token?\"")
    if len(question) > MAX_QUERY_CHARS:
        raise InvalidValue(f"the query is {len(question)} characters; the limit is {MAX_QUERY_CHARS}")
    return question


def check_where_keys(store: Store, clause: Mapping[str, Any] | None) -> None:
    """ConfigError naming a filter key that no chunk of the index has (with the closest existing ones)."""
    import difflib

    wanted = {k for k in where_keys(clause) if k.startswith("fm.")}
    if not wanted:
        return
    present: set[str] = set()
    for _, meta in store.iter_metadata():
        present.update(k for k in meta if k.startswith("fm."))
        if wanted <= present:
            return
    for key in sorted(wanted - present):
        names = sorted(k[3:] for k in present)
        close = difflib.get_close_matches(key[3:], names, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        shown = ", ".join(["source", *(["tag"] if "tags" in names else []), *names[:30]])
        asked, what = ("tag", "tags (a `tags:` list in front matter)") if key == "fm.tags" else \
            (key[3:], f"a front-matter key '{key[3:]}'")
        raise ConfigError(f"--where {asked}=…: no indexed file has {what}{hint} (keys: {shown})")
