"""A million chunks: docvec's own costs per size, against a local index and a real `chroma run` server (issue 32).

    python bench/million_bench.py --store local --sizes 100000,250000,500000,1000000 [--work /tmp/docvec-million]
    python bench/million_bench.py --store server --sizes ...

Corpus: copies of the SciFact folder (../shared/eval/scifact), four abstracts to a file (~8 chunks a file, so 1M
chunks are ~125k files). In copy k > 0 every paragraph starts with "Copy <word>. ", a word that is one word-piece
(so every copy splits alike): each text is its own, and its vector is the real MiniLM vector of the text without the
marker, nudged by a small perturbation seeded by the text (bench/scale_bench.py's LookupEmbedder). The real vectors
are computed once and kept in bench/results/million-vectors.npz; no run embeds more than a few hundred texts, so
the model is not what is measured (its throughput, the embedding floor, is reported beside). Work data lives under
--work (default /tmp/docvec-million), never in the repository.

Per size, each command in its own process (peak RSS from os.wait4), one after another on an otherwise idle machine:
- ingest: `sync_index` (docvec's whole write path: scan, chunk with exact token counts, plan, windowed writes, keyword
  index) from empty; the time inside the embedder and the bench's own spooling of the records are subtracted;
- raw: Chroma `add` of exactly the records docvec wrote (spooled to disk), 5,000 a call, into a fresh collection;
  with --tail-from N, sizes >= N take the ratio from their last 10 % of copies instead (a raw build from empty is
  ~40 min at 1M): docvec syncs the first 90 %, the index (or server data) is copied, docvec syncs the rest, and raw
  Chroma adds the same records onto the copy, so both add onto the same 900k collection;
- noop: `docvec ingest` with nothing changed; edit: a sync after appending a sentence to 1 % of the files;
- status, verify: the CLI commands;
- keyword: a from-scratch build of the keyword index (for a server: a new client's wait before its first hybrid
  answer) and its size; server only: another machine's 1 % sync, then this client's catch-up;
- serve: `docvec serve`, warm POST /search p50/p95 per mode (100 questions), RSS idle and under 20 clients;
- disk: the index folder (local) or the server's data folder (server).
Appends to bench/results/million-<store>.json. `--again noop,edit,serve,tail --label NAME` measures those
figures again on a work folder kept by --keep (after a code change) and saves them under <size>.again.NAME;
`compact` there counts the HNSW graph's slots, runs `docvec reindex --compact` and counts them again.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
RESULTS = REPO / "bench" / "results"
SCIFACT = REPO.parent / "shared" / "eval" / "scifact"
VECTORS = RESULTS / "million-vectors.npz"
PER_FILE = 4  # SciFact abstracts per file
MARKER = re.compile(r"Copy [a-z]+\. ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("local", "server"), default="local")
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/docvec-million"))
    parser.add_argument("--keep", action="store_true", help="keep each size's work folder")
    parser.add_argument("--tail-from", type=int, default=10**9, metavar="N",
                        help="sizes >= N measure write path / raw add on their last 10 %% (raw onto a copy of the "
                             "first 90 %%) instead of building a raw collection from empty")
    parser.add_argument("--report", action="store_true", help="print the table and log-log slopes of the results")
    parser.add_argument("--again", metavar="PHASES",
                        help="measure again on a work folder kept by --keep: comma-separated of noop, edit, "
                             "verify, keyword, serve, tail, compact; saved under <size>.again.<--label>")
    parser.add_argument("--label", default="again", help="the name --again saves its figures under")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        return _child(ns.child)
    if ns.report:
        return print(report())
    target = RESULTS / f"million-{ns.store}.json"
    out: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    questions = [json.loads(line)["query"] for line in (SCIFACT / "queries.jsonl").read_text().splitlines()]
    if ns.again:
        for size in (int(s) for s in ns.sizes.split(",")):
            figures = out[str(size)].setdefault("again", {})[ns.label] = {}
            figures.update(_again(ns.store, size, ns.work / f"{ns.store}-{size}", ns.again.split(","), questions,
                                  lambda o: _save(target, out, size, {**out[str(size)], "again": {
                                      **out[str(size)]["again"], ns.label: o}})))
            _save(target, out, size, out[str(size)])
        return None
    for size in (int(s) for s in ns.sizes.split(",")):
        work = ns.work / f"{ns.store}-{size}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            out[str(size)] = _one_size(ns.store, size, work, questions, lambda o: _save(target, out, size, o),
                                       0.1 if size >= ns.tail_from else 0.0)
        finally:
            if not ns.keep:
                shutil.rmtree(work, ignore_errors=True)
        _save(target, out, size, out[str(size)])


def _save(target: Path, out: dict[str, Any], size: int, figures: dict[str, Any]) -> None:
    out[str(size)] = figures
    target.write_text(json.dumps(out, indent=1))
    print(size, json.dumps(figures), flush=True)


# --- the report -----------------------------------------------------------------------------------------------

FIGURES = [  # (row name, path into a size's results, unit)
    ("docvec write path (embedding aside)", ("ingest", "docvec_s"), "s"),
    ("docvec's Chroma adds", ("ingest", "store_add_s"), "s"),
    ("raw Chroma add, same records", ("raw_add", "seconds"), "s"),
    ("last 10 % of copies: docvec write path", ("tail_ingest", "docvec_s"), "s"),
    ("last 10 % of copies: raw add onto a copy of the first 90 %", ("tail_raw_add", "seconds"), "s"),
    ("write path / raw add", ("write_ratio",), "x"),
    ("docvec's Chroma adds / raw add", ("store_writes_ratio",), "x"),
    ("ingest peak RSS", ("ingest", "peak_rss_mb"), "MB"),
    ("no-op sync (`docvec ingest`)", ("noop", "wall_s"), "s"),
    ("no-op sync peak RSS", ("noop", "peak_rss_mb"), "MB"),
    ("sync after editing 1 % of files", ("edit_sync", "docvec_s"), "s"),
    ("1 % sync peak RSS", ("edit_sync", "peak_rss_mb"), "MB"),
    ("`docvec status`", ("status", "wall_s"), "s"),
    ("`docvec verify`", ("verify", "wall_s"), "s"),
    ("verify peak RSS", ("verify", "peak_rss_mb"), "MB"),
    ("keyword index build (a new client's wait)", ("keyword", "seconds"), "s"),
    ("keyword index size", ("keyword", "size_mb"), "MB"),
    ("catch-up after another machine's 1 % sync", ("other_machine", "catch_up", "seconds"), "s"),
    ("the same by comparing every record (before)", ("other_machine", "full_compare", "seconds"), "s"),
    ("serve: warm vector p50 / p95", ("serve", "vector"), "ms"),
    ("serve: warm keyword p50 / p95", ("serve", "keyword"), "ms"),
    ("serve: warm hybrid p50 / p95", ("serve", "hybrid"), "ms"),
    ("serve idle RSS", ("serve", "idle_rss_mb"), "MB"),
    ("serve RSS under 20 clients", ("serve", "load", "rss_peak_mb"), "MB"),
    ("Chroma server RSS (after the run)", ("chroma_server_rss_mb",), "MB"),
    ("disk (index or server data)", ("disk_mb",), "MB"),
    ("of which Chroma's HNSW files", ("hnsw_files_mb",), "MB"),
]


def report() -> str:
    """Markdown: one column per store and size, then the log-log slope of each figure between sizes."""
    runs = {store: json.loads((RESULTS / f"million-{store}.json").read_text())
            for store in ("local", "server") if (RESULTS / f"million-{store}.json").exists()}
    columns = [(store, size, runs[store][size]) for store in runs for size in sorted(runs[store], key=int)]
    lines = ["| | " + " | ".join(f"{store} {int(size) // 1000}k" for store, size, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|",
             "| chunks / files | " + " | ".join(f"{r.get('chunks', '?')} / {r.get('files', '?')}"
                                              for _, _, r in columns) + " |"]
    slopes = []
    for name, path, unit in FIGURES:
        values = [_dig(r, path) for _, _, r in columns]
        if all(v is None for v in values):
            continue
        lines.append(f"| {name} | " + " | ".join(_cell(v, unit) for v in values) + " |")
        for store in runs:
            points = [(r["chunks"], _number(_dig(r, path))) for st, _, r in columns if st == store and "chunks" in r]
            points = [(n, v) for n, v in points if v]
            if len(points) >= 2:
                slopes.append(f"| {name} | {store} | " + ", ".join(
                    f"{_slope(a, b):.2f} ({a[0] // 1000}k→{b[0] // 1000}k)"
                    for a, b in zip(points, points[1:])) + " |")
    return "\n".join(lines + ["", "| figure | store | log-log slope |", "|---|---|---|"] + slopes)


def _dig(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        return value.get("p95_ms")
    return float(value) if isinstance(value, (int, float)) else None


def _cell(value: Any, unit: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return f"{value['p50_ms']} / {value['p95_ms']} ms"
    return f"{value:,} {unit}" if unit != "x" else f"{value:.2f}x"


def _slope(a: tuple[int, float], b: tuple[int, float]) -> float:
    import math

    return math.log(b[1] / a[1]) / math.log(b[0] / a[0])


# --- the corpus -----------------------------------------------------------------------------------------------

def marker_words(count: int) -> list[str]:
    """`count` lowercase words that the MiniLM tokenizer keeps as one word-piece each (deterministic)."""
    from docvec.embedders.builtin import BuiltinEmbedder

    counter = BuiltinEmbedder()
    vocab = sorted(w for w in json.loads(_tokenizer_json())["model"]["vocab"] if w.isalpha() and w.islower()
                   and w.isascii() and 5 <= len(w) <= 8)
    seen = set(re.findall(r"[a-z]+", " ".join(p.read_text(encoding="utf-8").lower() for p in
                                             [*(SCIFACT / "docs").glob("*.md"), SCIFACT / "queries.jsonl"])))
    vocab = [w for w in vocab if w not in seen]  # a marker never matches a question's or an abstract's word
    words = vocab[::max(1, len(vocab) // (count * 3))]
    single = [w for w, n in zip(words, counter.count_tokens([f"Copy {w}." for w in words])) if n == 5]
    if len(single) < count:
        raise SystemExit("not enough one-piece marker words")
    return single[:count]


def _tokenizer_json() -> str:
    return (REPO / "docvec" / "embedders" / "minilm" / "tokenizer.json").read_text()


def copies_of(size: int) -> int:
    return max(1, round(size / 9_979))


def build_corpus(size: int, docs: Path, part: tuple[int, int | None] = (0, None)) -> int:
    """~size chunks of SciFact copies under docs (copyNNN/fNNNN.md), or copies part[0] to part[1] of them (the
    same files as in the whole corpus: the markers depend on the size only); returns the number of files written."""
    sources = sorted((SCIFACT / "docs").glob("*.md"))
    texts = [p.read_text(encoding="utf-8").rstrip("\n") for p in sources]
    groups = ["\n\n".join(texts[i:i + PER_FILE]) + "\n" for i in range(0, len(texts), PER_FILE)]
    copies = copies_of(size)
    words = marker_words(copies)
    files = 0
    for k in range(part[0], copies if part[1] is None else part[1]):
        folder = docs / f"copy{k:03}"
        folder.mkdir(parents=True)
        for j, text in enumerate(groups):
            body = re.sub(r"\n\n(?!#)", f"\n\nCopy {words[k]}. ", text) if k else text
            (folder / f"f{j:04}.md").write_text(body, encoding="utf-8")
            files += 1
    return files


def edit_files(docs: Path, share: float, round_: int) -> int:
    """Append a sentence to every file whose path hashes into `share` (1 % -> ~1 in 100); returns how many."""
    edited = 0
    for path in sorted(docs.rglob("*.md")):
        digest = hashlib.md5(path.name.encode() + path.parent.name.encode()).hexdigest()
        if int(digest[:8], 16) % 10_000 < share * 10_000:
            with path.open("a", encoding="utf-8") as f:
                f.write(f"\nRevision {round_} of this page adds one closing sentence about {path.stem}.\n")
            edited += 1
    return edited


# --- vectors --------------------------------------------------------------------------------------------------

class LookupEmbedder:
    """The built-in model's identity and tokenizer; a text's vector is the real vector of the text without its copy
    markers (computed by the model once, then kept in million-vectors.npz), nudged by a perturbation seeded by the
    text. `fresh` texts (edits) take the nudged vector of a real text picked by their hash instead of the model."""

    wordpiece_prefix = ""  # counts as the built-in model: docvec may chunk ahead in a worker process

    def __init__(self, fresh: bool = False) -> None:
        import numpy as np

        from docvec.embedders.builtin import BuiltinEmbedder

        self._np = np
        self._real = BuiltinEmbedder()
        self.info = self._real.info
        self._known: dict[str, Any] = {}
        if VECTORS.exists():
            data = np.load(VECTORS)
            self._known = dict(zip(data["hashes"].tolist(), data["vectors"]))
        self._added = 0
        self._fresh = fresh
        self.seconds = 0.0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._real.count_tokens(texts)

    def embed_documents(self, texts: Sequence[str]) -> Any:
        t0 = time.perf_counter()
        originals = [MARKER.sub("", t) for t in texts]
        keys = [hashlib.sha1(o.encode()).hexdigest() for o in originals]
        missing = sorted({k: o for k, o in zip(keys, originals) if k not in self._known}.items())
        if missing and self._fresh:
            pool = list(self._known.values())
            for k, _ in missing:
                self._known[k] = pool[int(k[:8], 16) % len(pool)]
        elif missing:
            for (k, _), v in zip(missing, self._real.embed_documents([o for _, o in missing])):
                self._known[k] = self._np.asarray(v, dtype=self._np.float32)
            self._added += len(missing)
        rows = [self._vector(t, o, k) for t, o, k in zip(texts, originals, keys)]
        self.seconds += time.perf_counter() - t0
        return self._np.asarray(rows, dtype=self._np.float32)

    def _vector(self, text: str, original: str, key: str) -> Any:
        vector = self._known[key]
        if text == original and not self._fresh:
            return vector
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        nudged = vector + self._np.random.default_rng(seed).normal(0, 0.01, vector.shape).astype(self._np.float32)
        return nudged / self._np.linalg.norm(nudged)

    def embed_query(self, text: str) -> Any:
        return self._real.embed_query(text)

    def save(self) -> None:
        """Keep the real vectors computed in this run for the next."""
        if self._added:
            hashes = list(self._known)
            self._np.savez(VECTORS, hashes=self._np.asarray(hashes), vectors=self._np.asarray(
                [self._known[h] for h in hashes], dtype=self._np.float32))


def _port() -> int:
    from serve_bench import _port as free_port

    return free_port()


def _rss_mb(pid: int) -> float:
    from serve_bench import _rss_mb as rss

    return rss(pid)


def _latencies(url: str, questions: list[str], mode: str) -> dict[str, float]:
    from serve_bench import _latencies as warm  # POST /search, k 10, one client

    return warm(url, questions, mode)


def _pct(times: list[float]) -> dict[str, float]:
    from serve_bench import _pct as percentiles

    return percentiles(times)


# --- one size -------------------------------------------------------------------------------------------------

def _one_size(store: str, size: int, work: Path, questions: list[str], checkpoint: Any,
              tail: float = 0.0) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": _machine(), "store": store}
    t0 = time.perf_counter()
    head = copies_of(size) - max(1, round(copies_of(size) * tail)) if tail else None  # copies before the tail
    out["files"] = build_corpus(size, work / "docs", (0, head))
    out["corpus_s"] = round(time.perf_counter() - t0, 1)
    server = _chroma_server(work / "server") if store == "server" else None
    try:
        cfg = _config(work, work / "index", server)
        if tail:
            server, cfg = _head_then_tail(out, size, head or 0, work, server)
        else:
            out["ingest"] = _run_child(["ingest", str(cfg), str(work / "spool")])
        out["chunks"] = out["ingest"]["chunks"]
        out["disk_mb"] = _disk_mb(work / ("server" if server else "index"))  # (before the raw collection)
        out["hnsw_files_mb"] = sum(_disk_mb(p) for p in (work / ("server" if server else "index")).iterdir()
                                   if p.is_dir() and len(p.name) == 36)  # Chroma's vector segment: ~its RAM
        checkpoint(out)
        raw_server = _chroma_server(work / "raw") if tail and server else None
        try:
            port = (raw_server or server)[1] if server else 0
            out["tail_raw_add" if tail else "raw_add"] = _run_child(["raw", str(work / "spool"), str(work / "raw"), str(port),
                                         "append" if tail else "fresh"])
        finally:
            if raw_server:
                _stop(raw_server[0])
        shutil.rmtree(work / "spool", ignore_errors=True)
        shutil.rmtree(work / "raw", ignore_errors=True)
        added = out["tail_ingest"] if tail else out["ingest"]
        raw_s = out["tail_raw_add" if tail else "raw_add"]["seconds"]
        out["write_ratio"] = round(added["docvec_s"] / raw_s, 3)
        out["store_writes_ratio"] = round(added["store_add_s"] / raw_s, 3)
        checkpoint(out)
        out["noop"] = _cli(cfg, "ingest", "-q")
        out["status"] = _cli(cfg, "status")
        out["verify"] = _cli(cfg, "verify")
        out["edited_files"] = edit_files(work / "docs", 0.01, 1)
        out["edit_sync"] = _run_child(["sync", str(cfg)])
        checkpoint(out)
        out["keyword"] = _keyword(work, cfg)
        if server:
            out["other_machine"] = _other_machine(work, server[1])
        checkpoint(out)
        out["serve"] = _serve(cfg, questions, server)
        out["disk_mb_end"] = _disk_mb(work / ("server" if server else "index"))
        if server:
            out["chroma_server_rss_mb"] = _rss_mb(server[0].pid)
    finally:
        if server:
            _stop(server[0])
    return out


def _again(store: str, size: int, work: Path, phases: list[str], questions: list[str],
           checkpoint: Any) -> dict[str, Any]:
    """Figures measured again on a kept index (the code changed, the index did not), phase by phase; a server's
    data folder is served again on the port its config names (a client keys its keyword index by it)."""
    cfg = work / "config-index.yaml"
    if not cfg.exists():
        raise SystemExit(f"--again needs a work folder kept by --keep ({work} has none)")
    out: dict[str, Any] = {"machine": _machine(), "commit": subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()}
    port = re.search(r"port: (\d+)", cfg.read_text())
    server = _chroma_server(work / "server", int(port.group(1))) if store == "server" and port else None
    try:
        for phase in phases:
            if phase == "noop":  # the first may sweep whole once (a catalog another version stamped)
                out["noop_first"], out["noop"] = _cli(cfg, "ingest", "-q"), _cli(cfg, "ingest", "-q")
            elif phase == "edit":
                out["edited_files"] = edit_files(work / "docs", 0.01, int(time.time()))
                out["edit_sync"] = _run_child(["sync", str(cfg)])
            elif phase == "verify":
                out["verify"] = _cli(cfg, "verify")
            elif phase == "keyword":
                out["keyword"] = _keyword(work, cfg)
            elif phase == "serve":
                out["serve"] = _serve(cfg, questions, server)
            elif phase == "tail":
                server = _tail_again(out, size, work, cfg, server)
            elif phase == "compact":  # the HNSW graph's slots of deleted chunks, and what a rebuild drops
                data = work / ("server" if server else "index")
                out["graph_before"] = _run_child(["graph", str(cfg), str(data)])
                out["compact"] = _cli(cfg, "reindex", "--compact", "-q")
                out["graph_after"] = _run_child(["graph", str(cfg), str(data)])
            else:
                raise SystemExit(f"unknown phase {phase!r}")
            out[phase + "_done_at"] = time.strftime("%H:%M:%S")
            checkpoint(out)
    finally:
        if server:
            _stop(server[0])
    return out


def _tail_again(out: dict[str, Any], size: int, work: Path, cfg: Path,
                server: tuple[subprocess.Popen[str], int] | None) -> tuple[subprocess.Popen[str], int] | None:
    """The ratio on the last 10 % of copies again: removed by a sync, the index (or server data) copied, put back;
    docvec syncs them onto the index, raw Chroma adds the same records onto the copy (both onto the same 90 %)."""
    copies = copies_of(size)
    head = copies - max(1, round(copies * 0.1))
    for k in range(head, copies):
        shutil.rmtree(work / "docs" / f"copy{k:03}")
    out["tail_removed"] = _cli(cfg, "ingest", "-q", "--yes")  # at small sizes the tail is half the index
    shutil.rmtree(work / "raw", ignore_errors=True)
    server = _copy_for_raw(work, server)
    build_corpus(size, work / "docs", (head, None))
    try:
        out["tail_ingest"] = rest = _run_child(["ingest", str(cfg), str(work / "spool")])
        raw_server = _chroma_server(work / "raw") if server else None
        try:
            out["tail_raw_add"] = raw = _run_child(["raw", str(work / "spool"), str(work / "raw"),
                                                    str(raw_server[1] if raw_server else 0), "append"])
        finally:
            if raw_server:
                _stop(raw_server[0])
    finally:
        shutil.rmtree(work / "spool", ignore_errors=True)
        shutil.rmtree(work / "raw", ignore_errors=True)
    out["write_ratio"] = round(rest["docvec_s"] / raw["seconds"], 3)
    out["store_writes_ratio"] = round(rest["store_add_s"] / raw["seconds"], 3)
    return server


def _copy_for_raw(work: Path, server: tuple[subprocess.Popen[str], int] | None
                  ) -> tuple[subprocess.Popen[str], int] | None:
    """Copy the index (or the server's data, the server stopped) to work/raw; returns the server, restarted on
    the same port: a client keys its keyword index by host and port, and a new port made the tail sync build a
    new one from the server's 1M records (session 21's server 1M tail: 560.8 s beside 204.4 s of adds)."""
    if not server:
        shutil.copytree(work / "index", work / "raw")
        return None
    _stop(server[0])
    shutil.copytree(work / "server", work / "raw")
    return _chroma_server(work / "server", server[1])


def _head_then_tail(out: dict[str, Any], size: int, head_copies: int, work: Path,
                    server: tuple[subprocess.Popen[str], int] | None) -> tuple[Any, Path]:
    """The ratio at `size` from its last copies, without building the raw collection from empty too: docvec
    syncs the head; its index (or the server's data) is copied while nothing holds it; docvec syncs the rest onto
    the original, and raw Chroma then adds the same records onto the copy (the same collection, the same size)."""
    if not head_copies:
        raise SystemExit(f"--tail-from needs at least two copies of SciFact: {size:,} chunks is one")
    head = _run_child(["ingest", str(_config(work, work / "index", server)), "-"])
    server = _copy_for_raw(work, server)
    try:  # the server was restarted here: the caller stops the one it started
        cfg = _config(work, work / "index", server)
        t0 = time.perf_counter()
        out["files"] += build_corpus(size, work / "docs", (head_copies, None))
        out["corpus_s"] = round(out["corpus_s"] + time.perf_counter() - t0, 1)
        out["tail_ingest"] = rest = _run_child(["ingest", str(cfg), str(work / "spool")])
        out["ingest"] = {"docvec_s": round(head["docvec_s"] + rest["docvec_s"], 1), "chunks": rest["chunks"],
                         "store_add_s": round(head["store_add_s"] + rest["store_add_s"], 1),
                         "peak_rss_mb": max(head["peak_rss_mb"], rest["peak_rss_mb"]), "head": head}
    except BaseException:
        if server:
            _stop(server[0])
        raise
    return server, cfg


def _machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": model, "load_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "mem_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)}


def _config(work: Path, index: Path, server: tuple[subprocess.Popen[str], int] | None) -> Path:
    cfg = work / f"config-{index.name}.yaml"
    store = f"  path: {index}\n" + (f"  host: 127.0.0.1\n  port: {server[1]}\n" if server else "")
    cfg.write_text(f"docs:\n  path: {work / 'docs'}\nstore:\n{store}")
    return cfg


def _chroma_server(path: Path, port: int = 0) -> tuple[subprocess.Popen[str], int]:
    """A `chroma run` on the data folder (on `port`, else a free one)."""
    from serve_bench import wait_until_up

    port = port or _port()
    chroma = Path(sys.executable).with_name("chroma")
    proc = subprocess.Popen([str(chroma), "run", "--path", str(path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    wait_until_up(f"http://127.0.0.1:{port}/api/v2/heartbeat", "chroma run", 60)
    return proc, port


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=300)[1] or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        return ""


def _disk_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def _run_child(args: list[str]) -> dict[str, Any]:
    return _measured([sys.executable, __file__, "--child", *args])


def _measured(cmd: list[str]) -> dict[str, Any]:
    """A command's wall seconds, peak RSS and the JSON it printed last (if any)."""
    t0 = time.perf_counter()
    load = round(os.getloadavg()[0], 2)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: setattr(proc, "_err", proc.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    stdout = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    figures: dict[str, Any] = {"wall_s": round(time.perf_counter() - t0, 2),
                               "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "rc": proc.returncode,
                               "load_before": load}
    last = stdout.strip().splitlines()[-1:] if stdout.strip() else []
    if last and last[0].startswith("{"):
        figures.update(json.loads(last[0]))
    if proc.returncode != 0:
        figures["stderr"] = getattr(proc, "_err", "")[-2000:]
        print(cmd, figures, file=sys.stderr, flush=True)
    return figures


def _cli(cfg: Path, *args: str) -> dict[str, Any]:
    docvec = Path(sys.executable).with_name("docvec")
    return _measured([str(docvec), *args, "--config", str(cfg)])


def _keyword(work: Path, cfg: Path) -> dict[str, Any]:
    """A from-scratch build of the keyword index (a new client's wait before its first hybrid answer)."""
    index = work / "index"
    for p in index.glob("keyword-*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    figures = _run_child(["keyword", str(cfg)])
    figures["size_mb"] = sum(_disk_mb(p) for p in index.glob("keyword-*") if p.is_dir())
    return figures


def _other_machine(work: Path, port: int) -> dict[str, Any]:
    """Another machine (its own index folder: lock and keyword index) syncs a 1 % edit; then this one catches up."""
    other = _config(work, work / "other-machine", (None, port))  # type: ignore[arg-type]
    edited = edit_files(work / "docs", 0.01, 2)
    sync = _run_child(["sync", str(other)])
    mine = _config(work, work / "index", (None, port))  # type: ignore[arg-type]
    catch_up = _run_child(["keyword", str(mine)])
    return {"edited_files": edited, "sync": sync, "catch_up": catch_up,
            "full_compare": _run_child(["compare", str(mine)])}


def _serve(cfg: Path, questions: list[str], server: tuple[subprocess.Popen[str], int] | None) -> dict[str, Any]:
    import httpx
    from serve_bench import wait_until_up

    port = _port()
    docvec = Path(sys.executable).with_name("docvec")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(docvec), "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    try:
        wait_until_up(f"{url}/healthz", "docvec serve", 1800)
        out["ready_s"] = round(time.perf_counter() - t0, 1)
        for q in questions[:5]:  # the first searches load the HNSW index and the keyword segments
            httpx.post(f"{url}/search", json={"question": q, "k": 5}, timeout=600).raise_for_status()
        out["first_searches_s"] = round(time.perf_counter() - t0 - out["ready_s"], 1)
        out["idle_rss_mb"] = _rss_mb(proc.pid)
        if server:
            out["chroma_server_rss_mb"] = _rss_mb(server[0].pid)
        for mode in ("vector", "keyword", "hybrid"):
            out[mode] = _latencies(url, questions[5:105], mode)
        out["load"] = _under_load(url, questions, proc.pid)
    finally:
        _stop(proc)
    return out


def _under_load(url: str, questions: list[str], pid: int) -> dict[str, Any]:
    """20 clients x 20 hybrid questions; the server's RSS sampled every 50 ms."""
    import httpx

    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb(pid))
            time.sleep(0.05)

    def client(c: int) -> tuple[list[float], int]:
        times, errors = [], 0
        with httpx.Client(timeout=300) as http:
            for i in range(20):
                t0 = time.perf_counter()
                ok = http.post(f"{url}/search", json={"question": questions[(c * 20 + i) % len(questions)],
                                                       "k": 10}).status_code == 200
                times.append(time.perf_counter() - t0)
                errors += not ok
        return times, errors

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(client, range(20)))
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    times = [t for ts, _ in results for t in ts]
    return {"rss_peak_mb": peak[0], "errors": sum(e for _, e in results), "per_s": round(len(times) / wall, 1),
            **_pct(times)}


# --- children (each in its own process, so its peak RSS is its own) ---------------------------------------------

def _child(args: list[str]) -> None:
    kind, rest = args[0], args[1:]
    figures = {"ingest": _child_ingest, "sync": _child_sync, "raw": _child_raw, "keyword": _child_keyword,
               "compare": _child_compare, "graph": _child_graph}[kind](*rest)
    print(json.dumps(figures), flush=True)


def _settings(cfg: str) -> Any:
    from docvec.config import load_settings

    return load_settings(Path(cfg), {})


def _location(cfg: str) -> Any:
    from docvec.settings import store_location

    return store_location(_settings(cfg))


def _child_graph(cfg: str, data: str) -> dict[str, Any]:
    """The live collection's HNSW slots beside its chunks, from the header in the data folder (the index, or the
    server's own folder: a client cannot read it, the bench can)."""
    from docvec.residue import hnsw_slots
    from docvec.store import Store

    store = Store.open_for_reading(_location(cfg), records=False)
    chunks = store.count()
    found = hnsw_slots(Path(data), str(store._collection.id))
    if found is None:
        return {"collection": store.name, "chunks": chunks}
    return {"collection": store.name, "chunks": chunks, "slots": found.slots, "dead": max(0, found.slots - chunks),
            "memory_mb": round(found.memory_bytes / 2**20, 1)}


def _child_ingest(cfg: str, spool: str) -> dict[str, Any]:
    """docvec's write path from empty; store writes timed and spooled (outside the timing) for the raw add."""
    import numpy as np

    from docvec.store import Store

    if spool != "-":  # "-": time the writes, keep no records
        Path(spool).mkdir(parents=True)
    writes = [0.0, 0.0, 0]  # store add seconds, spool seconds, windows
    original = Store.add

    def add(self: Store, ids: Any, vectors: Any, documents: Any, metadatas: Any) -> None:
        t0 = time.perf_counter()
        original(self, ids, vectors, documents, metadatas)
        t1 = time.perf_counter()
        writes[0] += t1 - t0
        writes[2] += 1
        if spool == "-":
            return
        n = writes[2] - 1
        np.save(Path(spool) / f"{n:05}.npy", np.asarray(vectors, dtype=np.float32))
        (Path(spool) / f"{n:05}.json").write_text(json.dumps([list(ids), list(documents),
                                                              [dict(m) for m in metadatas]]))
        writes[1] += time.perf_counter() - t1

    Store.add = add  # type: ignore[method-assign]
    figures = _sync(cfg, LookupEmbedder())
    figures["store_add_s"] = round(writes[0], 1)
    figures["spool_s"] = round(writes[1], 1)
    figures["windows"] = writes[2]
    figures["docvec_s"] = round(figures["sync_s"] - figures["embed_s"] - writes[1], 1)
    return figures


def _child_sync(cfg: str) -> dict[str, Any]:
    figures = _sync(cfg, LookupEmbedder(fresh=True))
    figures["docvec_s"] = round(figures["sync_s"] - figures["embed_s"], 1)
    return figures


def _sync(cfg: str, embedder: LookupEmbedder) -> dict[str, Any]:
    from docvec.chunker import ChunkParams
    from docvec.ingest.sync import scan_options, sync_index

    settings = _settings(cfg)
    t0 = time.perf_counter()
    report = sync_index(_location(cfg), embedder, scan_options(settings), ChunkParams())  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    embedder.save()
    import resource

    worker_mb = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)  # the chunking worker's
    return {"sync_s": round(seconds, 1), "embed_s": round(embedder.seconds, 1), "chunks": report.chunks_total,
            "worker_peak_rss_mb": worker_mb,
            "chunks_written": report.chunks_written, "files_changed": len(report.files_changed),
            "model_texts": embedder._added}


def _child_raw(spool: str, path: str, port: str, into: str) -> dict[str, Any]:
    """Chroma `add` of the spooled records, 5,000 a call, into a fresh collection or ("append") into the largest
    collection of a copied index (ids as docvec wrote them)."""
    import chromadb
    import numpy as np

    parts = sorted(Path(spool).glob("*.npy"))
    client = chromadb.HttpClient("127.0.0.1", int(port)) if int(port) else chromadb.PersistentClient(path)
    if into == "append":
        collection = max((client.get_collection(c.name, embedding_function=None) for c in client.list_collections()), key=lambda c: c.count())
        before = collection.count()
    else:
        collection = client.create_collection("raw", embedding_function=None,
                                              configuration={"hnsw": {"space": "cosine"}})
        before = 0
    seconds, records, pending = 0.0, 0, ([], [], [], [])  # type: ignore[var-annotated]
    for i, part in enumerate(parts):
        ids, docs, metas = json.loads(part.with_suffix(".json").read_text())
        for bucket, values in zip(pending, (ids, list(np.load(part)), docs, metas)):
            bucket.extend(values)
        while len(pending[0]) >= 5000 or (i == len(parts) - 1 and pending[0]):
            batch = [b[:5000] for b in pending]
            for b in pending:
                del b[:5000]
            t0 = time.perf_counter()
            collection.add(ids=batch[0], embeddings=np.asarray(batch[1]), documents=batch[2], metadatas=batch[3])
            seconds += time.perf_counter() - t0
            records += len(batch[0])
    if int(port) and into != "append":
        client.delete_collection("raw")
    return {"seconds": round(seconds, 1), "records": records, "per_s": round(records / seconds), "onto": before}


def _child_compare(cfg: str) -> dict[str, Any]:
    """What a catch-up cost before the journal: comparing every record with the keyword index."""
    from docvec.keyword import KeywordIndex, keyword_differences
    from docvec.store import Store

    t0 = time.perf_counter()
    store = Store.open(_location(cfg))
    with KeywordIndex.of(store) as keyword:
        missing, extra = keyword_differences(store, keyword)
    return {"seconds": round(time.perf_counter() - t0, 1), "differences": len(missing) + len(extra)}


def _child_keyword(cfg: str) -> dict[str, Any]:
    """Bring this client's keyword index in line with the collection (from nothing, or catching up)."""
    from docvec.keyword import KeywordIndex, sync_keyword_index
    from docvec.store import Store

    t0 = time.perf_counter()
    store = Store.open(_location(cfg))
    with KeywordIndex.of(store) as keyword:
        changed = sync_keyword_index(store, keyword)
    return {"seconds": round(time.perf_counter() - t0, 1), "rows_changed": changed}


if __name__ == "__main__":
    main()
