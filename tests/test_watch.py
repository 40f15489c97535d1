"""A watcher never goes quiet: it re-arms on a replaced docs folder, holds mass deletions without blocking
additions and edits, and `status` says what it is doing."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from click.testing import CliRunner

from docvec.cli import cli
from docvec.store import StoreLocation
from docvec.watchstate import state_path
from docvec.ingest.pipeline import IngestReport, Progress, SyncGuard
from docvec.ingest.scan import ScanOptions
from docvec.ingest.sync import sync_index
from docvec.ingest.watch import WatchEvent, recorder, watch
from tests.conftest import RecordingEmbedder
from tests.convergence import PARAMS

HOLD = SyncGuard(hold_mass_delete=True)


class Watcher:
    """`watch` in a thread over a real index, with its events collected."""

    def __init__(self, docs: Path, index: Path) -> None:
        self.docs_root = docs
        self.location = StoreLocation(index, "docvec")
        self.embedder = RecordingEmbedder()
        self.events: list[WatchEvent] = []
        self.stop = threading.Event()
        on_event = recorder(state_path(index, "docvec"), self.events.append)
        self.thread = threading.Thread(target=watch, args=(docs, self.sync, self.stop, on_event, 100), daemon=True)

    def sync(self, on_progress: Callable[[Progress], None]) -> IngestReport:
        return sync_index(self.location, self.embedder, ScanOptions(self.docs_root), PARAMS[0], HOLD, False,
                          on_progress)

    def start(self) -> "Watcher":
        self.thread.start()
        time.sleep(0.5)  # the OS watch is armed
        return self

    def wait_for(self, check: Callable[[WatchEvent], bool], seconds: float = 30) -> WatchEvent:
        deadline = time.monotonic() + seconds
        seen = 0
        while time.monotonic() < deadline:
            for event in self.events[seen:]:
                if check(event):
                    return event
            seen = len(self.events)
            time.sleep(0.05)
        raise AssertionError(f"no such event; got {[(e.kind, e.error) for e in self.events]}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _page(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {path.stem}\n\n{text}\n")


def _added(name: str) -> Callable[[WatchEvent], bool]:
    return lambda e: e.kind == "synced" and e.report is not None and name in e.report.files_added


def test_a_deleted_and_recreated_docs_folder_is_watched_again(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _page(docs / "a.md", "The first page.")
    watcher = Watcher(docs, tmp_path / "index").start()
    try:
        _page(docs / "b.md", "A second page.")
        watcher.wait_for(_added("b.md"))
        shutil.rmtree(docs)
        watcher.wait_for(lambda e: e.kind == "gone")
        _page(docs / "c.md", "Written into the folder made again.")
        watcher.wait_for(lambda e: e.kind == "rearmed")
        watcher.wait_for(_added("c.md"))
        os.rename(docs, tmp_path / "old")  # replaced under the same name: another inode
        _page(docs / "d.md", "A page of the replacement folder.")
        watcher.wait_for(_added("d.md"))
        _page(docs / "e.md", "And the OS watch of the replacement works.")
        watcher.wait_for(_added("e.md"))
    finally:
        watcher.close()
    assert watcher.events[-1].kind == "stopped"


def test_held_deletions_do_not_block_additions_and_status_says_how_to_confirm(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for n in range(4):
        _page(docs / f"p{n}.md", f"Page number {n} about marmosets.")
    config = tmp_path / "config.yaml"
    config.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n")
    watcher = Watcher(docs, tmp_path / "index")
    watcher.sync(lambda p: None)
    watcher.start()
    try:
        for n in range(3):
            (docs / f"p{n}.md").unlink()
        held = watcher.wait_for(lambda e: e.kind == "synced" and e.report is not None
                                and len(e.report.held_deletions) == 3)
        assert held.report is not None and held.report.files_removed == []
        _page(docs / "new.md", "A page added while deletions are held.")
        watcher.wait_for(_added("new.md"))
        status = CliRunner().invoke(cli, ["--config", str(config), "status"]).output
        assert "watch      watching" in status and "holding the deletion of 3 files" in status
        assert "`docvec ingest --yes` deletes them" in status
    finally:
        watcher.close()
    status = CliRunner().invoke(cli, ["--config", str(config), "status"]).output
    assert "watch      stopped" in status
    confirmed = sync_index(watcher.location, watcher.embedder, ScanOptions(docs), PARAMS[0],
                           SyncGuard(allow_mass_delete=True))  # what `docvec ingest --yes` runs
    assert sorted(confirmed.files_removed) == ["p0.md", "p1.md", "p2.md"]
    search = CliRunner().invoke(cli, ["--config", str(config), "query", "page", "--files", "--no-server",
                                      "--mode", "keyword"])
    shown = search.output.split("keyword scores only", 1)[-1]
    assert "p0.md" not in shown and "new.md" in shown and "p3.md" in shown, search.output
