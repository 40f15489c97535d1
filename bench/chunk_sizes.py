"""How chunks come out on real docs: share under min_tokens, single-line code crumbs, tokens per chunk.

    python bench/chunk_sizes.py [../shared/corpora] [--out bench/results/chunk-sizes.json]

Runs this checkout's chunker (default chunking settings, the built-in model's tokenizer) over every markdown file of
each corpus; nothing is embedded. Run it from another checkout (a git worktree) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from docvec.chunker import ChunkParams, chunk_markdown  # noqa: E402
from docvec.embedders.builtin import BuiltinEmbedder  # noqa: E402

CRUMB = re.compile(r"\A\s*(```|~~~)[^\n]*\n[^\n]*\n\s*(```|~~~)\s*\Z")  # a fence holding one line


def corpus_figures(root: Path, count: BuiltinEmbedder, params: ChunkParams) -> dict[str, float]:
    tokens: list[int] = []
    crumbs = whole_files = 0
    for path in sorted(root.rglob("*.md")):
        doc = chunk_markdown(path.read_text(encoding="utf-8", errors="replace"), count.count_tokens, params)
        tokens.extend(c.tokens for c in doc.chunks)
        crumbs += sum(1 for c in doc.chunks if CRUMB.match(c.text))
        whole_files += len(doc.chunks) == 1 and doc.chunks[0].tokens < params.min_tokens
    small = sum(1 for t in tokens if t < params.min_tokens)
    return {"chunks": len(tokens), "under_min_tokens": small, "under_min_share": round(small / len(tokens), 4),
            "of_them_whole_files": whole_files,  # a file smaller than min_tokens has nothing to merge with
            "under_min_share_in_larger_files": round((small - whole_files) / len(tokens), 4),
            "one_line_code_chunks": crumbs, "median_tokens": statistics.median(tokens)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="?", type=Path, default=HERE.parent.parent / "shared" / "corpora")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "chunk-sizes.json")
    ns = parser.parse_args()
    count, params = BuiltinEmbedder(threads=1), ChunkParams()
    figures = {d.name: corpus_figures(d, count, params) for d in sorted(ns.corpora.iterdir()) if d.is_dir()}
    ns.out.parent.mkdir(exist_ok=True)
    ns.out.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
