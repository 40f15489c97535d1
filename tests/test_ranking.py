"""Ranking people can trust: an order independent of -k, one score, duplicates folded, per-file caps, pointed spans."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any
from unittest.mock import patch

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docvec.chunker import ChunkParams
from docvec.cli import cli
from docvec.fingerprint import Fingerprint
from docvec.keyword import KeywordIndex
from docvec.recordfile import RecordFile
from docvec.store import Hnsw, Store, StoreLocation
from docvec.ingest.pipeline import ingest, open_for_writing
from docvec.ingest.scan import ScanOptions
from docvec.query.hits import Fusion, Hit
from docvec.query import search as search_module
from docvec.query.search import search
from docvec.query.spans import grow, line_of, units
from tests.conftest import SAMPLE_DOCS, RecordingEmbedder

PARAMS = ChunkParams(max_tokens=64, min_tokens=8, overlap_tokens=0)  # small chunks: many candidates, many ties
WORDS = sorted({w.lower() for p in SAMPLE_DOCS.rglob("*.md") for w in re.findall(r"[A-Za-z]{3,}", p.read_text())})


def _index(root: Path, docs: Path, embedder: RecordingEmbedder) -> Store:
    store = open_for_writing(StoreLocation(root, "rank"), Fingerprint.build(embedder.info, PARAMS))
    ingest(store, embedder, ScanOptions(docs), PARAMS)
    return store


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6), n=st.integers(1, 8),
       extra=st.integers(1, 60), mode=st.sampled_from(["vector", "keyword", "hybrid", "rrf"]),
       first_depth=st.sampled_from([0, 1, 3]), per_file=st.sampled_from([0, 1, 2]),
       penalty=st.sampled_from([0.0, 0.05, 0.3]), min_score=st.sampled_from([-1.0, 0.1, 0.3]))
def test_top_n_is_the_first_n_of_any_longer_list(tmp_path_factory: object, words: list[str], n: int, extra: int,
                                                  mode: str, first_depth: int, per_file: int, penalty: float,
                                                  min_score: float) -> None:
    store, index, embedder = _shared_index(tmp_path_factory)
    fusion = Fusion(method="rrf" if mode == "rrf" else "score", candidates=first_depth, file_penalty=penalty)
    mode = "hybrid" if mode == "rrf" else mode
    question = " ".join(words)

    def hits(k: int, how: Fusion = fusion) -> list[tuple[str, float, tuple[str, ...]]]:
        return [(h.id, round(h.score, 9), tuple(a.id for a in h.also))
                for h in search(store, embedder, question, k, min_score, None, mode, index, how, None, per_file)]
    assert [h[0] for h in hits(n)] == [h[0] for h in hits(n + extra)[:n]]
    if fusion.method == "score":  # and it is the order of scoring every chunk (a read deeper than the index,
        # every candidate looked up): the same hits, scores and copies folded into them
        assert hits(n) == hits(n, Fusion(candidates=100_000, file_penalty=penalty))
        for first in (1, 3):  # candidates looked up a few at a time, only as far as they could place:
            with patch.object(search_module, "LOOK_UP_FIRST", first):  # as if every one was looked up
                lazy = hits(n)
            with patch.object(search_module, "_upper", lambda read, score, known: lambda c: math.inf):
                assert lazy == hits(n)


_SHARED: dict[str, object] = {}


def _shared_index(factory: object) -> tuple[Store, KeywordIndex, RecordingEmbedder]:
    """One real index for all examples (built once: an index per example would take minutes)."""
    if not _SHARED:
        root = factory.mktemp("ranked")  # type: ignore[attr-defined]
        embedder = RecordingEmbedder()
        store = _index(root / "idx", SAMPLE_DOCS, embedder)
        _SHARED.update(store=store, embedder=embedder, index=KeywordIndex.of(store))
    return _SHARED["store"], _SHARED["index"], _SHARED["embedder"]  # type: ignore[return-value]


def test_identical_passages_are_one_hit_listing_the_other_places(tmp_path: Path, recorder: RecordingEmbedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    note = "Restart the sync daemon after changing the replication factor, then wait for the green light."
    (docs / "a.md").write_text(f"# Ops\n\n## First\n\n{note}\n\n## Second\n\n{note}\n")
    (docs / "b.md").write_text(f"# Other\n\n{note}\n\n## Unrelated\n\nBilling runs monthly on the first day.\n")
    store = _index(tmp_path / "idx", docs, recorder)
    with KeywordIndex.of(store) as index:
        hits = search(store, recorder, "restart sync daemon replication", 5, mode="hybrid", keyword=index)
    same = [h for h in hits if note in h.text]
    assert len(same) == 1 and len(same[0].also) == 2
    places = {(same[0].source, same[0].start_line)} | {(a.source, a.start_line) for a in same[0].also}
    assert places == {("a.md", 1), ("a.md", 7), ("b.md", 1)}  # where each chunk starts
    for place in same[0].also:  # located as a hit is: its chunk, lines and characters
        text = (docs / place.source).read_text()
        assert note in text[place.start_char:place.end_char] and place.id and place.id != same[0].id
        assert text[:place.start_char].count("\n") + 1 == place.start_line
    assert same[0].as_dict()["also"][0].keys() >= {"id", "source", "line", "end_line", "start_char", "end_char"}


def test_copies_are_folded_from_their_places_and_only_the_hits_shown_are_read_whole(
        tmp_path: Path, recorder: RecordingEmbedder) -> None:
    """Folding a beam of identical copies read every copy's whole record (~15 keys, lists among them); it now
    reads each candidate's text and PLACE_KEYS, and the hits shown whole: their metadata is the stored one."""
    docs = tmp_path / "docs"
    page = "---\ntags: [ops, keys]\n---\n# Runbook\n\nRotate the signing keys every ninety days at once.\n"
    for n in range(24):
        (docs / f"team{n % 3}").mkdir(parents=True, exist_ok=True)
        (docs / f"team{n % 3}" / f"copy{n:02}.md").write_text(page)
    (docs / "other.md").write_text("# Billing\n\nInvoices go out on the first day of the month.\n")
    store = _index(tmp_path / "idx", docs, recorder)
    stored = store.get_documents([rid for rid, _ in store.iter_metadata()])
    reads: list[tuple[int, object]] = []
    documents = RecordFile.documents

    def counted(self: RecordFile, ids: Any, keys: Any = None) -> Any:
        reads.append((len(ids), keys))
        return documents(self, ids, keys)
    with patch.object(RecordFile, "documents", counted):
        hits = search(store, recorder, "rotate signing keys", 2)
    assert [len(h.also) for h in hits] == [23, 0]
    assert all(h.metadata == stored[h.id][1] for h in hits) and hits[0].metadata["fm.tags"] == ["ops", "keys"]
    assert sum(n for n, keys in reads if keys is None) == 2  # the hits shown
    assert sum(n for n, keys in reads if keys == search_module.PLACE_KEYS) == 25  # every candidate, placed


def test_of_copies_that_rank_alike_the_first_in_path_then_reading_order_is_shown(
        tmp_path: Path, recorder: RecordingEmbedder) -> None:
    """Identical files score alike: which one was shown was the tie-break of chunk ids (a hash)."""
    docs = tmp_path / "docs"
    (docs / "team").mkdir(parents=True)
    page = "# Runbook\n\nRotate the signing keys every ninety days and revoke the old ones at once.\n"
    for name in ("zeta.md", "team/alpha.md", "mid.md", "beta.md"):
        (docs / name).write_text(page)
    store = _index(tmp_path / "idx", docs, recorder)
    with KeywordIndex.of(store) as index:
        for mode in ("vector", "keyword", "hybrid"):
            (hit,) = search(store, recorder, "rotate signing keys", 1, mode=mode, keyword=index)
            assert hit.source == "beta.md" and [a.source for a in hit.also] == ["mid.md", "team/alpha.md",
                                                                                 "zeta.md"], mode


def _crowded(tmp_path: Path, recorder: RecordingEmbedder) -> Store:
    """An index where one long file's eight similar sections outrank a short file on the same subject."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text("# Cache\n\n" + "\n\n".join(
        f"## Part {i}\n\nThe cache eviction policy part {i} keeps hot keys in memory." for i in range(8)))
    (docs / "short.md").write_text("# Memory\n\nThe cache eviction policy drops cold keys first.\n")
    return _index(tmp_path / "idx", docs, recorder)


def test_per_file_caps_hits_from_one_file(tmp_path: Path, recorder: RecordingEmbedder) -> None:
    store = _crowded(tmp_path, recorder)
    with KeywordIndex.of(store) as index:
        capped = search(store, recorder, "cache eviction policy", 4, mode="hybrid", keyword=index, per_file=2)
        free = search(store, recorder, "cache eviction policy", 4, mode="hybrid", keyword=index)
    assert [h.source for h in capped].count("long.md") == 2 and "short.md" in {h.source for h in capped}
    assert [h.source for h in free].count("long.md") >= 3


def test_file_penalty_lowers_each_later_hit_of_a_file_by_the_hits_above_it(tmp_path: Path,
                                                                           recorder: RecordingEmbedder) -> None:
    store = _crowded(tmp_path, recorder)
    question = "cache eviction policy part hot keys"
    with KeywordIndex.of(store) as index:
        raw = search(store, recorder, question, 20, -1.0, mode="hybrid", keyword=index, fusion=Fusion(file_penalty=0))
        lowered = search(store, recorder, question, 5, -1.0, mode="hybrid", keyword=index,
                         fusion=Fusion(file_penalty=0.35))
    unlowered = {h.id: h.score for h in raw}
    assert [h.source for h in raw[:5]].count("long.md") == 5  # one long file fills the list
    assert "short.md" in [h.source for h in lowered[:2]]
    for n, hit in enumerate(lowered):
        above = [h.source for h in lowered[:n]].count(hit.source)
        assert hit.penalty == 0.35 * above and abs(hit.score - (unlowered[hit.id] - hit.penalty)) < 1e-9
    assert [h.score for h in lowered] == sorted((h.score for h in lowered), reverse=True)  # the shown score orders


@given(st.text(alphabet=st.sampled_from(list("ab .!?\n#`-|:Z1")), max_size=300))
def test_units_are_disjoint_ordered_non_blank_slices(text: str) -> None:
    spans = units(text)
    assert all(0 <= u.start < u.end <= len(text) and text[u.start:u.end].strip() for u in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=30), st.data())
def test_span_holds_the_best_unit_stays_in_its_paragraph_and_is_short(scores: list[float],
                                                                     data: st.DataObject) -> None:
    from docvec.query.spans import MAX_PARAGRAPH_CHARS, MAX_SPAN_CHARS, Unit
    lengths = data.draw(st.lists(st.integers(1, 500), min_size=len(scores), max_size=len(scores)))
    breaks = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    spans, at, paragraph = [], 0, 0
    for size, new in zip(lengths, breaks):
        paragraph += new
        spans.append(Unit(at, at + size, paragraph))
        at += size + 1
    first, last = grow(scores, spans)
    assert first <= scores.index(max(scores)) <= last
    assert spans[first].paragraph == spans[last].paragraph
    assert first == last or spans[last].end - spans[first].start <= max(MAX_PARAGRAPH_CHARS, MAX_SPAN_CHARS)


def test_line_of_counts_a_repeated_fence_line_out() -> None:
    text = "```python\nb = 2\nc = 3\n```"  # a split code block's second piece: its fence line is repeated
    hit = Hit(1, 1.0, "x", "", "f.md", 10, 12, text, {})
    assert line_of(hit, text.index("b = 2")) == 10 and line_of(hit, text.index("c = 3")) == 11


def test_query_json_has_one_score_and_points_at_the_answer(project: Path) -> None:
    runner = CliRunner()
    config = str(project / "config.yaml")
    assert runner.invoke(cli, ["ingest", "--config", config, "-q"]).exit_code == 0
    result = runner.invoke(cli, ["query", "--config", config, "--json", "-k", "3",
                                 "How long do you keep retrying a webhook delivery that fails?"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.splitlines()]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(0 <= h["score"] <= 1 and -1 <= h["similarity"] <= 1 and h["keyword_score"] >= 0 for h in hits)
    top = hits[0]
    assert top["source"] == "guides/webhooks.md"
    first, last = top["answer_lines"]
    assert top["line"] <= first <= last <= top["end_line"]
    start, end = top["answer_span"]
    assert "three days" in top["text"][start:end]  # the sentence that answers, not the whole section
    assert end - start < len(top["text"])
    lines = (SAMPLE_DOCS / "guides" / "webhooks.md").read_text().splitlines()[first - 1:last]
    assert "three days" in "\n".join(lines)
    shown = runner.invoke(cli, ["query", "--config", config, "-k", "1", "--explain",
                                "How long do you keep retrying a webhook delivery that fails?"])
    assert f"guides/webhooks.md:{first}" in shown.output and "similarity" in shown.output
    assert f"{top['score']:.3f}" in shown.output  # the printed number is the one that orders the list


def test_the_order_does_not_depend_on_k_when_the_vector_index_misses_chunks(tmp_path: Path,
                                                                             recorder: RecordingEmbedder) -> None:
    """HNSW is approximate: a deeper read (a wider beam, more keyword candidates) can find a chunk that beats a
    hit the first read certified. -k 1 to 10 make the same reads, so their lists are prefixes of each other
    however much the index misses (in CI a -k 3 read deeper than -k 1 and put a missed chunk second); and whether
    a keyword-only candidate's cosine is looked up never depends on -k. A sparse graph makes misses common."""
    location = StoreLocation(tmp_path / "idx", "sparse", hnsw=Hnsw(ef_search=1, ef_construction=2, max_neighbors=2))
    store = open_for_writing(location, Fingerprint.build(recorder.info, PARAMS))
    ingest(store, recorder, ScanOptions(SAMPLE_DOCS), PARAMS)
    changed = []
    with KeywordIndex.of(store) as index:
        for i in range(0, len(WORDS) - 3, 5):
            question = " ".join(WORDS[i:i + 3])
            for mode in ("hybrid", "vector"):
                lists = [[h.id for h in search(store, recorder, question, k, mode=mode, keyword=index,
                                               fusion=Fusion(candidates=20))] for k in (1, 2, 3, 5, 10)]
                changed += [(mode, question) for shorter in lists if shorter != lists[-1][: len(shorter)]]
    assert not changed


def _sparse(tmp_path: Path, recorder: RecordingEmbedder) -> Store:
    """~1,000 small chunks of random words behind a sparse HNSW graph with a beam of 60: misses are common."""
    location = StoreLocation(tmp_path / "idx", "sparse", hnsw=Hnsw(ef_search=60, ef_construction=2,
                                                                   max_neighbors=2))
    docs = tmp_path / "docs"  # far more chunks than Chroma's beam of 100
    docs.mkdir()
    rng = random.Random(7)
    for n in range(40):
        (docs / f"f{n}.md").write_text("\n\n".join(f"## {rng.choice(WORDS)}\n\n" + " ".join(rng.choices(WORDS, k=12))
                                                   for _ in range(25)))
    tiny = ChunkParams(max_tokens=24, min_tokens=0, overlap_tokens=0)
    store = open_for_writing(location, Fingerprint.build(recorder.info, tiny))
    ingest(store, recorder, ScanOptions(docs), tiny)
    return store


def test_candidates_looked_up_lazily_give_the_hits_of_looking_all_up(tmp_path: Path,
                                                                      recorder: RecordingEmbedder) -> None:
    """Hybrid search looks a candidate's missing half up only while its best possible score could still place
    it; the hits, their scores and the copies folded into them are those of looking every candidate up."""
    store = _sparse(tmp_path, recorder)
    differ, lazy_reads = [], 0
    with KeywordIndex.of(store) as index:
        for i in range(0, len(WORDS) - 3, 11):
            question = " ".join(WORDS[i:i + 3])
            for k, min_score, penalty in ((1, -1.0, 0.05), (5, 0.1, 0.0), (10, -1.0, 0.3), (30, 0.2, 0.05)):
                def hits() -> list[tuple[str, float, tuple[str, ...]]]:
                    return [(h.id, round(h.score, 9), tuple(a.id for a in h.also)) for h in search(
                        store, recorder, question, k, min_score, None, "hybrid", index, Fusion(file_penalty=penalty))]
                with patch.object(search_module, "LOOK_UP_FIRST", 2):
                    lazy = hits()
                with patch.object(search_module, "_upper", lambda read, score, known: lambda c: math.inf):
                    every = hits()
                differ += [(question, k)] if lazy != every else []
                lazy_reads += bool(lazy)
    assert lazy_reads > 20 and not differ


def test_vector_lists_share_one_beam_whatever_k(tmp_path: Path, recorder: RecordingEmbedder) -> None:
    """HNSW explores max(ef_search, depth) candidates, so a read deeper than ef_search is a wider beam: it found
    chunks the shallower reads of smaller -k missed and reordered their hits (a -k 60 read 800 deep in CI put a
    chunk first that -k 1 and -k 5 never saw). Every -k up to ef_search now reads within one beam."""
    store = _sparse(tmp_path, recorder)
    changed, missed = [], 0
    with KeywordIndex.of(store) as index:
        for i in range(0, len(WORDS) - 3, 7):
            question = " ".join(WORDS[i:i + 3])
            for mode in ("vector", "hybrid"):
                found = [search(store, recorder, question, k, mode=mode, keyword=index) for k in (1, 5, 10, 30, 60)]
                lists = [[h.id for h in hits] for hits in found]
                changed += [(mode, question) for shorter in lists if shorter != lists[-1][: len(shorter)]]
                missed += sum(h.counted_similarity is not None for h in found[-1])
    assert store.count() > 500 and not changed
    assert missed  # the beam missed chunks the keyword side found; they count as its last similarity


def test_the_file_penalty_reorders_and_never_removes_a_hit_k_asked_for(tmp_path: Path,
                                                                       recorder: RecordingEmbedder) -> None:
    """min_score filters on relevance before the penalty: -k larger than the index returns every chunk whose
    relevance passes, however many of them one file holds (it returned about 20 of 100 asked)."""
    store = _crowded(tmp_path, recorder)
    with KeywordIndex.of(store) as index:
        free = search(store, recorder, "cache eviction policy", 100, 0.0, mode="hybrid", keyword=index,
                      fusion=Fusion(file_penalty=0))
        lowered = search(store, recorder, "cache eviction policy", 100, 0.0, mode="hybrid", keyword=index,
                         fusion=Fusion(file_penalty=0.3))
    assert len(lowered) == len(free) == 9 and {h.id for h in lowered} == {h.id for h in free}
    assert min(h.score for h in lowered) < 0.0  # shown after the penalty, kept: its relevance passed
