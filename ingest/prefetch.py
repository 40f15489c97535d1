"""New and changed files read and chunked ahead, in a worker process, while this process embeds and writes.

Chroma's local `add` holds the GIL for its whole call (measured: a Python thread ran at 2 % of its speed during
one), so a thread could not chunk meanwhile; a process can. At 100k chunks, chunking with exact token counts was
~80 s of a 415 s write path whose store writes took 335 s. Small runs (under PREFETCH_FILES files) and embedders
whose token counts a worker cannot reproduce (no `wordpiece_prefix`) chunk in this process, as before; a worker
that dies hands the rest back to this process. The chunks are the same either way (tests/test_scale.py).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import signal
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from docvec.chunker import ChunkParams, ParsedDocument, chunk_markdown, has_body
from docvec.ingest.scan import SourceFile, Unreadable, content_file_hash, read_markdown

PREFETCH_FILES = 2_000  # fewer new or changed files than this: chunk here (a worker takes ~1 s and ~150 MB to
# start; a Ctrl-C as it started once ended a run as "model failed": errors.interrupt_behind, tests/test_signals.py)
AHEAD_FILES = 512  # files read and chunked ahead of the writes (a window is ~1,000 chunks)...
AHEAD_BYTES = 32 * 2**20  # ...and at most this much of their text
NO_BODY = "no text besides front matter and comments"

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Parsed:
    """A file read and chunked, or the reason it cannot be indexed; a worker also analyses each chunk's text for
    the keyword index (`stems`, one per chunk; empty: analysed when written)."""

    file_hash: str = ""
    doc: ParsedDocument | None = None
    skipped: str | None = None
    stems: tuple[str, ...] = ()


def parse_file(path: Path, count_tokens: TokenCounter, params: ChunkParams) -> Parsed:
    """Read and chunk one file."""
    try:
        text, data = read_markdown(path)
    except Unreadable as exc:
        return Parsed(skipped=str(exc))
    if not has_body(text):
        return Parsed(skipped=NO_BODY)
    return Parsed(content_file_hash(data), chunk_markdown(text, count_tokens, params))


def parsed(todo: Sequence[SourceFile], embedder: Any, params: ChunkParams) -> Iterator[tuple[SourceFile, Parsed]]:
    """Each file of `todo`, in order, read and chunked (ahead, in a worker, when that pays)."""
    prefix = getattr(embedder, "wordpiece_prefix", None)
    if len(todo) < PREFETCH_FILES or not isinstance(prefix, str):
        for source in todo:
            yield source, parse_file(source.path, embedder.count_tokens, params)
        return
    yield from _ahead(todo, prefix, embedder.count_tokens, params)


def _ahead(todo: Sequence[SourceFile], prefix: str, count_tokens: TokenCounter,
           params: ChunkParams) -> Iterator[tuple[SourceFile, Parsed]]:
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_start_worker, initargs=(prefix,))
    pending: deque[tuple[SourceFile, int, concurrent.futures.Future[Parsed]]] = deque()
    in_flight = 0
    try:
        for source in todo:
            size = _size(source.path)
            while pending and (len(pending) >= AHEAD_FILES or in_flight + size > AHEAD_BYTES):
                done = pending.popleft()
                in_flight -= done[1]
                yield done[0], _result(done, count_tokens, params)
            pending.append((source, size, pool.submit(_parse_in_worker, source.path, params)))
            in_flight += size
        while pending:
            done = pending.popleft()
            yield done[0], _result(done, count_tokens, params)
    finally:
        # No join: the generator may be finalized on the pool's own manager thread (a run that stopped early)
        pool.shutdown(wait=False, cancel_futures=True)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _result(item: tuple[SourceFile, int, concurrent.futures.Future[Parsed]], count_tokens: TokenCounter,
            params: ChunkParams) -> Parsed:
    source, _, future = item
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:  # the worker died (killed, out of memory): chunk here
        return parse_file(source.path, count_tokens, params)


_COUNT: TokenCounter | None = None  # the worker's token counter


def _start_worker(prefix: str) -> None:
    global _COUNT
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the run between writes, in the main process
    from docvec.embedders.builtin import WordPieceCounter, load_tokenizer

    counter = WordPieceCounter(load_tokenizer())
    _COUNT = (lambda texts: counter([prefix + t for t in texts])) if prefix else counter


def _parse_in_worker(path: Path, params: ChunkParams) -> Parsed:
    from docvec.keyword import text_stems

    assert _COUNT is not None
    got = parse_file(path, _COUNT, params)
    # The keyword analysis too: on the main process it was ~half of what the writes cost beyond Chroma's adds
    return dataclasses.replace(got, stems=tuple(text_stems(c.text) for c in got.doc.chunks)) if got.doc else got
