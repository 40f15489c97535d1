"""The Python API can do what the CLI does: build an index, and refuse misuse with errors that name the argument."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import docvec
from docvec.errors import IndexNotFound, InvalidValue, LockHeld, SourceError
from docvec.ingest.pipeline import Progress


def test_open_then_sync_builds_an_index_with_the_ingest_guards(project: Path) -> None:
    with docvec.open(str(project / "config.yaml")) as idx:  # no index there yet
        with pytest.raises(IndexNotFound, match="Index.sync"):
            idx.search("token")
        seen: list[Progress] = []
        report = idx.sync(on_progress=seen.append)
        assert report.files_added and report.chunks_total > 0 and seen
        assert idx.search("rotate an API key", k=2)
        assert idx.get(idx.search("webhook retries", k=1)[0].source, 1, 1).text
    with docvec.open(str(project / "config.yaml")) as again:  # and it is an index like any other
        assert again.status()["chunks"] == report.chunks_total


def test_a_first_sync_that_fails_leaves_no_index(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(f"docs:\n  path: {tmp_path / 'nodocs'}\nstore:\n  path: {tmp_path / 'idx'}\n")
    with docvec.open(str(tmp_path / "config.yaml")) as idx, pytest.raises(SourceError, match="nodocs"):
        idx.sync()
    assert not (tmp_path / "idx" / "chroma.sqlite3").exists()


@pytest.fixture
def built(project: Path) -> Any:
    idx = docvec.open(str(project / "config.yaml"))
    idx.sync()
    yield idx
    idx.close()


@pytest.mark.parametrize("call,kind,name", [
    (lambda i: i.search(None), TypeError, "question"), (lambda i: i.search(b"x"), TypeError, "question"),
    (lambda i: i.search("x", k="3"), TypeError, "k"), (lambda i: i.search("x", k=True), TypeError, "k"),
    (lambda i: i.search("x", k=0), InvalidValue, "k"), (lambda i: i.search("x", k=-1), InvalidValue, "k"),
    (lambda i: i.search("x", k=1001), InvalidValue, "k"), (lambda i: i.search("x", min_score="high"), TypeError,
                                                           "min_score"),
    (lambda i: i.search("x", min_score=float("nan")), InvalidValue, "min_score"),
    (lambda i: i.search("x", mode=3), TypeError, "mode"), (lambda i: i.search("x", mode="fuzzy"), InvalidValue, "mode"),
    (lambda i: i.search("x", spans="all"), InvalidValue, "spans"), (lambda i: i.search("x", where=3), TypeError,
                                                                    "where"),
    (lambda i: i.search("   "), InvalidValue, "query"),
    (lambda i: i.get(None), TypeError, "source"), (lambda i: i.get("a.md", -3, 2), InvalidValue, "start_line"),
    (lambda i: i.get("a.md", 1, 0), InvalidValue, "end_line"), (lambda i: i.get("a.md", 5, 2), InvalidValue,
                                                                "end_line"),
    (lambda i: i.get("a.md", "1"), TypeError, "start_line"),
    (lambda i: i.sync("/tmp"), TypeError, "on_progress"), (lambda i: i.sync(wait="yes"), TypeError, "wait"),
])
def test_misuse_is_a_type_or_value_error_naming_the_argument(built: Any, call: Any, kind: type, name: str) -> None:
    with pytest.raises(kind, match=name):
        call(built)
    if kind is InvalidValue:  # a value error, and one of docvec's
        with pytest.raises(ValueError):
            call(built)


def test_open_refuses_arguments_of_the_wrong_type(project: Path) -> None:
    with pytest.raises(TypeError, match="config"):
        docvec.open(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="collection"):
        docvec.open(str(project / "config.yaml"), collection=["a"])  # type: ignore[arg-type]


def test_a_second_handle_of_this_process_is_named_truthfully_or_waits(project: Path, built: Any) -> None:
    (Path(built.settings.resolve(built.settings.docs.path)) / "new.md").write_text("# New\n\nA new page.\n")
    other = docvec.open(str(project / "config.yaml"))
    started, release = threading.Event(), threading.Event()

    def slow(progress: Progress) -> None:
        started.set()
        release.wait(30)
    first = threading.Thread(target=built.sync, kwargs={"on_progress": slow})
    first.start()
    try:
        assert started.wait(60)
        with pytest.raises(LockHeld) as refused:
            other.sync()
        message = str(refused.value)
        assert "this process is already writing this index" in message and "another docvec process" not in message
        waiting = threading.Thread(target=other.sync, kwargs={"wait": True})
        waiting.start()
        release.set()
        first.join(60)
        waiting.join(120)
        assert not waiting.is_alive()
    finally:
        release.set()
        first.join(60)
        other.close()
    assert [h.source for h in other.search("a new page", k=1)] == ["new.md"]


def test_searches_of_one_index_run_side_by_side_with_the_answers_of_serial_ones(built: Any, monkeypatch: Any) -> None:
    """20 threads on one Index: every answer equals the serial one, no error, and searches overlap (they all
    queued on one lock: 20 clients of a served index waited 0.23-0.40 s each)."""
    import time

    import docvec.serve.index as index_module

    questions = ["rotate an API key", "webhook retries", "token rejected", "rate limits", "pagination cursor"]
    modes = ("hybrid", "vector", "keyword")
    serial = {(q, m): [h.as_dict() for h in built.search(q, k=3, mode=m)] for q in questions for m in modes}
    inside, most = [0], [0]
    lock = threading.Lock()
    real_search = index_module.search

    def observed(*args: Any, **kwargs: Any) -> Any:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.02)  # long enough for another thread to arrive
            return real_search(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1
    monkeypatch.setattr(index_module, "search", observed)
    errors: list[BaseException] = []
    answers: list[tuple[tuple[str, str], list[dict[str, Any]]]] = []

    def client(n: int) -> None:
        try:
            for i in range(6):
                key = (questions[(n + i) % len(questions)], modes[(n + i) % len(modes)])
                answers.append((key, [h.as_dict() for h in built.search(key[0], k=3, mode=key[1])]))
        except BaseException as exc:  # noqa: BLE001 - collected and reported below
            errors.append(exc)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert len(answers) == 120 and all(got == serial[key] for key, got in answers)
    assert most[0] > 1  # searches were in flight together
