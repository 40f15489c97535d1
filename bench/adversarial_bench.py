"""Chunking time of a generated adversarial markdown file (issue 12 item 2).

    python bench/adversarial_bench.py [--mb 50] [--profile]
    python bench/adversarial_bench.py --shapes 1     # each construct alone, repeated to 1 MB and 2 MB

The file mixes every construct that once made chunking quadratic — long headings, nested long headings, long
table rows and headers, long list items, long links, long code lines, code blocks of one-character lines — with
ordinary prose between them, repeated up to the size asked. Prints chunking time, tokenizer work and chunk counts.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docvec.chunker import ChunkParams, chunk_markdown  # noqa: E402
from docvec.embedders.builtin import WordPieceCounter, load_tokenizer  # noqa: E402


def _constructs(rng: random.Random) -> list[str]:
    n = rng.randint(2_000, 40_000)
    words = " ".join(rng.choice(["token", "request", "quota", "page", "cell", "item"]) for _ in range(n // 6))
    return [
        "# " + words + "\n\nbody text under a long heading.\n",
        "# A\n\n## " + words + "\n\n### " + words[: n // 2] + "\n\nbody\n",
        "| a | b |\n|---|---|\n| " + words + " | x |\n",
        "| " + words + " | b |\n|---|---|\n| x | y |\n| z | w |\n",
        "- " + words + "\n- b\n",
        "[" + words + "](http://x/" + "p" * (n // 2) + ")\n",
        "```go\n" + "x := 1; " * (n // 8) + "\n```\n",
        "```go\n" + "}\n" * (n // 2) + "```\n",
        "## Prose\n\n" + "\n\n".join(
            " ".join(rng.choice(["The", "server", "rejects", "a", "token", "when", "it", "expires", "."])
                     for _ in range(rng.randint(20, 120))) for _ in range(rng.randint(3, 30))) + "\n",
    ]


def generate(megabytes: float, seed: int = 0) -> str:
    """A markdown text of about `megabytes` MB made of adversarial constructs and prose."""
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < megabytes * 1_000_000:
        for piece in _constructs(rng):
            parts.append(piece + "\n")
            size += len(piece) + 1
    return "".join(parts)


def shapes(megabytes: float) -> dict[str, str]:
    """Files of one small construct repeated to `megabytes` MB: a cost per construct shows up only here."""
    n = int(megabytes * 1_000_000)
    return {
        "headings": "# h\n" * (n // 4),
        "table rows": "| a | b |\n|---|---|\n" + "| x | y |\n" * (n // 10),
        "nested blockquotes": ("> " * 30 + "text here\n") * (n // 70),
        "nested list": "".join("  " * (i % 30) + "- item\n" for i in range(n // 40)),
        "one word": "x" * n + "\n",
        "CJK line": "文档说明" * (n // 12) + "\n",
        "CJK paragraphs": ("文档说明。" * 100 + "\n\n") * (n // 1500),
        "punctuation": "!" * n + "\n",
        "code lines": "```\n" + "a\n" * (n // 2) + "```\n",
        "link definitions": "".join(f"[l{i}]: http://x/{i}\n" for i in range(n // 20)),
        "HTML block": "<div>\n" + "<p>x</p>\n" * (n // 9) + "</div>\n",
        "emphasis": "*a " * (n // 3) + "\n",
    }


def _shapes(megabytes: float) -> None:
    for mb in (megabytes, 2 * megabytes):
        for name, text in shapes(mb).items():
            counter = _Counting()
            t0 = time.perf_counter()
            doc = chunk_markdown(text, counter, ChunkParams())
            print(json.dumps({"shape": name, "megabytes": mb, "seconds": round(time.perf_counter() - t0, 2),
                              "chars_tokenized_per_byte": round(counter.chars / len(text), 2),
                              "chunks": len(doc.chunks), "max_tokens": max(c.tokens for c in doc.chunks)}), flush=True)


class _Tokenizer:
    """The tokenizer, counting the characters it is given."""

    def __init__(self) -> None:
        self.inner = load_tokenizer()
        self.chars = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encode_batch(self, texts: list[str], **kwargs: object) -> object:
        self.chars += sum(len(t) for t in texts)
        return self.inner.encode_batch(texts, **kwargs)


class _Counting:
    """The built-in embedder's counter (each distinct word tokenized once), timed."""

    def __init__(self) -> None:
        self.tokenizer = _Tokenizer()
        self.counter = WordPieceCounter(self.tokenizer)
        self.calls = 0
        self.seconds = 0.0

    @property
    def chars(self) -> int:
        return self.tokenizer.chars

    def __call__(self, texts: Sequence[str]) -> list[int]:
        t0 = time.perf_counter()
        self.calls += 1
        out = self.counter(texts)
        self.seconds += time.perf_counter() - t0
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--shapes", type=float, metavar="MB", help="time each construct alone at MB and 2·MB")
    args = parser.parse_args()
    if args.shapes:
        return _shapes(args.shapes)
    text = generate(args.mb)
    counter = _Counting()
    t0 = time.perf_counter()
    if args.profile:
        profile = cProfile.Profile()
        doc = profile.runcall(chunk_markdown, text, counter, ChunkParams())
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    else:
        doc = chunk_markdown(text, counter, ChunkParams())
    elapsed = time.perf_counter() - t0
    print(json.dumps({
        "megabytes": round(len(text.encode()) / 1e6, 2), "seconds": round(elapsed, 2),
        "counting_seconds": round(counter.seconds, 2), "counter_calls": counter.calls,
        "chars_tokenized_per_byte": round(counter.chars / len(text), 2), "chunks": len(doc.chunks),
        "max_tokens": max(c.tokens for c in doc.chunks),
    }))


if __name__ == "__main__":
    main()
