"""The keyword index follows the collection; keyword and hybrid rankings use it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docvec.chunker import ChunkParams
from docvec.fingerprint import Fingerprint
from docvec.keyword import SCHEMA_VERSION, KeywordIndex, analyzed, keyword_path, sync_keyword_index
from docvec.store import Store, StoreLocation
from docvec.ingest.pipeline import ingest, open_for_writing
from docvec.ingest.scan import ScanOptions
from docvec.query.hits import Fusion
from docvec.query.search import search
from tests.conftest import RecordingEmbedder

PARAMS = ChunkParams()


def _ingest(index: Path, docs: Path, embedder: RecordingEmbedder) -> Store:
    store = open_for_writing(StoreLocation(index, "test"), Fingerprint.build(embedder.info, PARAMS))
    ingest(store, embedder, ScanOptions(docs), PARAMS)
    return store


def _keyword_ids(store: Store) -> set[str]:
    index = KeywordIndex(keyword_path(store.location, store.name))
    try:
        return {rid for rid, _ in index.entries()}
    finally:
        index.close()


def test_keyword_index_holds_exactly_the_collection(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    store = _ingest(tmp_path / "idx", docs, recorder)
    assert _keyword_ids(store) == {rid for rid, _ in store.iter_metadata()}
    (docs / "guides" / "sdks.md").unlink()
    path = docs / "guides" / "webhooks.md"
    path.write_text(path.read_text().replace("three days", "five days"))
    store = _ingest(tmp_path / "idx", docs, recorder)
    assert _keyword_ids(store) == {rid for rid, _ in store.iter_metadata()}


def test_a_sync_applies_its_own_changes_to_the_keyword_index(tmp_path: Path, docs: Path, recorder: RecordingEmbedder,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """After an ordinary run the keyword index takes the run's own adds, deletes and relabels: no comparison of
    every row (the cost of a watch-mode sync at 100k chunks), and the result is what a full comparison gives."""
    store = _ingest(tmp_path / "idx", docs, recorder)
    (docs / "guides" / "sdks.md").unlink()
    webhooks = docs / "guides" / "webhooks.md"
    webhooks.write_text(webhooks.read_text().replace("three days", "five days"))
    versioning = docs / "reference" / "versioning.md"  # a new title relabels chunks whose text stays
    versioning.write_text(versioning.read_text().replace("title: ", "title: Renamed ", 1))

    def no_full_comparison(*args: object) -> None:
        raise AssertionError("the keyword index was compared row by row")
    monkeypatch.setattr("docvec.keyword.keyword_differences", no_full_comparison)
    store = _ingest(tmp_path / "idx", docs, recorder)
    monkeypatch.undo()
    with KeywordIndex.of(store) as index:
        assert index.entries() == {(rid, str(m["label"])) for rid, m in store.iter_metadata()}
        assert any(label.startswith("Renamed") for _, label in index.entries())
        assert sync_keyword_index(store, index, force=True) == 0  # a full comparison finds nothing to change


def test_lost_keyword_index_is_rebuilt_from_the_collection(tmp_path: Path, docs: Path,
                                                           recorder: RecordingEmbedder) -> None:
    store = _ingest(tmp_path / "idx", docs, recorder)
    shutil.rmtree(keyword_path(store.location, store.name))
    index = KeywordIndex(keyword_path(store.location, store.name))
    assert sync_keyword_index(store, index) == store.count()
    assert sync_keyword_index(store, index) == 0  # up to date: a generation check, no scan
    index.close()


def test_keyword_terms_are_words_stemmed_by_porters_original_algorithm() -> None:
    """Porter's algorithm (SQLite FTS5's, Lucene's, Anserini's), not Snowball's English (Porter2, tantivy's own):
    SciFact hybrid nDCG@10 0.732 -> 0.739 (bench/README.md). Porter2 keeps 'generously' as 'generous'."""
    assert analyzed("Rejected tokens: generously, organizations & universities_x Éléments") == [
        "reject", "token", "gener", "organ", "univers", "x", "element"]


def test_a_keyword_index_of_another_version_is_replaced(tmp_path: Path, docs: Path,
                                                        recorder: RecordingEmbedder) -> None:
    """An upgrade that changes how words are indexed (a new SCHEMA_VERSION) rebuilds the keyword index from the
    collection, and the next writer removes the old one."""
    store = _ingest(tmp_path / "idx", docs, recorder)
    current = keyword_path(store.location, store.name)
    old = current.with_name(current.name.replace(f".v{SCHEMA_VERSION}.", f".v{int(SCHEMA_VERSION) - 1}."))
    current.rename(old)
    with KeywordIndex.of(store) as index:  # what a query after the upgrade opens
        assert sync_keyword_index(store, index, reader=True) == store.count()
        assert search(store, recorder, "Idempotency-Key header", 1, mode="keyword", keyword=index)[0].source == \
            "reference/idempotency.md"
    assert old.exists()  # a reader leaves other files alone
    _ingest(tmp_path / "idx", docs, recorder)
    assert current.exists() and not old.exists()


def test_keyword_mode_ranks_exact_terms_and_respects_filters(tmp_path: Path, docs: Path,
                                                             recorder: RecordingEmbedder) -> None:
    store = _ingest(tmp_path / "idx", docs, recorder)
    index = KeywordIndex(keyword_path(store.location, store.name))
    hits = search(store, recorder, "Idempotency-Key header", 3, mode="keyword", keyword=index)
    assert hits[0].source == "reference/idempotency.md" and hits[0].keyword_rank == 1
    assert hits[0].score == 1.0  # bm25 relative to the best keyword match
    assert hits[0].vector_rank is None and hits[0].similarity is not None  # cosine filled in for keyword-only hits
    filtered = search(store, recorder, "Idempotency-Key header", 5, where={"dirs": {"$contains": "guides"}},
                      mode="keyword", keyword=index)
    assert filtered and all(h.source.startswith("guides/") for h in filtered)
    assert search(store, recorder, "the of and", 3, mode="keyword", keyword=index) == []  # only stop words
    index.close()


def test_keyword_mode_reads_vectors_of_the_hits_shown_only(tmp_path: Path, recorder: RecordingEmbedder,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyword score does not count the cosine, so only the hits shown have theirs looked up: every candidate's
    was 800 vector reads a question at 1M chunks (ties make the keyword side read deep)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(80):  # 80 chunks that all match, most with tied scores: the keyword side reads deeper
        (docs / f"page{i:02d}.md").write_text(f"# Retries {i}\n\nRetry the webhook delivery {i} times with backoff.\n")
    store = _ingest(tmp_path / "idx", docs, recorder)
    read: list[str] = []
    real = Store.get_embeddings

    def counted(self: Store, ids: list[str]) -> object:
        read.extend(ids)
        return real(self, ids)
    monkeypatch.setattr(Store, "get_embeddings", counted)
    index = KeywordIndex(keyword_path(store.location, store.name))
    hits = search(store, recorder, "retry webhook delivery", 3, mode="keyword", keyword=index)
    index.close()
    assert len(hits) == 3 and all(h.similarity is not None and h.vector_rank is None for h in hits)
    assert sorted(read) == sorted(h.id for h in hits)
    vectors = store.get_embeddings([h.id for h in hits])
    q = recorder.embed_query("retry webhook delivery")
    for h in hits:  # the cosine shown is the exact one
        assert h.similarity == pytest.approx(float(sum(a * b for a, b in zip(vectors[h.id], q))), abs=1e-5)


def _bodies(store: Store) -> list[tuple[str, str, str, str]]:
    from docvec.keyword import _every_row

    with KeywordIndex.of(store) as index:
        return sorted((str(d["id"][0]), str(d.get_first("label")), str(d.get_first("digest")),
                       str(d.get_first("body"))) for _, d in _every_row(index._searcher()))


def test_a_first_build_analyses_ahead_in_a_second_process_and_makes_the_same_rows(
        tmp_path: Path, docs: Path, recorder: RecordingEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new client's first build at 1M chunks analysed every text on its one process (45 % of its wait): past
    ANALYSE_AHEAD_FROM rows a second process analyses each page while the next is read. The same rows result."""
    import docvec.keyword as keyword

    store = _ingest(tmp_path / "idx", docs, recorder)
    built_here = _bodies(store)
    assert len(built_here) == store.count() > 10
    shutil.rmtree(keyword_path(store.location, store.name))
    monkeypatch.setattr(keyword, "ANALYSE_AHEAD_FROM", 5)  # the first page here, the rest in the worker
    monkeypatch.setattr(keyword, "PAGE", 5)
    analysed_here: list[str] = []
    real = keyword.text_stems

    def counted(text: str) -> str:
        analysed_here.append(text)
        return real(text)
    monkeypatch.setattr(keyword, "text_stems", counted)
    with KeywordIndex.of(store) as index:
        assert sync_keyword_index(store, index) == store.count()
    assert len(analysed_here) == 5
    assert _bodies(store) == built_here


def test_hybrid_rrf_fuses_ranks(tmp_path: Path, docs: Path, recorder: RecordingEmbedder) -> None:
    store = _ingest(tmp_path / "idx", docs, recorder)
    index = KeywordIndex(keyword_path(store.location, store.name))
    rrf = Fusion(method="rrf", vector_weight=1.0, keyword_weight=1.0)
    hits = search(store, recorder, "rotate API keys revoke", 10, mode="hybrid", keyword=index, fusion=rrf)
    fused = [h.score for h in hits]
    assert fused == sorted(fused, reverse=True)
    for h in hits:
        expected = sum(1 / (60 + r) for r in (h.vector_rank, h.keyword_rank) if r is not None)
        assert h.score == pytest.approx(expected, abs=1e-6)
    index.close()


@pytest.mark.parametrize("method", ["rrf", "score"])
def test_a_zero_weight_leaves_the_other_ranking(tmp_path: Path, docs: Path, recorder: RecordingEmbedder,
                                                method: str) -> None:
    store = _ingest(tmp_path / "idx", docs, recorder)
    index = KeywordIndex(keyword_path(store.location, store.name))
    question = "rotate API keys revoke"
    flat = Fusion(file_penalty=0)  # rrf takes no same-file penalty: compare the rankings without it
    keyword_only = search(store, recorder, question, 10, mode="hybrid", keyword=index,
                          fusion=Fusion(method=method, vector_weight=0.0, keyword_weight=1.0, file_penalty=0))
    assert [h.id for h in keyword_only][:3] == [h.id for h in search(
        store, recorder, question, 3, mode="keyword", keyword=index, fusion=flat)]
    vector_only = search(store, recorder, question, 10, mode="hybrid", keyword=index,
                         fusion=Fusion(method=method, vector_weight=1.0, keyword_weight=0.0, file_penalty=0))
    assert [h.id for h in vector_only][:3] == [h.id for h in search(store, recorder, question, 3, fusion=flat)]
    index.close()


def test_score_fusion_adds_a_keyword_bonus_relative_to_the_best_match(tmp_path: Path, docs: Path,
                                                                      recorder: RecordingEmbedder) -> None:
    store = _ingest(tmp_path / "idx", docs, recorder)
    index = KeywordIndex(keyword_path(store.location, store.name))
    question = "webhook signature secret"
    hits = search(store, recorder, question, 50, mode="hybrid", keyword=index,
                  fusion=Fusion(method="score", vector_weight=0.6, keyword_weight=0.4, candidates=2))
    best_kw = index.search(question, 1)[0].score
    for n, h in enumerate(hits):
        assert h.similarity is not None and h.keyword_score is not None
        assert h.penalty == Fusion.file_penalty * [x.source for x in hits[:n]].count(h.source)
        expected = 0.6 * h.similarity + 0.4 * h.keyword_score / best_kw - h.penalty
        assert h.score == pytest.approx(expected, abs=1e-6) and -0.6 <= h.score + h.penalty <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].source == "guides/webhooks.md"
    assert len(hits) == store.count()  # a first read of 2 candidates was deepened until the order was certain
    index.close()


_WORDY = st.lists(st.sampled_from(list("aeiouxyzAÉéñß01 -_\n.,:'\u0301\u00a0ﬁ") + ["ing", "tion", "Token", "x" * 41]),
                  max_size=30).map("".join) | st.text(max_size=40)  # words that stem, fold, or run too long


@settings(max_examples=300, deadline=None)
@given(label=_WORDY, text=_WORDY)
def test_a_rows_body_from_stems_analysed_ahead_is_the_body_analysed_whole(label: str, text: str) -> None:
    """A big run analyses chunk texts in its worker and joins the label's stems on the main process: the row must be
    the one a whole analysis of "label\\ntext" gives, or keyword scores would differ from a clean build's."""
    from docvec.keyword import body, text_stems

    whole = " ".join(analyzed(f"{label}\n{text}"))
    assert body(label, text, text_stems(text)) == whole
    assert body(label, text) == whole
