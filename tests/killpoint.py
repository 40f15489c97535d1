"""Run the docvec CLI with a SIGKILL injected before its N-th write (fault injection for the crash tests).

    python -m tests.killpoint N COUNT_FILE docvec-args...

Every call that changes the index on disk counts as one write boundary: Chroma adds, metadata updates, deletes
and collection-metadata writes, keyword-index commits and state writes, pointer switches, collection drops and
residue sweeps (after Chroma's delete_collection). Before the N-th the process kills itself, as `kill -9` or a
power cut would; with N = 0 it runs to the end and writes how many boundaries it passed to COUNT_FILE, so a test
can kill at every one of them in turn. tests/convergence.py kills in-process at the same boundaries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from docvec.keyword import KeywordIndex, KeywordSession
from docvec.store import Store

WRITES = [(Store, "add"), (Store, "replace_metadata"), (Store, "delete"), (Store, "set_collection_metadata"),
          (KeywordSession, "write"), (KeywordIndex, "set_state"), (Store, "point_to"), (Store, "drop_physical"),
          (Store, "sweep_residue")]


@contextlib.contextmanager
def boundaries(before: Callable[[int], None]) -> Iterator[None]:
    """Call `before(n)` before the n-th write boundary passed inside the block (a write of nothing is none)."""
    passed = [0]
    saved = [(cls, name, cls.__dict__[name]) for cls, name in WRITES]

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def write(self: Any, *a: Any, **kw: Any) -> Any:
            if original.__name__ in ("add", "replace_metadata", "delete") and not a[0]:
                return original(self, *a, **kw)  # nothing to write: not a boundary
            passed[0] += 1
            before(passed[0])
            return original(self, *a, **kw)
        return write

    for cls, name, original in saved:
        setattr(cls, name, wrap(original))
    try:
        yield
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


def main() -> None:
    target, count_file, args = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    passed = [0]

    def before(n: int) -> None:
        passed[0] = n
        if n == target:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.argv = ["docvec", *args]
    from docvec.cli import cli

    try:
        with boundaries(before):
            cli(standalone_mode=False)
    finally:
        count_file.write_text(str(passed[0]))


if __name__ == "__main__":
    main()
