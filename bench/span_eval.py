"""Do hits point at the answer? Span recall@5 and IoU@5 of whole chunks vs pointed spans, and order stability.

    python bench/span_eval.py [--corpora ../shared/corpora] [--mode hybrid] [--per-file 0 1 2 3]

Indexes the three corpora of ../shared/corpora as one docs folder (once; kept in bench/results/corpora-index), then
asks the 68 span-labelled questions of bench/spans/questions.jsonl. Each names a file and the exact lines of the
answer. With R the characters returned by the top 5 (whole chunks, or only their pointed spans) and A the answer's:
recall@5 = |A ∩ R| / |A|, IoU@5 = |A ∩ R| / (|R| + |A \\ R|) (Chroma's chunking-evaluation definition), found@5 = the
answer overlaps a returned chunk. Also counts the questions whose top n changes when -k grows.
Writes bench/results/span-eval.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from docvec.cli import load  # noqa: E402
from docvec.settings import store_location  # noqa: E402
from docvec.embedders import make_embedder  # noqa: E402
from docvec.keyword import KeywordIndex  # noqa: E402
from docvec.store import Store  # noqa: E402
try:
    from docvec.query.hits import Fusion, Hit  # noqa: E402
    from docvec.query.search import search  # noqa: E402
    from docvec.query.spans import point  # noqa: E402
except ImportError:  # a checkout from before the one-package layout (to measure "before")
    from query.search import Fusion, Hit, search  # type: ignore[no-redef]  # noqa: E402
    from query.spans import point  # type: ignore[no-redef]  # noqa: E402

Ranges = list[tuple[int, int]]
SPANS = "words"
FUSION = Fusion()


def line_starts(path: Path) -> list[int]:
    text = path.read_text(encoding="utf-8")
    starts, at = [0], 0
    for line in text.splitlines(keepends=True):
        at += len(line)
        starts.append(at)
    return starts


def answer_range(starts: list[int], first: int, last: int) -> tuple[int, int]:
    return starts[first - 1], starts[last] - 1  # without the last line's newline


def merged(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlap(a: tuple[int, int], ranges: Ranges) -> int:
    return sum(max(0, min(a[1], b) - max(a[0], s)) for s, b in ranges)


def ranges(hits: list[Hit], source: str, pointed: bool, corpora: Path) -> tuple[Ranges, int]:
    """Char ranges returned in the answer's file, and the characters returned elsewhere (a pointed span counted as
    its whole lines in the file: chunk text is not a byte-exact slice of it)."""
    own, other = [], 0
    for h in hits:
        start = int(h.metadata.get("start_char", 0))
        if pointed and h.answer_lines:
            a, b = answer_range(line_starts(corpora / h.source), *h.answer_lines)
        else:
            a, b = start, int(h.metadata.get("end_char", start + len(h.text)))
        if h.source == source:
            own.append((a, b))
        else:
            other += b - a
    return own, other


def evaluate(store: Store, keyword: KeywordIndex, embedder: object, corpora: Path, questions: list[dict[str, object]],
             mode: str, per_file: int, times: list[float] | None = None) -> dict[str, float]:
    totals = {"hit@1": 0.0, "hit@5": 0.0, "top-1 answer lines contain the answer": 0.0,
              "top-1 answer lines overlap the answer": 0.0, "top-1 line IoU": 0.0, "found@5": 0.0,
              "chunk recall@5": 0.0, "chunk IoU@5": 0.0, "span recall@5": 0.0, "span IoU@5": 0.0}
    unstable = 0
    for q in questions:
        question, source = str(q["query"]), str(q["relevant"][0])  # type: ignore[index]
        first, last = q["answer_lines"]  # type: ignore[misc]
        hits = search(store, embedder, question, 5, -1.0, None, mode, keyword, FUSION, None,  # type: ignore[arg-type]
                      per_file)
        t0 = time.perf_counter()
        pointed = point(hits, question, embedder if SPANS == "model" else None)  # type: ignore[arg-type]
        if times is not None:
            times.append(time.perf_counter() - t0)
        _top_one(totals, pointed, source, first, last)  # type: ignore[arg-type]
        for k in (10, 20, 100):
            deeper = search(store, embedder, question, k, -1.0, None, mode, keyword, FUSION, None,  # type: ignore[arg-type]
                            per_file)
            if [h.id for h in deeper[:5]] != [h.id for h in hits]:
                unstable += 1
                break
        answer = answer_range(line_starts(corpora / source), first, last)
        for kind, use in (("chunk", False), ("span", True)):
            own, other = ranges(pointed, source, use, corpora)
            got = overlap(answer, own)
            size = answer[1] - answer[0]
            total = sum(b - a for a, b in merged(own)) + other
            totals[f"{kind} recall@5"] += got / size
            totals[f"{kind} IoU@5"] += got / (total + size - got)
        totals["found@5"] += any(overlap(answer, [r]) > 0 for r in ranges(hits, source, False, corpora)[0])
    out = {k: round(v / len(questions), 4) for k, v in totals.items()}
    out["questions whose top 5 changes with k"] = unstable
    return out


def _top_one(totals: dict[str, float], hits: list[Hit], source: str, first: int, last: int) -> None:
    """File hits, and how the top hit's answer lines (what is printed in bold) cover the labelled lines."""
    totals["hit@1"] += bool(hits) and hits[0].source == source
    totals["hit@5"] += any(h.source == source for h in hits)
    if not hits or hits[0].source != source or not hits[0].answer_lines:
        return
    a, b = hits[0].answer_lines
    shared = max(0, min(b, last) - max(a, first) + 1)
    totals["top-1 answer lines contain the answer"] += a <= first and b >= last
    totals["top-1 answer lines overlap the answer"] += shared > 0
    totals["top-1 line IoU"] += shared / (max(b, last) - min(a, first) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--per-file", type=int, nargs="*", default=[0, 1, 2, 3])
    parser.add_argument("--spans", choices=["words", "model"], default="words")
    parser.add_argument("--file-penalty", type=float, default=Fusion.file_penalty)
    ns = parser.parse_args()
    global SPANS, FUSION
    SPANS, FUSION = ns.spans, Fusion(file_penalty=ns.file_penalty)
    config = HERE / "results" / "corpora.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(f"docs:\n  path: {ns.corpora.resolve()}\nstore:\n  path: {HERE / 'results' / 'corpora-index'}\n"
                      "  collection: corpora\n")
    subprocess.run([sys.executable, "-m", "docvec.cli", "ingest", "--config", str(config), "-q"], check=True)
    settings = load(config, {})
    store = Store.open_for_reading(store_location(settings))
    embedder = make_embedder(settings.embedding)
    questions = [json.loads(line) for line in (HERE / "spans" / "questions.jsonl").read_text().splitlines() if line]
    results = {}
    kinds = {"all": questions, "paragraph (s01-s68)": [q for q in questions if q.get("kind", "paragraph") == "paragraph"],
             "introduced block (c01-c92)": [q for q in questions if q.get("kind", "paragraph") != "paragraph"]}
    with KeywordIndex.of(store, read_only=True) as keyword:
        for per_file in ns.per_file:
            for kind, asked in kinds.items():
                t0 = time.perf_counter()
                times: list[float] = []
                name = f"{ns.mode} per_file={per_file} spans={ns.spans} file_penalty={ns.file_penalty} [{kind}]"
                results[name] = evaluate(store, keyword, embedder, ns.corpora, asked, ns.mode, per_file, times)
                times.sort()
                results[name]["questions"] = len(asked)
                results[name]["pointing ms p50"] = round(1000 * times[len(times) // 2], 1)
                results[name]["pointing ms p95"] = round(1000 * times[int(0.95 * (len(times) - 1))], 1)
                print(f"{name} ({time.perf_counter() - t0:.0f} s):", json.dumps(results[name]), flush=True)
    other = "" if ns.file_penalty == Fusion.file_penalty else f"-file-penalty-{ns.file_penalty}"
    out = HERE / "results" / f"span-eval-{ns.mode}-{ns.spans}{other}.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
