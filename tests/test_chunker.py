"""The chunker is pure: properties over arbitrary markdown, plus the structural promises on known input."""

from __future__ import annotations

import bisect
import re
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docvec.chunker import (CHARS_PER_TOKEN, MAX_HEADING_CHARS, ChunkParams, ParsedDocument, _blocks, _join,
                            _line_starts, _tidy, _trim, blank_comments, chunk_ids, chunk_markdown)
from tests.conftest import _tokenizer

COUNT = _tokenizer().count_tokens
SMALL = ChunkParams(max_tokens=64, min_tokens=8, overlap_tokens=8)

words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
sentence = st.lists(words, min_size=1, max_size=30).map(lambda ws: " ".join(ws) + ".")
paragraph = st.lists(sentence, min_size=1, max_size=8).map(" ".join)
heading = st.tuples(st.integers(1, 4), st.text("abcdefgh xyz", min_size=1, max_size=20)).map(
    lambda t: "#" * t[0] + " " + (t[1].strip() or "h"))
fence = st.tuples(st.sampled_from(["```", "~~~"]), st.lists(st.text("abc =();xyz", max_size=40), max_size=40)).map(
    lambda t: t[0] + "python\n" + "\n".join(t[1]) + "\n" + t[0])
table = st.lists(st.text("abc 123", min_size=1, max_size=15), min_size=1, max_size=30).map(
    lambda rows: "| a | b |\n|---|---|\n" + "\n".join(f"| {r} | {r} |" for r in rows))
# Words over 100 characters are one [UNK] token each: text that is long in characters but short in tokens.
unknown_words = st.lists(st.text("abcxyz", min_size=101, max_size=600), min_size=1, max_size=12).map(" ".join)
block = st.one_of(paragraph, heading, fence, table, st.text(max_size=200), unknown_words)
document = st.lists(block, max_size=25).map("\n\n".join)


def _body_start(text: str) -> int:
    m = re.match(r"---[ \t]*\r?\n.*?\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|$)", text, re.S)
    return m.end() if m else 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document)
def test_properties_hold_for_any_markdown(text: str) -> None:
    doc = chunk_markdown(text, COUNT, SMALL)
    previous_start = -1
    for c in doc.chunks:
        assert c.tokens <= SMALL.max_tokens or c.end_char - c.start_char == 1  # the limit always holds
        assert len(c.text) <= SMALL.max_tokens * CHARS_PER_TOKEN  # and so does the size of what clients are sent
        assert c.tokens == COUNT([c.embed_text])[0]
        assert c.start_char >= previous_start  # in document order
        previous_start = c.start_char
        # the text is the source span (plus repeated fences), comments blanked and lines without trailing spaces
        assert _tidy(blank_comments(text)[c.start_char:c.end_char]) in c.text
        assert 1 <= c.start_line <= c.end_line
    assert chunk_markdown(text, COUNT, SMALL) == doc  # deterministic


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document)
def test_every_non_blank_character_is_in_a_chunk(text: str) -> None:
    doc = chunk_markdown(text, COUNT, SMALL)
    covered = bytearray(len(text))
    for c in doc.chunks:
        covered[c.start_char:c.end_char] = b"\x01" * (c.end_char - c.start_char)
    body = _body_start(text)
    missing = [i for i in range(body, len(text)) if not text[i].isspace() and not covered[i]]
    assert not missing, repr(text[missing[0]:missing[0] + 40])


# Prose that cannot open or hold a fence of its own ('```.' is an unclosed fence: one marker in its chunk, rightly)
prose = paragraph.map(lambda p: p.replace("`", "'").replace("~", "-"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(prose, fence, heading), max_size=12).map("\n\n".join))
def test_fences_are_split_only_when_too_big_alone(text: str) -> None:
    doc = chunk_markdown(text, COUNT, SMALL)
    for c in doc.chunks:
        assert c.text.count("```") % 2 == 0 and c.text.count("~~~") % 2 == 0, c.text


def test_front_matter_is_metadata_not_text() -> None:
    text = "---\ntitle: Tokens\ntags: [auth, api]\nnested: {a: 1}\n---\n# Heading\n\nBody text here.\n"
    doc = chunk_markdown(text, COUNT, ChunkParams())
    assert doc.front_matter == {"title": "Tokens", "tags": ["auth", "api"], "nested.a": 1}  # tables flattened
    assert doc.title == "Tokens"
    assert all("tags:" not in c.embed_text for c in doc.chunks)
    assert doc.chunks[0].start_line == 6


def test_a_front_matter_title_is_a_one_line_label_or_none() -> None:
    """A hostile title (a list, a mapping, 10 KB over several lines) must not become "['1']" or a 10 KB label."""
    body = "# Heading\n\nBody text here.\n"
    for value in ("[1, {a: 2}]", "{a: 1}", "true", "''"):
        assert chunk_markdown(f"---\ntitle: {value}\n---\n{body}", COUNT, ChunkParams()).title == "Heading"
    long = chunk_markdown("---\ntitle: |\n  " + "word " * 2000 + "\n  second line\n---\n" + body, COUNT, ChunkParams())
    assert long.title is not None and "\n" not in long.title and len(long.title) <= MAX_HEADING_CHARS
    assert chunk_markdown(f"---\ntitle: 2024\n---\n{body}", COUNT, ChunkParams()).title == "2024"


def test_malformed_front_matter_is_a_warning() -> None:
    doc = chunk_markdown("---\ntitle: [unclosed\n---\nBody.\n", COUNT, ChunkParams())
    assert doc.front_matter == {} and doc.warnings and "front matter" in doc.warnings[0]
    assert doc.chunks[0].text == "Body."


def test_heading_trail_is_prepended_and_recorded() -> None:
    text = "# Guide\n\nIntro. " + "Words here. " * 30 + "\n\n## Auth\n\n### Tokens\n\n" + "Token text. " * 40
    doc = chunk_markdown(text, COUNT, ChunkParams(max_tokens=128, min_tokens=8, overlap_tokens=0))
    last = doc.chunks[-1]
    assert last.trail == ("Guide", "Auth", "Tokens")
    assert last.embed_text.startswith("Guide > Auth")
    plain = chunk_markdown(text, COUNT, ChunkParams(max_tokens=128, min_tokens=8, overlap_tokens=0,
                                                    heading_context=False))
    assert all(c.embed_text == c.text for c in plain.chunks)


def test_oversized_fence_is_split_with_its_fence_repeated() -> None:
    code = "\n".join(f"value_{i} = compute({i}, {i + 1})" for i in range(200))
    text = f"# Code\n\n```python\n{code}\n```\n"
    doc = chunk_markdown(text, COUNT, ChunkParams(max_tokens=128, min_tokens=8, overlap_tokens=0))
    assert len(doc.chunks) > 2
    for c in doc.chunks:
        assert c.text.startswith("```python") or c.text.startswith("# Code")
        assert c.text.rstrip().endswith("```")
        assert c.tokens <= 128


def test_small_sections_merge_and_large_ones_split() -> None:
    text = "# A\n\nshort.\n\n## B\n\nalso short.\n\n## C\n\n" + "Long sentence about things. " * 80
    doc = chunk_markdown(text, COUNT, ChunkParams(max_tokens=100, min_tokens=20, overlap_tokens=10))
    assert doc.chunks[0].text.startswith("# A") and "## B" in doc.chunks[0].text
    assert doc.chunks[0].trail == ("A",)
    assert len(doc.chunks) >= 4
    # overlap: consecutive pieces of the long section share text
    c1, c2 = doc.chunks[-2], doc.chunks[-1]
    assert c2.start_char < c1.end_char


def test_lines_and_offsets_point_into_the_file() -> None:
    text = "intro line\n\n# Title\n\nfirst para\n\n## Sub\n\n" + "second para words " * 100 + "\n"
    doc = chunk_markdown(text, COUNT, ChunkParams(max_tokens=64, min_tokens=4, overlap_tokens=0))
    for c in doc.chunks:
        assert text.count("\n", 0, c.start_char) + 1 == c.start_line
        assert text[c.start_char:c.end_char] == c.text


def test_ids_are_stable_and_change_only_with_the_chunk() -> None:
    text = "# T\n\n## One\n\n" + "alpha words. " * 40 + "\n\n## Two\n\n" + "beta words. " * 40
    params = ChunkParams(max_tokens=64, min_tokens=4, overlap_tokens=0)
    before = chunk_markdown(text, COUNT, params).chunks
    edited = text.replace("beta words. " * 40, "gamma words. " * 40)
    after = chunk_markdown(edited, COUNT, params).chunks
    ids_before, ids_after = chunk_ids("a.md", before), chunk_ids("a.md", after)
    assert ids_before == chunk_ids("a.md", before)
    kept = set(ids_before) & set(ids_after)
    assert kept and all("alpha" in c.text or c.text.startswith("# T") for c, i in zip(after, ids_after) if i in kept)
    assert chunk_ids("b.md", before) != ids_before


def test_duplicate_chunks_in_one_file_get_distinct_ids() -> None:
    text = "## X\n\n" + "same text here. " * 20 + "\n\n## X\n\n" + "same text here. " * 20
    chunks = chunk_markdown(text, COUNT, ChunkParams(min_tokens=0)).chunks
    assert len(chunks) == 2 and len(set(chunk_ids("f.md", chunks))) == 2


def test_unclosed_fence_and_huge_line_do_not_break_limits() -> None:
    text = "```\n" + "x = 1\n" * 500 + "\n" + "word " * 5000
    doc = chunk_markdown(text, COUNT, ChunkParams())
    assert doc.chunks and all(c.tokens <= 256 for c in doc.chunks)


yamlish = st.text(alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"#\n 12\t.,?%@`")), max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yamlish, paragraph)
def test_any_front_matter_never_raises_and_the_body_survives(front: str, body: str) -> None:
    text = f"---\n{front}\n---\n{body}\n"
    doc = chunk_markdown(text, COUNT, SMALL)
    assert all(isinstance(k, str) for k in doc.front_matter)
    assert all(isinstance(v, (str, int, float, bool, list)) for v in doc.front_matter.values())
    if body.strip():
        assert doc.chunks and doc.chunks[-1].end_char <= len(text)
        assert all(c.tokens <= SMALL.max_tokens or c.end_char - c.start_char == 1 for c in doc.chunks)


class _Counting:
    """The real tokenizer, counting how many characters the chunker asks it to read."""

    def __init__(self) -> None:
        self.chars = 0

    def __call__(self, texts: list[str]) -> list[int]:
        self.chars += sum(len(t) for t in texts)
        return COUNT(texts)


_LONG = st.integers(2_000, 40_000)
constructs = st.one_of(
    _LONG.map(lambda n: "# " + "token request " * (n // 14) + "\n\nbody\n"),  # a heading
    _LONG.map(lambda n: "# A\n\n## " + "quota " * (n // 6) + "\n\n### " + "page " * (n // 5) + "\n\nbody\n"),
    _LONG.map(lambda n: "| a | b |\n|---|---|\n| " + "cell " * (n // 5) + " | x |\n"),  # a table row
    _LONG.map(lambda n: "| " + "head " * (n // 5) + " | b |\n|---|---|\n| x | y |\n| z | w |\n"),  # a table header
    _LONG.map(lambda n: "- " + "item " * (n // 5) + "\n- b\n"),  # a list item
    _LONG.map(lambda n: "[" + "link " * (n // 5) + "](http://x/" + "p" * (n // 2) + ")\n"),  # a link
    _LONG.map(lambda n: "```go\n" + "x := 1; " * (n // 8) + "\n```\n"),  # a code line
    _LONG.map(lambda n: "```go\n" + "}\n" * (n // 2) + "```\n"),  # a code block of crumbs
    _LONG.map(lambda n: "# h\n" * (n // 4)),  # thousands of tiny sections, merged
    _LONG.map(lambda n: "".join(f"## s{i}\n\nword {i}.\n\n" for i in range(n // 16))),
    _LONG.map(lambda n: "".join(f"[l{i}]: http://x/{i}\n" for i in range(n // 20))),  # link definitions
    _LONG.map(lambda n: "| a | b |\n|---|---|\n" + "| x | y |\n" * (n // 10)),  # table rows
    _LONG.map(lambda n: "!" * n + "\n"),  # a line without a word boundary (each "!" is a token)
    _LONG.map(lambda n: "文档说明" * (n // 4) + "\n"),  # a CJK line (each ideograph is a token)
    _LONG.map(lambda n: "see:" + "a,b;" * (n // 4) + "\n"),  # punctuation glued to letters
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(constructs)
def test_chunking_work_is_linear_in_the_size_of_any_construct(text: str) -> None:
    """The tokenizer reads a bounded number of characters per input byte, whatever the construct's size (a 16 KB
    heading used to cost ~600 per byte: it was repeated in every chunk's context and re-counted each time; a
    file of tiny sections 65: each merge re-counted the growing chunk)."""
    counter = _Counting()
    doc = chunk_markdown(text, counter, ChunkParams())
    assert counter.chars <= 2 * len(text) + 5_000, counter.chars / len(text)
    assert all(c.tokens <= 256 for c in doc.chunks)
    assert all(len(t) <= 200 for c in doc.chunks for t in c.trail)  # long headings are cut in trails and labels


def _chunked_traced(text: str, word: str) -> tuple[ParsedDocument, int]:
    """The text's chunks and the peak of Python memory allocated while chunking it."""
    COUNT([word])  # the tokenizer's own allocations are not the chunker's
    tracemalloc.start()
    try:
        doc = chunk_markdown(text, COUNT, ChunkParams())
        return doc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_file_of_many_sections_is_chunked_without_holding_them_all() -> None:
    """Sections are packed and merged as the parser yields them: 25,000 one-line sections (a 5 MB file of them
    held 1.25 M sections and their chunks at once, 1.2 GB) take a few MiB, not tens."""
    text = "# h\n" * 25_000
    doc, peak = _chunked_traced(text, "h")
    assert peak < 8 * 2**20, peak / 2**20
    assert len(doc.chunks) == len(chunk_markdown(text, COUNT, ChunkParams()).chunks) > 100


@pytest.mark.parametrize("block", ["```\n" + "a\n" * 200_000 + "```\n", "a\n" * 200_000,
                                   "<div>\n" + "a\n" * 200_000 + "</div>\n", "> a\n" * 200_000])
def test_a_block_of_many_lines_is_cut_without_holding_a_piece_per_line(block: str) -> None:
    """A fence, paragraph, HTML block or quote of 200,000 one-character lines: its pieces are counted, joined
    and packed as they are cut, so the chunker holds ~a line start per line, not a span, a unit and a group entry
    per line (250-270 bytes a line: a 5 MB fence of them peaked at 613 MB, now 76)."""
    doc, peak = _chunked_traced(block, "a")
    assert peak < 150 * 200_000, peak / 200_000
    assert sum(c.text.count("a") for c in doc.chunks) >= 200_000 and all(c.tokens <= 256 for c in doc.chunks)


def test_a_word_of_megabytes_is_cut_to_the_character_limit() -> None:
    """A word over 100 characters is one token, so a run of letters (a base64 blob, a generated line) fits any token
    limit: it was one chunk of the whole run. Chunks stay within max_tokens * CHARS_PER_TOKEN characters, cut at
    spaces where there are some."""
    limit = ChunkParams().max_tokens * CHARS_PER_TOKEN
    for text in ("x" * 1_000_000 + "\n", " ".join(["y" * 150] * 2_000) + "\n",
                 "```\n" + "\n".join(["z" * 300] * 300) + "\n```\n"):
        doc = chunk_markdown(text, COUNT, ChunkParams())
        assert all(len(c.text) <= limit for c in doc.chunks), max(len(c.text) for c in doc.chunks)
        covered = bytearray(len(text))
        for c in doc.chunks:
            covered[c.start_char:c.end_char] = b"\x01" * (c.end_char - c.start_char)
        assert all(covered[i] or text[i].isspace() for i in range(len(text)))  # all of it, cut
        assert all(c.text == c.text.strip() for c in doc.chunks)
    assert all(c.text.startswith("```\n") and c.text.endswith("\n```") for c in doc.chunks)  # each piece a fence


def test_a_long_code_block_packs_into_pieces_near_the_limit() -> None:
    """A code block over the limit is cut into pieces that repeat the fence, each near the limit, not into
    one-line crumbs."""
    code = "```go\n" + "\n".join(f"fmt.Println(\"line {i}\")" for i in range(120)) + "\n```\n"
    doc = chunk_markdown(code, COUNT, ChunkParams())
    assert len(doc.chunks) > 1
    assert all(c.text.startswith("```go\n") and c.text.rstrip().endswith("```") for c in doc.chunks)
    assert all(c.tokens >= 128 for c in doc.chunks[:-1]), [c.tokens for c in doc.chunks]


def _join_one_by_one(text: str, pieces: list[tuple[int, int, int, bool]], limit: int,
                     separator: int) -> list[tuple[int, int, int, bool]]:
    """The greedy join as its definition reads: add the next piece while the run stays within the limit."""
    out: list[tuple[int, int, int, bool]] = []
    for a, b, cost, exact in pieces:
        if out and out[-1][2] + cost + separator <= limit:
            start, end, total, was_exact = out[-1]
            sure = was_exact and exact and not separator and re.search(r"[ \t\n\r]", text[end:a]) is not None
            out[-1] = (start, b, total + cost + separator, sure)
        else:
            out.append((a, b, cost, exact))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["w", "word", "x" * 9]), st.sampled_from([" ", "\xa0", "\n", " \u3000"]),
                          st.integers(0, 40), st.booleans()), max_size=30),
       st.integers(1, 64), st.sampled_from([0, 1]))
def test_pieces_join_greedily_into_runs_within_the_limit(words: list[tuple[str, str, int, bool]], limit: int,
                                                         separator: int) -> None:
    """Joining pieces as they come gives the runs that the definition gives (the chars limit aside)."""
    text, pieces = "", []
    for word, gap, cost, exact in words:
        pieces.append((len(text), len(text) + len(word), cost, exact))
        text += word + gap
    assert list(_join(text, pieces, limit, separator)) == _join_one_by_one(text, pieces, limit, separator)


STRUCTURE = """\
Ünïcode — préface
# Title ü #
Two-line *setext*
heading
---
```py
~~~
```

    indented code

> quoted
> lines

- one
- two

3. three

| a | b |
|---|---|
| é | 😀 |

<div>
html
</div>

***
[ref]: http://example.com
## Last ##
"""
# (first line, last line, kind, heading text, level) of each top-level block, lines 1-based.
EXPECTED = [(1, 1, "paragraph", None, None), (2, 2, "heading", "Title ü", "1"),
            (3, 5, "heading", "Two-line *setext*\nheading", "2"), (6, 8, "fence", None, None),
            (10, 10, "code_block", None, None), (12, 13, "blockquote", None, None), (15, 16, "bullet_list", None, None),
            (18, 18, "ordered_list", None, None), (20, 22, "table", None, None), (24, 26, "html_block", None, None),
            (28, 28, "hr", None, None), (29, 29, "other", None, None), (30, 30, "heading", "Last", "2")]


def test_blocks_are_found_on_the_same_lines_whatever_the_line_ends() -> None:
    """Block structure with its lines, under LF, CRLF and CR-only line ends (the parser reports UTF-8 byte ranges
    of a text with non-ASCII characters; lines are counted as `source:line` counts them). A parser upgrade that
    cuts differently fails here, and must bump CHUNKER_VERSION."""
    for newline in ("\n", "\r\n", "\r"):
        text = STRUCTURE.replace("\n", newline)
        starts = _line_starts(text)
        found = []
        for start, end, kind, info in _blocks(text, 0, starts):
            start, end = _trim(text, start, end)
            first, last = (bisect.bisect_right(starts, i) for i in (start, end - 1))
            heading = " ".join(info["heading"].split("\r\n" if newline == "\r\n" else newline)) if info.get(
                "heading") else None
            found.append((first, last, kind, heading, info.get("level")))
        expected = [(a, b, k, h.replace("\n", " ") if h else h, lv) for a, b, k, h, lv in EXPECTED]
        assert found == expected, repr(newline)
        assert {info.get("fence") for *_, info in _blocks(text, 0, starts)} >= {"```"}


def test_a_lone_surrogate_does_not_stop_the_parse_nor_shift_offsets() -> None:
    text = "# A \udcff heading\n\nbody \udcff text\n\n# Next\n\nmore"
    blocks = list(_blocks(text, 0, _line_starts(text)))
    assert [(text[a:b].strip(), kind) for a, b, kind, _ in blocks] == [
        ("# A \udcff heading", "heading"), ("body \udcff text", "paragraph"), ("# Next", "heading"), ("more", "paragraph")]
    assert blocks[0][3]["heading"] == "A \udcff heading"


def test_a_block_ends_on_its_last_visible_line() -> None:
    """The parser's range of a list can run on into the indent of the next line; that line is not the list's (and
    the byte offset the range ends at, past a non-ASCII character, maps back to the right character)."""
    text = "é\n\n2) two ü\n\n  ü para\n\n- x\n\n  é more\n"
    blocks = [(text[a:b].strip(), kind) for a, b, kind, _ in _blocks(text, 0, _line_starts(text))]
    assert blocks == [("é", "paragraph"), ("2) two ü", "ordered_list"), ("ü para", "paragraph"),
                      ("- x\n\n  é more", "bullet_list")]


def test_a_heading_deep_in_a_file_titles_only_what_follows_it() -> None:
    """A plain document whose first heading sits at line ~2,300: that heading labelled every chunk, line 1 included."""
    plain = "\n\n".join(f"Paragraph {i} of measurements and their discussion in plain prose." for i in range(1200))
    doc = chunk_markdown(plain + "\n\n# Figure S1 Effect of Wnt Stimulation\n\nThe figure's caption.\n", COUNT,
                         ChunkParams())
    assert doc.title is None  # the label falls back to the file name
    before = [c for c in doc.chunks if c.start_line < 2300]
    assert before and all("Figure S1" not in " ".join(c.trail) for c in before)


@pytest.mark.parametrize("text,title", [
    ("# Opening\n\nBody.\n\n# Second\n\nMore.\n", "Opening"),
    ('<p align="center"><img src="logo.png"></p>\n\n# Behind a logo\n\nBody.\n', "Behind a logo"),
    ("Intro paragraph first.\n\n# Later\n\nBody.\n", None),
    ("## A section first\n\nText.\n\n# Later\n\nBody.\n", None),
    ("---\ntitle: From front matter\n---\nIntro.\n\n# Later\n\nBody.\n", "From front matter"),
])
def test_a_title_is_front_matter_or_a_heading_that_opens_the_document(text: str, title: str | None) -> None:
    assert chunk_markdown(text, COUNT, ChunkParams()).title == title
