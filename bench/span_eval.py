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
from docvec.query.hits import Fusion, Hit  # noqa: E402
from docvec.query.search import search  # noqa: E402
from docvec.query.spans import point  # noqa: E402

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


def ranges(hits: list[Hit], source: str, pointed: bool) -> tuple[Ranges, int]:
    """Char ranges returned in the answer's file, and the characters returned elsewhere."""
    own, other = [], 0
    for h in hits:
        start = int(h.metadata.get("start_char", 0))
        a, b = (start + h.answer_span[0], start + h.answer_span[1]) if pointed and h.answer_span else \
            (start, int(h.metadata.get("end_char", start + len(h.text))))
        if h.source == source:
            own.append((a, b))
        else:
            other += b - a
    return own, other


def evaluate(store: Store, keyword: KeywordIndex, embedder: object, corpora: Path, questions: list[dict[str, object]],
             mode: str, per_file: int) -> dict[str, float]:
    totals = {"found@5": 0.0, "chunk recall@5": 0.0, "chunk IoU@5": 0.0, "span recall@5": 0.0, "span IoU@5": 0.0}
    unstable = 0
    for q in questions:
        question, source = str(q["query"]), str(q["relevant"][0])  # type: ignore[index]
        first, last = q["answer_lines"]  # type: ignore[misc]
        hits = search(store, embedder, question, 5, -1.0, None, mode, keyword, FUSION, None,  # type: ignore[arg-type]
                      per_file)
        pointed = point(hits, question, embedder if SPANS == "model" else None)  # type: ignore[arg-type]
        for k in (10, 20, 100):
            deeper = search(store, embedder, question, k, -1.0, None, mode, keyword, FUSION, None,  # type: ignore[arg-type]
                            per_file)
            if [h.id for h in deeper[:5]] != [h.id for h in hits]:
                unstable += 1
                break
        answer = answer_range(line_starts(corpora / source), first, last)
        for kind, use in (("chunk", False), ("span", True)):
            own, other = ranges(pointed, source, use)
            got = overlap(answer, own)
            size = answer[1] - answer[0]
            total = sum(b - a for a, b in merged(own)) + other
            totals[f"{kind} recall@5"] += got / size
            totals[f"{kind} IoU@5"] += got / (total + size - got)
        totals["found@5"] += any(overlap(answer, [r]) > 0 for r in ranges(hits, source, False)[0])
    out = {k: round(v / len(questions), 4) for k, v in totals.items()}
    out["questions whose top 5 changes with k"] = unstable
    return out


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
    with KeywordIndex.of(store, read_only=True) as keyword:
        for per_file in ns.per_file:
            t0 = time.perf_counter()
            name = f"{ns.mode} per_file={per_file} spans={ns.spans} file_penalty={ns.file_penalty}"
            results[name] = evaluate(store, keyword, embedder, ns.corpora, questions, ns.mode, per_file)
            print(f"{name} ({time.perf_counter() - t0:.0f} s):", json.dumps(results[name]))
    other = "" if ns.file_penalty == Fusion.file_penalty else f"-file-penalty-{ns.file_penalty}"
    out = HERE / "results" / f"span-eval-{ns.mode}-{ns.spans}{other}.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
