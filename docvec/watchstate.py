"""What a watcher is doing, kept in a small file beside the index so that `status` (CLI, HTTP, MCP) can say it.

The watcher (`docvec ingest --watch`, `docvec serve --watch`) rewrites the file at every event: watching, waiting
for a docs folder that is gone, stopped and why, and the deletions it holds back until they are confirmed. A file
whose process is gone is reported as a watcher that stopped without saying so (killed).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from docvec.smallfiles import beside_index, pid_alive, read_small_file, write_json_atomically


def state_path(index_dir: Path, collection: str, chroma_host: str | None = None) -> Path:
    """Where the watcher of one index records its state."""
    return beside_index(index_dir, "watch", collection, chroma_host, ".json")


def record(path: Path, state: str, detail: str | None = None, held: list[str] | None = None) -> None:
    """Record the watcher's state. A folder that cannot be written (a read-only index) keeps no state: the log
    lines still say it."""
    data = {"pid": os.getpid(), "state": state, "detail": detail, "held_deletions": held or [],
            "since": round(time.time(), 3)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, data)
    except OSError:
        pass


def read(path: Path) -> dict[str, Any] | None:
    """The last recorded state; a watcher whose process is gone is 'stopped' (killed); None if none ever ran."""
    try:
        data = json.loads(read_small_file(path, 2**20) or b"null")
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("state") != "stopped" and not pid_alive(pid):
        data.update(state="stopped", detail=f"its process ({pid}) is gone: it was killed or crashed")
    return data
