"""Markdown -> chunks, a pure function of (text, token counter, parameters).

Structure comes from pulldown-cmark (CommonMark + tables, through pyromark): a document is cut into sections at
headings, sections into blocks (paragraph, list, fence, table, ...), and only a block that alone exceeds the limit
is cut further: lines, then sentences, then words, then characters. A split code fence repeats its fence lines and a
split table its header, so each piece is still valid markdown. Sizes are measured with the model's own tokenizer on
the exact text that will be embedded, so no chunk is ever truncated by the model.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import math
import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from itertools import accumulate, chain, islice, repeat
from typing import Any, Callable, Iterable, Iterator, Sequence

import yaml

from docvec.text import valid_text

CHUNKER_VERSION = "7"  # 2: long headings capped in context, split code blocks packed; 3: TOML/JSON front
# matter, description-only pages, MDX; 4: pulldown-cmark's blocks (markdown-it's differed on rare HTML/table cases);
# 5: chunk text capped at CHARS_PER_TOKEN characters per token of the limit; 6: a description-only page's
# description cut to the limits too; 7: a title is front matter's or a heading that opens the document (a
# heading deep in a file labelled every chunk before it), HTML comments blanked, lines without trailing spaces,
# a description is a chunk of a page with a body too
#: Counts model tokens (special tokens included) of each text in a batch. Counts must add up across ASCII
#: whitespace: count(a + w + b) = count(a) + count(b) - count("") when w holds a space, tab, CR or LF. Word-piece
#: tokenizers, whose words never span whitespace, do (tests/test_embedder.py checks the built-in one). Each
#: character of ISOLATED must count at least one token: BERT's word-pieces split punctuation and CJK ideographs off
#: one by one.
TokenCounter = Callable[[Sequence[str]], list[int]]
Scalar = str | int | float | bool
_Span = tuple[int, int, int, bool]  # (start char, end char, model tokens without special tokens, count exact)
_NO_SPAN: _Span = (-1, -1, 0, False)  # after the last span

_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)(?:\r?\n)?^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S | re.M)
_TOML_FRONT_MATTER = re.compile(r"\A\+\+\+[ \t]*\r?\n(.*?)(?:\r?\n)?^\+\+\+[ \t]*(?:\r?\n|\Z)", re.S | re.M)
_SUMMARY_KEYS = ("description", "summary", "excerpt")  # front-matter prose that says what a page is about
# Keys whose comma-separated text is a list: `keywords: cache, cdn` is filtered by membership like `tags: [a, b]`
_LIST_KEYS = frozenset({"tags", "keywords", "categories", "aliases", "authors", "series"})
MAX_FRONT_MATTER_DEPTH = 4  # nested tables deeper than this are not flattened into filterable keys
_NEWLINE = re.compile(r"\r\n|\r|\n")
# Finer and finer places to cut a block that is too big on its own.
_LINES = re.compile(r"\n")
_SPLITTERS = (re.compile(r"\n[ \t]*\n"), _LINES, re.compile(r"(?<=[.!?;:])\s+"))  # cut where they match
_LINE = re.compile(r"\S(?:[^\n]*\S)?")  # a line without its surrounding whitespace (as _trim would leave it)
_LINE_BREAKS = "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # where str.splitlines cuts
_LINE_BREAK = re.compile("\r\n|[" + _LINE_BREAKS + "]")
# Then pieces are runs of up to eight words, then single words (a 5 MB line is ~120k runs, not ~1M words).
_WORDS = (re.compile(r"\S+(?:\s+\S+){0,7}"), re.compile(r"\S+"))
_MAX_FRONT_MATTER = 64 * 1024
_BREAK_CHARS = " \t\n\r"  # whitespace that token counts add up across (see TokenCounter)
_BREAK = re.compile(f"[{_BREAK_CHARS}]")
_PIECE_TOKENS = 32  # word-level pieces are grouped up to this size (overlap granularity stays fine)
_COUNT_BATCH = 8192  # pieces of one level counted per tokenizer call
_EMIT_BATCH = 64  # groups of a section emitted at once (one tokenizer call for those not summed exactly)
_ATTR_LIST = re.compile(r"\s*\{\s*[#.][^{}]*\}\s*$")
MAX_HEADING_CHARS = 200  # a heading longer than this is cut in trails and labels (its full text stays in the chunk)
CONTEXT_SHARE = 4  # the heading context prepended to a chunk takes at most max_tokens / CONTEXT_SHARE tokens
# A chunk's text has at most max_tokens * CHARS_PER_TOKEN characters. Real prose and code take 3-8 per token (the
# three sample corpora: at most 7.7), but a word over 100 characters is one [UNK] token, so a 5 MB run of letters
# (a base64 blob, a generated file) was one 5 MB chunk, sent whole to every client that searched.
CHARS_PER_TOKEN = 16
# Characters a word-piece tokenizer makes a token of on their own, whatever surrounds them: ASCII and common
# Unicode punctuation, CJK ideographs (a subset of BERT's is enough: it only proves a text too long without counting).
ISOLATED = re.compile("[!-/:-@\\[-`{-~\u2010-\u2027\u2030-\u2043\u2045-\u2051\u2053-\u205e\u3001-\u3003\u3008-\u3011"
                      "\u3014-\u301f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff01-\uff03\uff05-\uff0a\uff0c-\uff0f"
                      "\uff1a\uff1b\uff1f\uff20\uff3b-\uff3d\uff3f\uff5b\uff5d\uff5f-\uff65]")
_WINDOW = 2_000  # sections counted in one batch and packed before the next ones are read
_CACHE_LIMIT = 200_000  # token counts kept (texts of blocks, contexts, pieces) before they are forgotten


@dataclass(frozen=True)
class ChunkParams:
    """Chunking limits, all in model tokens (special tokens and heading context included)."""

    max_tokens: int = 256
    min_tokens: int = 48
    overlap_tokens: int = 32
    heading_context: bool = True


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, with where it came from."""

    text: str  # markdown as shown to users: the source slice (a split fence/table gets its fence/header back)
    embed_text: str  # what the model embeds: heading context + text
    trail: tuple[str, ...]  # heading trail, outermost first
    shown: tuple[str, ...]  # the part of the trail prepended to embed_text (headings not already in text)
    start_char: int  # [start_char, end_char) in the file's text
    end_char: int
    start_line: int  # 1-based, inclusive
    end_line: int
    tokens: int  # model tokens of embed_text, special tokens included


@dataclass(frozen=True)
class ParsedDocument:
    """A markdown file's front matter, title and chunks."""

    front_matter: dict[str, Scalar | list[str]]
    title: str | None
    chunks: list[Chunk]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)  # slots: a block of a million lines is a million units
class _Unit:
    """A span that is packed whole; `head`/`tail` re-open/close a block that was split."""

    start: int
    end: int
    cost: int
    group: int  # pieces of one split block share a group (>= 0); whole blocks have -1
    head: str = ""
    tail: str = ""
    exact: bool = True  # `cost` is the exact count (else an estimate: the chunk is counted when emitted)


@dataclass(slots=True)
class _Merged:
    """A chunk that is a plain slice of the file (a section made whole, or chunks merged into one), built into a
    Chunk when nothing more merges into it."""

    start_char: int
    end_char: int
    trail: tuple[str, ...]
    shown: tuple[str, ...]
    tokens: int


@dataclass
class _Section:
    trail: tuple[str, ...]
    has_heading: bool
    blocks: list[tuple[int, int, str, dict[str, str]]]  # (start, end, kind, info)
    heading_at: int = -1  # where the heading's text starts (-1: no heading)


def chunk_markdown(text: str, count_tokens: TokenCounter, params: ChunkParams) -> ParsedDocument:
    """Split a markdown document into chunks that each fit `params.max_tokens` model tokens."""
    front, body_start, warnings = _front_matter(text)
    text = text[:body_start] + blank_comments(text[body_start:])
    title = _title_of(front.get("title"))
    # A page's description says what the page is about in the words people search with: it is a chunk of its
    # own (pointing at the front matter) whether or not the page has a body (a section page has only that).
    summary = _summary_chunks(text, front, title, body_start, count_tokens, params) if _summary(front) else []
    if not text[body_start:].strip():
        return ParsedDocument(front, title, summary, warnings)
    starts = _line_starts(text)
    first_h1: list[str] = []
    sections = _noting_first_h1(_sections(text, body_start, starts), first_h1)
    chunks = _Packer(text, count_tokens, params, starts).pack(sections)
    return ParsedDocument(front, title or next(iter(first_h1), None), summary + chunks, warnings)


def _title_of(value: object) -> str | None:
    """A front-matter title as a label: one line, cut like a heading; None unless it is text or a number (a list or
    a mapping is no title, and 64 KB of title must not be repeated in every chunk's label)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return _heading_text(str(value)) or None


def has_body(text: str) -> bool:
    """Whether the document has text to index: a body besides HTML comments (chunk_markdown blanks them), or a
    front-matter description standing in for one."""
    front, body_start, _ = _front_matter(text)
    return bool(blank_comments(text[body_start:]).strip()) or bool(_summary(front))


def _summary(front: dict[str, Scalar | list[str]]) -> str:
    return " ".join(str(front[k]).strip() for k in _SUMMARY_KEYS if isinstance(front.get(k), str) and
                    str(front[k]).strip())


def _summary_chunks(text: str, front: dict[str, Scalar | list[str]], title: str | None, end: int,
                    count_tokens: TokenCounter, params: ChunkParams) -> list[Chunk]:
    """Title + description of a page whose body is empty, cut like any paragraph where it is over the limits (a
    64 KiB description was one chunk the model truncated), the title as the heading of the pieces after the first;
    every chunk points at the front matter's lines."""
    shown = f"{title}\n\n{_summary(front)}" if title else _summary(front)
    lines = text.count("\n", 0, max(end - 1, 0)) + 1
    trail = (title,) if title else ()
    section = _Section(trail, bool(title), [(0, len(shown), "paragraph", {})], 0 if title else -1)
    pieces = _Packer(shown, count_tokens, params, _line_starts(shown)).pack([section])
    return [Chunk(c.text, c.embed_text, c.trail, c.shown, 0, end, 1, lines, c.tokens) for c in pieces]


def chunk_id(source: str, chunk: Chunk, occurrence: int) -> str:
    """Deterministic id: same file, same heading trail, same text, same occurrence -> same id."""
    key = "\0".join((source, " > ".join(chunk.trail), chunk.text, str(occurrence)))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def chunk_ids(source: str, chunks: Sequence[Chunk]) -> list[str]:
    """Ids for a document's chunks; identical chunks in one file are told apart by occurrence."""
    seen: dict[tuple[tuple[str, ...], str], int] = {}
    ids = []
    for chunk in chunks:
        key = (chunk.trail, chunk.text)
        seen[key] = seen.get(key, -1) + 1
        ids.append(chunk_id(source, chunk, seen[key]))
    return ids


def content_hash(embed_text: str) -> str:
    """Hash of exactly what the model embeds: equal hashes mean equal vectors under one fingerprint."""
    return hashlib.sha256(embed_text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# --- MDX -----------------------------------------------------------------------------------------------------

_FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})")  # matched at a line's start (no ^: also at a position)
_ESM_LINE = re.compile(r"^(import|export)\s")
_JSX_TAG = re.compile(r"</?[A-Z][\w.]*(?:\s+(?:[^<>\"'{}]|\"[^\"]*\"|'[^']*'|\{[^{}]*\})*)?/?>|\{/\*.*?\*/\}")


def mdx_to_markdown(text: str) -> str:
    """MDX as markdown: import/export lines and JSX component tags (capitalised: <Tabs>, <Card title="x" />, also
    over several lines) and {/* comments */} are blanked, their text children kept; fenced code untouched. Every
    removed character becomes a space, so lines and offsets stay those of the file."""
    return _outside_fences(text, lambda run: _JSX_TAG.sub(lambda m: _blank(m.group()), _blank_esm(run)))


def _blank_esm(run: str) -> str:
    """import/export lines blanked; an ESM block runs to the next blank line (MDX)."""
    out: list[str] = []
    in_esm = False
    for line in run.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        in_esm = bool(_ESM_LINE.match(body) or (in_esm and body.strip()))
        out.append(_blank(body) + line[len(body):] if in_esm else line)
    return "".join(out)


# An HTML comment, unless inside an inline code span (`<!--more-->` written about, not used); the code span is
# matched first and kept.
_COMMENT = re.compile(r"(`+)[^`\n]*?\1|<!--.*?-->", re.S)


def blank_comments(text: str) -> str:
    """HTML comments (template instructions, `<!-- TODO -->`) are not content: blanked outside fenced and inline
    code, every character but a newline a space, so lines and offsets stay the file's (the chunk text drops the
    blank space, see _tidy)."""
    if "<!--" not in text:
        return text
    return _outside_fences(text, lambda run: _COMMENT.sub(lambda m: m.group() if m.group(1) else _blank(m.group()),
                                                          run))


def _outside_fences(text: str, transform: Callable[[str], str]) -> str:
    """`transform` applied to each run of lines outside fenced code blocks (fences and their code untouched)."""
    out: list[str] = []
    run: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        opener = _FENCE_LINE.match(line)
        if fence is None and not opener:
            run.append(line)
            continue
        if run:
            out.append(transform("".join(run)))
            run = []
        if fence is None:
            fence = opener.group(1) if opener else None
        elif opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
            fence = None
        out.append(line)
    if run:
        out.append(transform("".join(run)))
    return "".join(out)


def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _tidy(text: str) -> str:
    """Chunk text as shown and embedded: each line without trailing whitespace (blanked comments and tags leave
    runs of spaces; lines stay where they were)."""
    return "\n".join(line.rstrip() for line in text.split("\n"))


# --- front matter -------------------------------------------------------------------------------------------


def _front_matter(text: str) -> tuple[dict[str, Scalar | list[str]], int, list[str]]:
    """(fields, where the body starts, warnings) for YAML (---), TOML (+++) or JSON ({...}) front matter."""
    yaml_match, toml_match = _FRONT_MATTER.match(text), _TOML_FRONT_MATTER.match(text)
    match = yaml_match or toml_match
    if match is None:
        return _json_front_matter(text)
    if len(match.group(1)) > _MAX_FRONT_MATTER:
        return {}, match.end(), [f"front matter over {_MAX_FRONT_MATTER // 1024} KiB ignored"]
    try:
        data = yaml.safe_load(match.group(1)) if yaml_match else tomllib.loads(match.group(1))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "malformed YAML"
        return {}, match.end(), [f"front matter ignored: {problem}"]
    except tomllib.TOMLDecodeError as exc:
        return {}, match.end(), [f"front matter ignored: malformed TOML ({exc})"]
    return _fields(data, match.end())


def _json_front_matter(text: str) -> tuple[dict[str, Scalar | list[str]], int, list[str]]:
    """Hugo's JSON front matter: an object opening the file, closed by a `}` that ends its line."""
    if not text.startswith("{"):
        return {}, 0, []
    try:
        data, end = json.JSONDecoder().raw_decode(text[:_MAX_FRONT_MATTER])
    except ValueError:
        return {}, 0, []  # a file that merely starts with "{" is text
    newline = text.find("\n", end)
    line_end = len(text) if newline < 0 else newline
    if not isinstance(data, dict) or text[end:line_end].strip():  # the closing brace must end its line
        return {}, 0, []
    return _fields(data, line_end + 1 if newline >= 0 else len(text))


def _fields(data: Any, body_start: int) -> tuple[dict[str, Scalar | list[str]], int, list[str]]:
    if data is None:
        return {}, body_start, []
    if not isinstance(data, dict):
        return {}, body_start, ["front matter ignored: not a mapping of keys"]
    return _scalar_fields(data), body_start, []


def _scalar_fields(data: dict[Any, Any], prefix: str = "", depth: int = 0) -> dict[str, Scalar | list[str]]:
    """Keep what a vector store can filter on: scalars, lists of scalars as lists of strings, and the keys of nested
    tables flattened with dots (Hugo's `params.hidden`, Zola's `[extra] release` -> `extra.release`)."""
    out: dict[str, Scalar | list[str]] = {}
    for key, value in data.items():
        name = _storable(f"{prefix}{key}")
        if isinstance(value, (datetime.date, datetime.datetime)):
            value = value.isoformat()
        if isinstance(value, str) and name.rsplit(".", 1)[-1].lower() in _LIST_KEYS and "," in value:
            value = [v.strip() for v in value.split(",")]  # `keywords: a, b, c` matches by membership, as a list
        if isinstance(value, (str, int, float, bool)):
            out[name] = _storable(value)
        elif isinstance(value, list):
            items = [_storable(str(v)) for v in value if isinstance(v, (str, int, float, bool)) and str(v).strip()]
            if items:
                out[name] = items
        elif isinstance(value, dict) and depth < MAX_FRONT_MATTER_DEPTH:
            out.update(_scalar_fields(value, f"{name}.", depth + 1))
    return out


def _storable(value: Any) -> Any:
    """A value the index can store and compare: 64-bit integers, finite floats, valid UTF-8 (else as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -2**63 <= value < 2**63 or isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return valid_text(value)  # a lone surrogate from a YAML escape
    return value


# --- structure -----------------------------------------------------------------------------------------------


def _line_starts(text: str) -> list[int]:
    if "\r" in text:
        return [0] + [m.end() for m in _NEWLINE.finditer(text)]
    # LF only (nearly every file): lengths of the split lines, summed in C (a match object per line was 0.8 s of
    # a 50 MB file's chunking)
    return list(accumulate(map((1).__add__, map(len, text.split("\n")[:-1])), initial=0))


def _blocks(text: str, body_start: int, starts: list[int]) -> Iterator[tuple[int, int, str, dict[str, str]]]:
    """Top-level blocks of the body as (start char, end char, kind, info), gaps with text included; `starts` are
    the text's line starts."""
    covered = bisect.bisect_right(starts, body_start) - 1
    for a, b, kind, level in _top_level(text, body_start):
        begin = bisect.bisect_right(starts, a) - 1
        # The line after the block's last visible character: a range may run on into the next line's indent.
        end = bisect.bisect_right(starts, max(a, _trim(text, a, b)[1] - 1))
        if begin > covered:
            yield from _gap(text, starts, covered, begin)
        info: dict[str, str] = {}
        if kind == "heading":
            info = {"heading": _heading_text_of(text, starts, begin, end), "level": level}
        elif kind == "fence":
            opener = _FENCE_LINE.match(text, starts[begin])
            info = {"fence": opener.group(1) if opener else "```"}
        yield _char(starts, begin, text), _char(starts, end, text), kind, info
        covered = max(covered, end)
    if covered < len(starts):
        yield from _gap(text, starts, covered, len(starts))


_KINDS = {"Heading": "heading", "CodeBlock": "code_block", "Table": "table", "BlockQuote": "blockquote",
          "HtmlBlock": "html_block", "Paragraph": "paragraph"}


def _top_level(text: str, body_start: int) -> Iterator[tuple[int, int, str, str]]:
    """(start char, end char, kind, heading level or "") of each top-level block of text[body_start:], in order."""
    import pyromark  # imported here: `docvec query` never parses markdown

    body = _LONE_CR.sub("\n", text[body_start:])  # the parser mishandles CR-only line ends (same length)
    try:
        data = body.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: parse a copy with the same characters counted
        body = body.encode("utf-8", "replace").decode("utf-8")
        data = body.encode("utf-8")
    to_char = _byte_to_char(body, data)
    depth = 0
    event: Any
    for event, span in pyromark.events_with_range(body, options=pyromark.Options.ENABLE_TABLES):
        opens = isinstance(event, dict) and "Start" in event
        if depth == 0 and (opens or event == "Rule"):  # a top-level block, or a thematic break
            kind = _kind(event["Start"]) if opens else "hr"
            level = event["Start"]["Heading"]["level"][1:] if kind == "heading" else ""  # "H2" -> "2"
            yield body_start + to_char(span["start"]), body_start + to_char(span["end"]), kind, level
        depth += 1 if opens else -1 if isinstance(event, dict) and "End" in event else 0


def _kind(tag: Any) -> str:
    """markdown-it's name for a pulldown-cmark block tag (what _Packer and _sections look for)."""
    name = tag if isinstance(tag, str) else next(iter(tag))
    if name == "CodeBlock":
        return "code_block" if tag["CodeBlock"] == "Indented" else "fence"
    if name == "List":
        return "bullet_list" if tag["List"] is None else "ordered_list"
    return _KINDS.get(name, name.lower())


def _byte_to_char(body: str, data: bytes) -> Callable[[int], int]:
    """Maps UTF-8 byte offsets of `body` to character offsets, decoding only the bytes between one offset asked and
    the next (blocks come in order; a range may end a little past where the next block starts)."""
    if len(data) == len(body):
        return lambda offset: offset
    state = [0, 0]  # (byte, char) of the last offset mapped

    def to_char(offset: int) -> int:
        if offset >= state[0]:
            state[1] += len(data[state[0]:offset].decode("utf-8"))
        else:
            state[1] -= len(data[offset:state[0]].decode("utf-8"))
        state[0] = offset
        return state[1]
    return to_char


_LONE_CR = re.compile(r"\r(?!\n)")
_ATX = re.compile(r" {0,3}#{1,6}(?=[ \t\r\n]|$)")


def _heading_text_of(text: str, starts: list[int], begin: int, end: int) -> str:
    """A heading's raw text (ATX: between its # marks; setext: its lines above the underline)."""
    first = text[starts[begin]:_char(starts, begin + 1, text)].rstrip("\r\n")
    atx = _ATX.match(first)
    if atx is None:
        return text[starts[begin]:starts[end - 1]].strip()
    rest = first[atx.end():].rstrip(" \t")
    unclosed = rest.rstrip("#")
    if len(unclosed) < len(rest) and unclosed[-1:] in (" ", "\t"):
        rest = unclosed
    return rest.strip()


def _gap(text: str, starts: list[int], begin: int, end: int) -> Iterator[tuple[int, int, str, dict[str, str]]]:
    """Lines the parser produced no block for (link definitions, ...): still text, still covered."""
    a, b = _char(starts, begin, text), _char(starts, end, text)
    if text[a:b].strip():
        yield a, b, "other", {}


def _char(starts: list[int], line: int, text: str) -> int:
    return starts[line] if line < len(starts) else len(text)


def _sections(text: str, body_start: int, starts: list[int]) -> Iterator[_Section]:
    """The body's sections in order, each yielded once complete: what precedes the first heading (if anything), then
    each heading with the blocks up to the next one."""
    section = _Section((), False, [])
    stack: list[tuple[int, str]] = []
    for start, end, kind, info in _blocks(text, body_start, starts):
        if kind == "heading":
            if section.blocks:
                yield section
            level = int(info["level"])
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, _heading_text(info["heading"])))
            section = _Section(tuple(h for _, h in stack), True, [], _trim(text, start, end)[0])
        section.blocks.append((start, end, kind, info))
    if section.blocks:
        yield section


def _heading_text(raw: str) -> str:
    """Heading text for trails: whitespace collapsed, a trailing attribute list ({ #anchor }) removed, cut at
    MAX_HEADING_CHARS (a 1 MB heading must not be repeated in every chunk's context and label)."""
    text = " ".join(_ATTR_LIST.sub("", raw[: MAX_HEADING_CHARS * 4]).split())
    return text if len(text) <= MAX_HEADING_CHARS else text[: MAX_HEADING_CHARS - 1] + "…"


def _noting_first_h1(sections: Iterator[_Section], found: list[str]) -> Iterator[_Section]:
    """The sections unchanged; the text of a level-1 heading that opens the document is appended to `found`.

    Opens: nothing but HTML blocks (a logo, a badge, a comment) comes before it. A first heading deep in a file
    titles only what follows it (its trail does that), never the chunks before it."""
    opening = True
    for s in sections:
        if opening and s.has_heading and len(s.trail) == 1 and s.blocks[0][3].get("level") == "1":
            found.append(s.trail[0])
        opening = opening and not found and all(kind == "html_block" for _, _, kind, _ in s.blocks)
        yield s


# --- packing -------------------------------------------------------------------------------------------------


class _Packer:
    """Packs a section's blocks into chunks under the token limit."""

    def __init__(self, text: str, count_tokens: TokenCounter, params: ChunkParams, starts: list[int]) -> None:
        self.text = text
        self.count = count_tokens
        self.params = params
        self.overhead = count_tokens([""])[0]  # special tokens the counter adds to any text
        self.starts = starts  # the text's line starts
        self.max_chars = params.max_tokens * CHARS_PER_TOKEN
        self.groups = 0
        self.cache: dict[str, int] = {}
        self.shown_for: dict[tuple[tuple[str, ...], bool], tuple[str, ...]] = {}

    def cost(self, s: str) -> int:
        if s not in self.cache:
            self._count_all([s])
        return self.cache[s]

    def prefetch(self, sections: list[_Section]) -> None:
        """Count every block of these sections in one batch: one call instead of thousands."""
        blocks = (self.text[slice(*_trim(self.text, a, b))] for s in sections for a, b, _, _ in s.blocks)
        self._count_all([t for t in blocks if len(t) <= self.max_chars and
                         not _surely_over(t, self.params.max_tokens)])

    def shown(self, trail: tuple[str, ...], heading_in_text: bool) -> tuple[str, ...]:
        """Headings prepended for the model: the trail, minus a heading the text already starts with, and minus
        outer headings while the context would take more than max_tokens / CONTEXT_SHARE."""
        if not self.params.heading_context:
            return ()
        key = (trail, heading_in_text)
        if key not in self.shown_for:  # asked several times for each unit and chunk of a section
            shown = trail[:-1] if heading_in_text else trail
            while shown and self.cost(_context(shown)) > self.params.max_tokens // CONTEXT_SHARE:
                shown = shown[1:]
            self.shown_for[key] = shown
        return self.shown_for[key]

    def pack_section(self, section: _Section) -> list[Chunk | _Merged]:
        budget = self.params.max_tokens - self.overhead - self.cost(_context(self.shown(section.trail, False)))
        whole = self._whole(section, budget)
        if whole is not None:
            return whole
        chunks: list[Chunk | _Merged] = []
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        total = 0  # the summed cost of `current`, kept as it grows (a 50 MB line is a million units)
        for unit in (u for b in section.blocks for u in self._units(b, budget)):
            if current and not self._fits(section, current, total, unit):
                groups.append(current)
                current = self._overlap(current, unit)
                total = sum(u.cost for u in current)
                if current and not self._fits(section, current, total, unit):
                    current, total = [], 0
                if len(groups) == _EMIT_BATCH:  # emitted as they fill: a block of millions of lines is never
                    chunks += self._emit_all(section, groups)  # held as a unit per line (5 MB: 718 MB)
                    groups = []
            current.append(unit)
            total += unit.cost
        if current:
            groups.append(current)
        return chunks + self._emit_all(section, groups)

    def _whole(self, section: _Section, budget: int) -> list[Chunk | _Merged] | None:
        """The section as the one chunk that packing would make of it, when each block fits whole and all of them
        fit together (most sections), else None. A file of 12 M one-line sections spent most of its time building
        units and groups only to make this chunk."""
        spans: list[tuple[int, int, bool]] = []
        total = 0
        for a, b, _, _ in section.blocks:
            a, b = _trim(self.text, a, b)
            if a < b:
                cost = self._whole_cost(self.text[a:b], budget)
                if cost is None:
                    return None
                spans.append((a, b, True))
                total += cost
        if not spans:
            return []
        start, end = spans[0][0], spans[-1][1]
        shown = self.shown(section.trail, self._heading_in(section, start))
        tokens = self.overhead + self.cost(_context(shown)) + total
        if tokens > self.params.max_tokens or end - start > self.max_chars or not _adds_up(self.text, spans):
            return None
        # Built into a Chunk only if nothing merges into it (a run of tiny sections is one chunk in the end).
        return [_Merged(start, end, section.trail, shown, tokens)]

    def _emit_all(self, section: _Section, groups: list[list[_Unit]]) -> list[Chunk]:
        """Chunks of the packed groups. A group's count is the sum of its units' when every one is exact and
        whitespace joins them (counts add up across it); the others are counted in one batch, and one over the
        limit by that count is cut again. (Counting every chunk read the file once more; a call per section was
        most of the time on a file of tiny sections.)"""
        drafts = [self._draft(section, units) for units in groups]
        exact = [self._exact(units) for units in groups]
        unsure = [_context(shown) + text for (text, shown), sure in zip(drafts, exact) if not sure]
        counted = iter(self.count(unsure) if unsure else [])
        tokens = [self._estimate(section, units[0], units[-1], sum(u.cost for u in units)) if sure else next(counted)
                  for units, sure in zip(groups, exact)]
        chunks: list[Chunk] = []
        for units, (text, shown), n in zip(groups, drafts, tokens):
            if n <= self.params.max_tokens:
                chunks.append(self._chunk(text, section.trail, shown, units[0].start, units[-1].end, n))
            else:  # over the limit by that count: no need to count it again
                chunks.extend(self._cut(section, units))
        return chunks

    def _exact(self, units: list[_Unit]) -> bool:
        """Whether the units' summed count is the exact count of the chunk they make."""
        return (_ends_at_break(units[0].head) and _starts_at_break(units[-1].tail)
                and _adds_up(self.text, [(u.start, u.end, u.exact) for u in units]))

    def _draft(self, section: _Section, units: list[_Unit]) -> tuple[str, tuple[str, ...]]:
        """The chunk text of `units` and the headings prepended to it for the model."""
        start, end = units[0].start, units[-1].end
        shown = self.shown(section.trail, self._heading_in(section, start))
        return units[0].head + self.text[start:end] + units[-1].tail, shown

    def _fits(self, section: _Section, current: list[_Unit], total: int, unit: _Unit) -> bool:
        """Whether `unit` joins the group `current` (whose units cost `total`): the sum of the parts estimates the
        chunk (exact for whitespace-separated text; checked on emit where it is not)."""
        if unit.head or current[-1].tail:
            return False  # a re-opened fence must start its chunk, a re-closed one must end it
        first = current[0]
        if unit.end - first.start + len(first.head) + len(unit.tail) > self.max_chars:
            return False
        return self._estimate(section, first, unit, total + unit.cost) <= self.params.max_tokens

    def _estimate(self, section: _Section, first: _Unit, last: _Unit, units_cost: int) -> int:
        """The count of the chunk from `first` to `last` (its units costing `units_cost`) as the sum of its parts:
        special tokens, heading context, units, fence/header."""
        shown = self.shown(section.trail, self._heading_in(section, first.start))
        wrap = first.head + last.tail
        return self.overhead + self.cost(_context(shown)) + units_cost + (self.cost(wrap) if wrap else 0)

    def _heading_in(self, section: _Section, start: int) -> bool:
        return section.has_heading and start == section.heading_at

    def _emit_or_cut(self, section: _Section, units: list[_Unit]) -> list[Chunk]:
        chunk = self._emit(section, units)
        return [chunk] if chunk is not None else self._cut(section, units)

    def _cut(self, section: _Section, units: list[_Unit]) -> list[Chunk]:
        """Chunks of `units`, whose exact count is over the limit."""
        if len(units) > 1:  # the estimate was off by a token or two: give back the last unit
            return self._emit_or_cut(section, units[:-1]) + self._emit_or_cut(section, units[-1:])
        # A lone unit that fit by estimate but not by exact count: cut it finer, one token tighter each time.
        unit = units[0]
        out: list[Chunk] = []
        budget = unit.cost - 1
        pieces = (self._split(unit.start, unit.end, budget, 0, self.max_chars - len(unit.head + unit.tail))
                  if budget > 0 else
                  [(unit.start, unit.end, unit.cost, unit.exact)])
        for a, b, cost, exact in pieces:
            piece = _Unit(a, b, cost, unit.group, unit.head, unit.tail, exact)
            if piece.cost >= unit.cost:  # cannot shrink (a single character): emit it even if over
                out.append(self._chunk(self.text[a:b], section.trail, (), a, b))
                continue
            out.extend(self._emit_or_cut(section, [piece]))
        return out

    def _overlap(self, previous: list[_Unit], following: _Unit) -> list[_Unit]:
        """Trailing units of the previous chunk (within overlap_tokens) that start the next one."""
        carried: list[_Unit] = []
        total = 0
        for unit in reversed(previous[1:]):
            if unit.group != following.group or total + unit.cost > self.params.overlap_tokens:
                break
            carried.insert(0, unit)
            total += unit.cost
        return carried

    def _units(self, block: tuple[int, int, str, dict[str, str]], budget: int) -> Iterator[_Unit]:
        """The block as units to pack, in order, as they are made: whole, or cut into pieces under the limits."""
        start, end, kind, info = block
        start, end = _trim(self.text, start, end)
        if start >= end:
            return
        cost = self._whole_cost(self.text[start:end], budget)
        if cost is not None:
            yield _Unit(start, end, cost, -1)
            return
        self.groups += 1
        head, tail, inner_start, inner_end = self._wrappers(start, end, kind, info)
        if self.cost(head + tail) > budget // 2 or len(head + tail) > self.max_chars // 2:  # a huge header/fence
            head, tail, inner_start, inner_end = "", "", start, end  # line is not repeated on every piece
        chars = self.max_chars - len(head + tail)
        spans = self._spans(inner_start, inner_end, budget - self.cost(head + tail), 0, chars)
        if head or tail:  # pieces that repeat a fence/header cannot share a chunk: make each one nearly full
            # (joined as they come: a fence of millions of one-character lines never holds a span per line)
            spans = _join(self.text, spans, budget - self.cost(head + tail), separator=1, chars=chars)
        yield from self._pieces_of(spans, _Unit(start, end, 0, self.groups, head, tail))

    def _pieces_of(self, spans: Iterator[_Span], block: _Unit) -> Iterator[_Unit]:
        """Units of a cut block's spans. The first keeps the block's own opening lines, the last its closing line
        (their cost is the wrapper's, which the first and last piece carry anyway); each other piece repeats them."""
        held = next(spans, None)
        if held is None:
            yield _Unit(block.start, block.end, self.cost(self.text[block.start:block.end]), -1)
            return
        first = True
        for following in chain(spans, [_NO_SPAN]):
            a, b, cost, exact = held
            last = following is _NO_SPAN
            if first:
                a, cost, exact = block.start, cost + self.cost(block.head), exact and _ends_at_break(block.head)
            if last:
                b, cost, exact = block.end, cost + self.cost(block.tail), exact and _starts_at_break(block.tail)
            yield _Unit(a, b, cost, block.group, "" if first else block.head, "" if last else block.tail, exact)
            held, first = following, False

    def _whole_cost(self, block: str, budget: int) -> int | None:
        """The cost of a trimmed block that is packed as one unit (within `budget` tokens and the character cap),
        else None: the block must be cut."""
        if len(block) > self.max_chars or _surely_over(block, budget):
            return None
        cost = self.cost(block)
        return cost if cost <= budget else None

    def _wrappers(self, start: int, end: int, kind: str, info: dict[str, str]) -> tuple[str, str, int, int]:
        """Text repeated on each piece of a split fence (its fence lines) or table (its header rows)."""
        # Only the first two lines and the last are looked for (str.splitlines' breaks): a block can be millions of
        # lines. [start, end) is trimmed, so text follows every break found.
        first = _LINE_BREAK.search(self.text, start, end)
        if first is None:
            return "", "", start, end
        if kind == "fence":
            last = self.text[max(self.text.rfind(c, start, end) for c in _LINE_BREAKS) + 1:end]
            closed = last.strip().startswith(info["fence"])
            inner_end = end - len(last) if closed else end
            return self.text[start:first.end()], ("\n" + last.strip() if closed else ""), first.end(), inner_end
        second = _LINE_BREAK.search(self.text, first.end(), end)
        if kind == "table" and second is not None:
            return self.text[start:second.end()], "", second.end(), end
        return "", "", start, end

    def _split(self, start: int, end: int, budget: int, level: int, chars: int) -> list[_Span]:
        """Cut [start, end) into trimmed spans of at most `budget` tokens and `chars` characters, at the coarsest
        boundary that works."""
        return list(self._spans(start, end, budget, level, chars))

    def _spans(self, start: int, end: int, budget: int, level: int, chars: int) -> Iterator[_Span]:
        """_split's spans, in order, as they are made."""
        start, end = _trim(self.text, start, end)
        if start >= end:
            return
        whole = self.text[start:end]
        chars = max(chars, 1)
        if end - start <= chars and not _surely_over(whole, max(budget, 1)):  # never true of one character
            cost = self.cost(whole)
            if end - start == 1 or cost <= max(budget, 1):
                yield start, end, cost, True
                return
        del whole
        if level >= len(_SPLITTERS) + len(_WORDS):  # no boundary left: halve by characters
            mid = start + (end - start) // 2
            yield from self._spans(start, mid, budget, level, chars)
            yield from self._spans(mid, end, budget, level, chars)
            return
        spans = self._level(start, end, budget, level, chars)
        # Word-level pieces are joined up to a few dozen tokens: a 5 MB line becomes thousands of units, not
        # a million.
        yield from spans if level < len(_SPLITTERS) else _join(self.text, spans, min(budget, _PIECE_TOKENS), 0, chars)

    def _level(self, start: int, end: int, budget: int, level: int, chars: int) -> Iterator[_Span]:
        """The spans of one level's pieces of [start, end), counted a batch at a time (one tokenizer call each; a
        level can be millions of lines: only a batch is held); a piece over the limits is cut at the next level."""
        pieces = self._pieces(start, end, level)
        while batch := list(islice(pieces, _COUNT_BATCH)):
            texts = [self.text[a:b] for a, b in batch]
            self._count_all([t for t in texts if len(t) <= chars and not _surely_over(t, budget)])
            # A text left uncounted is surely over the budget; one the cache holds anyway has its true cost.
            costs = list(map(self.cache.get, texts, repeat(budget + 1)))
            del texts
            for (a, b), cost in zip(batch, costs):
                if cost <= budget and b - a <= chars:
                    yield a, b, cost, True
                else:
                    yield from self._spans(a, b, budget, level + 1, chars)

    def _pieces(self, start: int, end: int, level: int) -> Iterator[tuple[int, int]]:
        """[start, end) cut at one level's boundaries into trimmed, non-empty spans, as they are found."""
        if level >= len(_SPLITTERS):
            return (m.span() for m in _WORDS[level - len(_SPLITTERS)].finditer(self.text, start, end))
        if _SPLITTERS[level] is _LINES:  # the trimmed lines in one pass (a 1 MB block of "}" lines)
            return (m.span() for m in _LINE.finditer(self.text, start, end))
        return self._between(start, end, _SPLITTERS[level])

    def _between(self, start: int, end: int, splitter: re.Pattern[str]) -> Iterator[tuple[int, int]]:
        """The trimmed, non-empty spans of [start, end) between the splitter's matches."""
        for m in splitter.finditer(self.text, start, end):
            a, b = _trim(self.text, start, m.start())
            if a < b:
                yield a, b
            start = m.start()
        a, b = _trim(self.text, start, end)
        if a < b:
            yield a, b

    def _count_all(self, texts: list[str]) -> None:
        """Cache the cost (without special tokens) of each text, in one batch."""
        todo = list(set(texts).difference(self.cache))
        for t, n in zip(todo, self.count(todo) if todo else []):
            self.cache[t] = n - self.overhead

    def _emit(self, section: _Section, units: list[_Unit]) -> Chunk | None:
        """The chunk made of `units`, or None when its exact token count exceeds the limit."""
        text, shown = self._draft(section, units)
        chunk = self._chunk(text, section.trail, shown, units[0].start, units[-1].end)
        return chunk if chunk.tokens <= self.params.max_tokens else None

    def _chunk(self, text: str, trail: tuple[str, ...], shown: tuple[str, ...], start: int, end: int,
               tokens: int | None = None) -> Chunk:
        """The chunk of `text`; `tokens` is its embed text's exact count when the caller has it."""
        text = _tidy(text)
        embed = _context(shown) + text
        first = bisect.bisect_right(self.starts, start)
        last = bisect.bisect_right(self.starts, max(start, end - 1))
        return Chunk(text, embed, trail, shown, start, end, first, last,
                     self.count([embed])[0] if tokens is None else tokens)

    def pack(self, sections: Iterable[_Section]) -> list[Chunk]:
        """Chunks of the sections, each chunk under min_tokens merged into the previous one when the result still
        fits. Sections are read, counted and packed a window at a time, and counts are forgotten past a bound: a
        5 MB file of one-line sections held 1.25 M sections and their chunks at once (1.2 GB)."""
        out: list[Chunk | _Merged] = []
        remaining = iter(sections)
        while window := list(islice(remaining, _WINDOW)):
            if len(self.cache) > _CACHE_LIMIT:
                self.cache.clear()
                self.shown_for.clear()
            self.prefetch(window)
            for chunk in (c for s in window for c in self.pack_section(s)):
                self._merge_into(out, chunk)
        # A run of tiny sections is built into one chunk once, not once per section it swallows.
        return [c if isinstance(c, Chunk) else self._chunk(self.text[c.start_char:c.end_char], c.trail, c.shown,
                                                            c.start_char, c.end_char, c.tokens) for c in out]

    def _merge_into(self, out: list[Chunk | _Merged], chunk: Chunk | _Merged) -> None:
        """Append `chunk` to `out`, or merge it into the last one when either is under min_tokens and both fit."""
        prev = out[-1] if out else None
        if prev is not None and min(prev.tokens, chunk.tokens) < self.params.min_tokens:
            merged = self._merge(prev, chunk)
            if merged is not None:
                out[-1] = merged
                return
        out.append(chunk)

    def _merge(self, a: Chunk | _Merged, b: Chunk | _Merged) -> _Merged | None:
        plain = all(isinstance(c, _Merged) or self.text[c.start_char:c.end_char] == c.text for c in (a, b))
        if not plain or b.start_char < a.end_char or b.end_char - a.start_char > self.max_chars:
            return None  # wrapped pieces of split blocks, and overlapping chunks, stay as they are
        trail = _common_prefix(a.trail, b.trail)
        shown = a.shown[: len(trail)]
        tokens = self._merged_tokens(a, b, shown)
        if tokens > self.params.max_tokens:
            return None
        return _Merged(a.start_char, b.end_char, trail, shown, tokens)

    def _merged_tokens(self, a: Chunk | _Merged, b: Chunk | _Merged, shown: tuple[str, ...]) -> int:
        """Tokens of a and b as one chunk under the context `shown`: a sum when whitespace separates them (counts
        add up across it), so a run of tiny sections is not re-counted at each merge (a file of 250k headings
        read 65 characters per byte); counted when nothing does."""
        if not _break_between(self.text, a.end_char, b.start_char):
            return self.count([_context(shown) + self.text[a.start_char:b.end_char]])[0]
        own = sum(c.tokens - self.overhead - self.cost(_context(c.shown)) for c in (a, b))
        return self.overhead + self.cost(_context(shown)) + own


def _join(text: str, pieces: Iterable[_Span], limit: int, separator: int, chars: int = sys.maxsize) -> Iterator[_Span]:
    """Join adjacent pieces of `text` while their summed cost (plus `separator` tokens between two) stays within
    `limit` and the text they cover within `chars` characters, greedily, as the pieces come (pieces run to a
    million lines of a block, or words of one line); the sum is exact where whitespace separates them and no
    separator is added."""
    run: _Span | None = None
    adds_up = False  # every piece of the run is exact, and breaks lie between them (counts add up across)
    for piece in pieces:
        if run is not None and run[2] + separator + piece[2] <= limit and piece[1] <= run[0] + chars:
            adds_up = adds_up and piece[3] and _break_between(text, run[1], piece[0])
            run = (run[0], piece[1], run[2] + separator + piece[2], not separator and adds_up)
            continue
        if run is not None:
            yield run
        run, adds_up = piece, piece[3]
    if run is not None:
        yield run


def _adds_up(text: str, spans: Sequence[tuple[int, int, bool]]) -> bool:
    """Whether the summed counts of consecutive (start, end, counted exactly) spans of `text` are the exact count of
    the text they cover: each counted exactly, and whitespace that counts add up across between each and the next."""
    return all(exact for _, _, exact in spans) and all(
        _break_between(text, a[1], b[0]) for a, b in zip(spans, spans[1:]))


def _break_between(text: str, end: int, start: int) -> bool:
    """Whether whitespace that counts add up across lies in text[end:start] (between two counted pieces)."""
    return _BREAK.search(text, end, start) is not None


def _ends_at_break(s: str) -> bool:
    return not s or s[-1] in _BREAK_CHARS


def _starts_at_break(s: str) -> bool:
    return not s or s[0] in _BREAK_CHARS


def _surely_over(text: str, budget: int) -> bool:
    """True when `text` has more than `budget` tokens without counting them: each whitespace-separated word is at
    least one token, and so is each ISOLATED character (a long line need not be tokenized whole only to learn that
    it must be cut; 5 MB of "!" were tokenized whole at each halving, 3.3 GB at once)."""
    if len(text) <= 2 * budget:
        return False
    words_over = len(text.split(maxsplit=budget)) > budget
    return words_over or next(islice(ISOLATED.finditer(text), budget, None), None) is not None


def _context(shown: tuple[str, ...]) -> str:
    return " > ".join(shown) + "\n\n" if shown else ""


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without leading and trailing whitespace (C-speed strip: spans can be megabytes)."""
    segment = text[start:end]
    body = segment.lstrip()
    start += len(segment) - len(body)
    return start, start + len(body.rstrip())
