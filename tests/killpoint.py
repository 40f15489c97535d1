"""Run the docvec CLI with a SIGKILL injected before its N-th write (fault injection for the crash tests).

    python -m tests.killpoint N COUNT_FILE docvec-args...

Every call that changes the index on disk counts as one write boundary: Chroma adds, metadata updates, deletes
and collection-metadata writes, keyword-index commits and
state writes, pointer switches, collection drops and residue sweeps (after Chroma's delete_collection). Before the N-th the process kills itself, as
`kill -9` or a power cut would; with N = 0 it runs to the end and writes how many boundaries it passed to
COUNT_FILE, so a test can kill at every one of them in turn.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

from docvec.keyword import KeywordIndex, KeywordSession
from docvec.store import Store

WRITES = [(Store, "add"), (Store, "replace_metadata"), (Store, "delete"), (Store, "set_collection_metadata"),
          (KeywordSession, "write"), (KeywordIndex, "set_state"), (Store, "point_to"), (Store, "drop_physical"),
          (Store, "sweep_residue")]


def main() -> None:
    target, count_file, args = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    passed = [0]

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def write(self: Any, *a: Any, **kw: Any) -> Any:
            if original.__name__ in ("add", "replace_metadata", "delete") and not a[0]:
                return original(self, *a, **kw)  # nothing to write: not a boundary
            passed[0] += 1
            if passed[0] == target:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *a, **kw)
        return write

    for cls, name in WRITES:
        setattr(cls, name, wrap(getattr(cls, name)))
    sys.argv = ["docvec", *args]
    from docvec.cli import cli

    try:
        cli(standalone_mode=False)
    finally:
        count_file.write_text(str(passed[0]))


if __name__ == "__main__":
    main()
