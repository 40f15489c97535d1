"""Run the docvec CLI with a SIGTERM delivered just before its first index write (the signal tests).

    python -m tests.termpoint docvec-args...

The process sends itself SIGTERM as `docker stop` would, then holds that first write until the watcher has seen
the stop, so the signal lands mid-sync on every machine however fast it embeds (a test that slept and hoped the
sync was still running passed or failed with the machine's speed).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import docvec.ingest.watch
from docvec.store import Store

seen: list[threading.Event] = []


def main() -> None:
    original_sync, original_add = docvec.ingest.watch._sync_once, Store.add

    def sync_once(sync: Any, stop: threading.Event, changes: int) -> Any:
        if changes:  # a sync the watcher started for changes (not the one at start-up, before signals are handled)
            seen.append(stop)
        return original_sync(sync, stop, changes)

    def add(self: Store, *a: Any, **kw: Any) -> Any:
        if seen and not seen[-1].is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            seen[-1].wait(60)  # the write goes on once the stop is set: the sync stops after it
        return original_add(self, *a, **kw)

    docvec.ingest.watch._sync_once = sync_once  # type: ignore[assignment]
    Store.add = add  # type: ignore[method-assign]
    sys.argv = ["docvec", *sys.argv[1:]]
    from docvec.cli import cli

    cli()


if __name__ == "__main__":
    main()
