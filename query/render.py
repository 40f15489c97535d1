"""How `docvec query` prints hits: the text view, one line per file, or JSON lines.

The hits are the JSON form a server sends (`Hit.as_dict`), so the warm client prints a server's answer without
building objects, and the in-process path prints its own hits the same way. Standard library only, no click: the
warm client must not pay for importing it (bench/README.md).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

from docvec.text import json_safe, one_line, printable

TYPE_CHECKING = False  # typing costs ~7 ms to import: this module is on the warm client's path (query/client.py)
if TYPE_CHECKING:
    from typing import Any, TextIO

    HitDict = dict[str, Any]



class Printer:
    """Lines to stdout, notes to stderr, every line made printable; bold only on a terminal (and not under
    NO_COLOR), as click.echo strips styles from anything else."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout  # None when the stream was closed at start (`docvec query x >&-`)
        self.err = err or sys.stderr
        self.styled = self.out is not None and self.out.isatty() and not os.environ.get("NO_COLOR")

    def line(self, text: str = "", err: bool = False) -> None:
        stream = self.err if err else self.out
        if stream is not None:
            stream.write(printable(text) + "\n")

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.styled else text

    def json(self, data: Any) -> None:
        """One JSON object on one line; control characters as \\u escapes (nothing a terminal acts on)."""
        if self.out is not None:
            self.out.write(json_safe(json.dumps(data, ensure_ascii=False, default=str, allow_nan=False)) + "\n")


class View:
    """How hits are printed, and the docs folder their paths are shown under."""

    def __init__(self, explain: bool, as_json: bool, files_only: bool, docs_root: str | os.PathLike[str]) -> None:
        self.explain, self.as_json, self.files_only = explain, as_json, files_only
        self.docs_root = os.fspath(docs_root)

    def of_index(self, recorded: str | None) -> "View":
        """The view with paths under the folder the index was built from (an index of another folder than the
        configured one shows its own files, not paths that do not exist)."""
        return View(self.explain, self.as_json, self.files_only, recorded) if recorded else self

    def show(self, hits: list[HitDict], printer: Printer) -> None:
        if self.as_json:
            for hit in hits:
                printer.json(hit)
        elif self.files_only:
            for hit in hits:
                printer.line(f"{hit['score']:.3f}  {one_line(self.path(hit))}:{hit['line']}  {one_line(hit['label'])}")
        else:
            _render(hits, self, printer)

    def path(self, hit: HitDict) -> str:
        """The hit's file as a path from the current folder (clickable in terminals and editors)."""
        full = os.path.join(self.docs_root, hit["source"])
        try:
            shown = os.path.relpath(full)
        except ValueError:  # another drive (Windows)
            return str(full)
        return shown if len(shown) <= len(str(full)) else str(full)


def _render(hits: list[HitDict], view: View, printer: Printer) -> None:
    if not hits:
        printer.line("no results (try a lower --min-score or fewer --where filters)", err=True)
        return
    width = max(40, min(_columns(), 120))
    for hit in hits:  # document text and names are neutralised: a document must not drive the terminal
        printer.line(f"{hit['rank']}. {hit['score']:.3f}  " + printer.bold(one_line(hit["label"])))
        first, last = hit.get("answer_lines") or (hit["line"], hit["end_line"])
        place = f"{first}" if first == last else f"{first}-{last}"
        printer.line(f"   {one_line(view.path(hit))}:{place}" + _also(hit))
        if view.explain:
            printer.line("   " + _explanation(hit))
        for line in _excerpt(hit, width - 3):
            printer.line("   " + (printer.bold(line) if hit.get("answer_span") else line))
        printer.line()


def _excerpt(hit: HitDict, width: int, max_lines: int = 10) -> list[str]:
    """The pointed lines (else the chunk's first ones): code, table, quote and template lines kept as lines (cut
    at the width), prose reflowed into paragraphs."""
    start, end = hit.get("answer_span") or (0, len(hit["text"]))
    start = hit["text"].rfind("\n", 0, start) + 1  # from the start of its line: code keeps its indentation
    out: list[str] = []
    paragraph: list[str] = []
    fence = _inside_fence(hit["text"][:start])  # lines pointed at inside a code block are code

    def flush() -> None:
        if paragraph:
            out.extend(textwrap.wrap(" ".join(paragraph), width))
            paragraph.clear()
    for raw in hit["text"][start:end].splitlines():
        line = printable(raw.rstrip())
        literal = fence or line.lstrip().startswith(_LITERAL) or line.startswith(("    ", "\t"))
        if _is_fence(line):
            fence = not fence
        if literal or not line.strip() or line.lstrip().startswith(("- ", "* ", "#")) or line[:3].rstrip(".").isdigit():
            flush()
            if line.strip():
                out.append(line if len(line) <= width else line[:width - 1] + "…")
            if not literal and line.strip() and not line.lstrip().startswith("#"):
                out.pop()
                paragraph.append(line.strip())  # a list item starts its own paragraph
        else:
            paragraph.append(line.strip())
    flush()
    return out if len(out) <= max_lines else out[:max_lines - 1] + [out[max_lines - 1] + " …"]


# Lines printed as they are, never joined into a paragraph: fences, tables, quotes and callouts (> [!NOTE]),
# template and shortcode lines ({{< >}}, {% %}), HTML and JSX tags.
_LITERAL = ("```", "~~~", "|", ">", "{{", "{%", "<")


def _is_fence(line: str) -> bool:
    return line.lstrip().startswith(("```", "~~~"))


def _inside_fence(before: str) -> bool:
    """Whether text that follows `before` is inside a fenced code block (an odd number of fence lines before,
    counted as the excerpt counts them, so the two agree)."""
    return sum(map(_is_fence, before.splitlines())) % 2 == 1


def _also(hit: HitDict) -> str:
    also = hit.get("also") or []
    if not also:
        return ""
    more = f" and {len(also) - 1} more" if len(also) > 1 else ""
    return f"  (same text at {one_line(also[0]['source'])}:{also[0]['line']}{more})"


def _explanation(hit: HitDict) -> str:
    similarity, counted, bm25 = hit.get("similarity"), hit.get("similarity_counted"), hit.get("keyword_score")
    sim = "-" if similarity is None else f"{similarity:.3f}"
    if counted is not None:
        sim += f" (counted as {counted:.3f}: the vector index's search missed it)"
    kw = "-" if bm25 is None else f"{bm25:.2f}"
    lowered = f" · -{hit['penalty']:.3f} for hits of its file above" if hit.get("penalty") else ""
    return (f"similarity {sim} (vector rank {hit.get('vector_rank') or '-'}) · bm25 {kw} "
            f"(keyword rank {hit.get('keyword_rank') or '-'}){lowered} · chunk lines {hit['line']}-{hit['end_line']}")


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size((100, 20)) gives it ($COLUMNS first), without importing
    shutil (its archive modules are a tenth of the warm client's imports)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 100  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 100
