"""A real `docvec ingest` process, SIGKILLed at several moments, converges to exactly a clean build."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from docvec.store import Store, StoreLocation

WORDS = ("token key request quota webhook retry cursor page error limit secret rotate header region invoice "
         "export schedule bucket version upgrade client server cache index vector model").split()


def _corpus(root: Path, files: int, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sections = [f"## Part {s}\n\n" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "."
                    for s in range(3)]
        (root / f"doc{i:03d}.md").write_text(f"# Document {i}\n\n" + "\n\n".join(sections) + "\n")


def _docvec(args: list[str], config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DOCVEC_CONFIG": str(config)}
    # A shell's background jobs (and some CI runners) start with SIGINT ignored, and Python keeps it ignored;
    # the child gets the default disposition, as in a terminal, so Ctrl-C can be tested anywhere.
    return subprocess.Popen([sys.executable, "-m", "docvec.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _config(root: Path, docs: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "config.yaml"
    cfg.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {root / 'index'}\n")
    return cfg


def _snapshot(index: Path) -> dict[str, tuple[str, str]]:
    store = Store.open(StoreLocation(index, "docvec"))
    ids = [rid for rid, _ in store.iter_metadata()]
    return {rid: (doc, json.dumps(meta, sort_keys=True)) for rid, (doc, meta) in store.get_documents(ids).items()}


def _state(index: Path) -> tuple[tuple[str, int, int], ...]:
    files = sorted(p for p in index.rglob("*") if p.is_file() and ".docvec-" not in p.name) if index.exists() else []
    out = []
    for p in files:
        try:  # SQLite's journal comes and goes while the writer runs: a file gone since the listing is skipped
            st = p.stat()
        except FileNotFoundError:
            continue
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _kill_after_first_write(proc: subprocess.Popen[str], index: Path, extra: float) -> None:
    """SIGKILL `extra` seconds after the index files first change: lands in writes and deletes, not startup."""
    before = _state(index)
    while proc.poll() is None and _state(index) == before:
        time.sleep(0.005)
    time.sleep(extra)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_any_moment_then_rerun_equals_clean_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 40, seed=1)
    crashed = _config(tmp_path / "crashed", docs)
    index = tmp_path / "crashed" / "index"
    proc = _docvec(["ingest", "-q"], crashed)
    time.sleep(2.5)  # early: mid-embedding, nothing written yet
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for extra, mutate in ((0.3, None), (0.0, 2), (0.05, 3), (0.2, 4)):
        if mutate is not None:  # removals, edits and additions, so that kills land in writes and in deletes
            for stale in sorted(docs.glob("*.md"))[mutate * 5: mutate * 5 + 4]:
                stale.unlink()
            for edited in sorted(docs.glob("*.md"))[:mutate]:
                edited.write_text(edited.read_text().replace("## Part 1", f"## Part 1 (rev {mutate})"))
            _corpus(docs / f"more{mutate}", 6, seed=mutate)
        _kill_after_first_write(_docvec(["ingest", "-q"], crashed), index, extra)
    done = _docvec(["ingest", "-q", "--json"], crashed)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    verify = _docvec(["verify", "--json"], crashed)
    v_out, v_err = verify.communicate(timeout=300)
    assert verify.returncode == 0 and json.loads(v_out)["ok"], v_out + v_err

    clean = _config(tmp_path / "clean", docs)
    ref = _docvec(["ingest", "-q"], clean)
    assert ref.wait(timeout=300) == 0
    assert _snapshot(index) == _snapshot(tmp_path / "clean" / "index")


def test_second_ingest_is_refused_while_the_first_writes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 30, seed=7)
    cfg = _config(tmp_path, docs)
    first = _docvec(["ingest", "-q"], cfg)
    holder = tmp_path / "index" / ".docvec-docvec.holder"
    deadline = time.monotonic() + 60
    while not holder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # still holding the lock, however fast it would have finished
    try:
        second = _docvec(["ingest", "-q"], cfg)
        _, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1
    assert f"another docvec process is writing this index (pid {first.pid}" in err
    assert first.wait(timeout=300) == 0
    verify = _docvec(["verify"], cfg)
    assert verify.wait(timeout=120) == 0


def signal_while_indexing(proc: subprocess.Popen[str], signum: int, delay: float) -> str:
    """Send `signum` `delay` s after the progress bar says the run is indexing; returns all of stderr."""
    seen = ""
    while "indexing" not in seen and proc.poll() is None:  # the progress bar on stderr: the run is writing
        seen += proc.stderr.read(1)  # type: ignore[union-attr]
    time.sleep(delay)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return seen + err


def test_ctrl_c_stops_cleanly_with_a_summary_and_the_next_run_continues(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _corpus(docs, 200, seed=11)  # ~450 chunks: ~10 s of embedding
    cfg = _config(tmp_path, docs)
    proc = _docvec(["ingest"], cfg)
    err = signal_while_indexing(proc, signal.SIGINT, 0.3)
    assert proc.returncode == 130, err
    assert "interrupted: what was stored is kept" in err and "chunks:" in err and "Traceback" not in err
    rerun = _docvec(["ingest", "-q", "--json"], cfg)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert json.loads(out)["chunks_embedded"] > 0  # the signal landed mid-run: the rerun finished the rest
    assert _docvec(["verify"], cfg).wait(timeout=120) == 0


def _killed_at(n: int, config: Path, count_file: Path) -> int:
    proc = subprocess.run([sys.executable, "-m", "tests.killpoint", str(n), str(count_file), "ingest", "-q"],
                          env={**os.environ, "DOCVEC_CONFIG": str(config)}, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    return proc.returncode


def test_a_kill_at_every_write_boundary_converges_on_the_next_run(tmp_path: Path, builtin: object) -> None:
    """Deterministic: the run is killed before each of its writes in turn (rename, edit, delete, add), and the
    next ordinary run must leave the collection AND the keyword index exactly as a clean build."""
    import shutil

    from docvec.chunker import ChunkParams
    from docvec.fingerprint import Fingerprint
    from docvec.ingest.scan import ScanOptions
    from docvec.ingest.verify import verify

    docs = tmp_path / "docs"
    _corpus(docs, 8, seed=5)
    base = _config(tmp_path / "base", docs)
    assert _docvec(["ingest", "-q"], base).wait(timeout=300) == 0
    (docs / "doc001.md").rename(docs / "renamed.md")
    (docs / "doc002.md").write_text((docs / "doc002.md").read_text().replace("## Part 1", "## Part 1 (edited)"))
    (docs / "doc003.md").unlink()
    _corpus(docs / "new", 1, seed=6)
    clean = _config(tmp_path / "clean", docs)
    assert _docvec(["ingest", "-q"], clean).wait(timeout=300) == 0
    expected = _snapshot(tmp_path / "clean" / "index")

    probe = _config(tmp_path / "probe", docs)
    shutil.copytree(tmp_path / "base" / "index", tmp_path / "probe" / "index")
    assert _killed_at(0, probe, tmp_path / "count") == 0
    boundaries = int((tmp_path / "count").read_text())
    assert boundaries >= 6  # writing mark, add, update/delete, stale delete, generation, stats, keyword index
    fp = Fingerprint.build(builtin.info, ChunkParams())  # type: ignore[attr-defined]
    for n in range(1, boundaries + 1):
        cfg = _config(tmp_path / f"kill{n}", docs)
        shutil.copytree(tmp_path / "base" / "index", tmp_path / f"kill{n}" / "index")
        assert _killed_at(n, cfg, tmp_path / f"count{n}") == -signal.SIGKILL
        rerun = _docvec(["ingest", "-q"], cfg)
        assert rerun.wait(timeout=300) == 0, rerun.stderr.read() if rerun.stderr else ""
        index = tmp_path / f"kill{n}" / "index"
        found = verify(Store.open(StoreLocation(index, "docvec")), builtin.count_tokens, fp, ScanOptions(docs))
        assert found.problems == 0, (n, found.as_dict())
        assert _snapshot(index) == expected, n
