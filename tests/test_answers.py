"""Answer lines that answer (issue 31): comments are not content, code is printed as code, a line that introduces
a command brings it along, and overlapping chunks do not point twice at one answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from docvec.chunker import ChunkParams, blank_comments, chunk_markdown, mdx_to_markdown
from docvec.errors import DocvecError
from docvec.query.hits import Hit
from docvec.query.render import View, _excerpt
from docvec.query.spans import point, units
from tests.conftest import RecordingEmbedder

COUNT = RecordingEmbedder().count_tokens

PROPOSAL = """# Proposal: lazy loading

<!--
This section should contain enough information that the specifics of your
change are understandable.
-->

## Motivation

Pages load every image at once, which is slow on phones. <!-- TODO: numbers -->

Write `<!--more-->` where the summary ends.

```html
<!-- kept: this comment is the example -->
<img loading="lazy">
```
"""


def test_html_comments_are_neither_shown_nor_embedded_and_lines_stay() -> None:
    doc = chunk_markdown(PROPOSAL, COUNT, ChunkParams())
    text = "\n".join(c.text for c in doc.chunks)
    embedded = "\n".join(c.embed_text for c in doc.chunks)
    for gone in ("This section should contain", "TODO: numbers"):
        assert gone not in text and gone not in embedded
    assert "`<!--more-->`" in text and "<!-- kept: this comment is the example -->" in text  # code is code
    assert all(line == line.rstrip() for line in text.splitlines())  # no runs of blanked spaces
    motivation = next(c for c in doc.chunks if "Pages load" in c.text)
    lines = PROPOSAL.splitlines()
    assert "Pages load" in lines[motivation.start_line - 1 + motivation.text.splitlines().index(
        next(l for l in motivation.text.splitlines() if "Pages load" in l))]


@given(st.text(alphabet=st.sampled_from(list("ab <!->`\n")), max_size=200))
def test_blanking_comments_never_moves_a_line_or_a_character(text: str) -> None:
    blanked = blank_comments(text)
    assert len(blanked) == len(text) and [i for i, ch in enumerate(text) if ch == "\n"] == \
        [i for i, ch in enumerate(blanked) if ch == "\n"]


def test_a_jsx_tag_over_several_lines_is_blanked_and_leaves_no_spaces_in_the_text() -> None:
    mdx = 'Intro to atoms.\n\n<Stackblitz\n  id="vitejs-vite-abc"\n  file="src/App.tsx"\n/>\n\nAtoms hold state.\n'
    md = mdx_to_markdown(mdx)
    assert "Stackblitz" not in md and "vitejs" not in md and md.count("\n") == mdx.count("\n")
    (chunk,) = chunk_markdown(md, COUNT, ChunkParams()).chunks
    assert "Intro to atoms." in chunk.text and "Atoms hold state." in chunk.text
    assert all(line == line.rstrip() for line in chunk.text.splitlines())


def _hit(text: str, source: str = "git.md", start_line: int = 1, rank: int = 1) -> Hit:
    return Hit(rank, 1.0, f"{source}#{start_line}", "Git", source, start_line,
               start_line + text.count("\n"), text, {})


def test_a_line_ending_in_a_colon_brings_the_command_it_introduces() -> None:
    text = ("# Undo\n\nSome history first.\n\n- Undo the last commit, keeping its changes:\n\n```sh\n"
            "git reset --soft HEAD~1\n```\n\n- Something else entirely.\n")
    (hit,) = point([_hit(text)], "undo the last commit but keep the changes", None)
    assert hit.answer_span is not None
    shown = text[hit.answer_span[0]:hit.answer_span[1]]
    assert "keeping its changes:" in shown and "git reset --soft HEAD~1" in shown
    assert "Something else" not in shown
    list_intro = "To add a page to the main menu:\n\n1. Open menus.toml.\n2. Add an entry.\n\nUnrelated prose here.\n"
    (item,) = point([_hit(list_intro)], "add a page to the main menu", None)
    assert item.answer_span is not None
    assert text is not None and "2. Add an entry." in list_intro[item.answer_span[0]:item.answer_span[1]]


def test_overlapping_chunks_do_not_point_twice_at_the_same_lines() -> None:
    paragraphs = [f"Paragraph {i} says nothing about it." for i in range(1, 9)]
    paragraphs[5] = "Convert a video to mp4 with ffmpeg -i input.mov output.mp4."
    paragraphs[6] = "Trim a video with ffmpeg -ss 10 -t 5."
    file_lines = "\n\n".join(paragraphs).split("\n")  # paragraph i is on line 2i - 1
    first = _hit("\n".join(file_lines[0:13]), "ffmpeg.md", 1, 1)
    second = _hit("\n".join(file_lines[8:15]), "ffmpeg.md", 9, 2)  # the overlap holds the conversion (line 11)
    a, b = point([first, second], "convert a video to mp4 with ffmpeg", None)
    assert a.answer_lines == (11, 11)
    assert b.answer_lines == (13, 13)  # its next best, not line 11 again


def test_code_and_quotes_print_as_lines_even_when_the_pointed_lines_start_inside_a_fence() -> None:
    text = "Use the cache:\n\n```js\nimport { atom } from 'jotai'\nimport { atomWithCache } from 'jotai-cache'\n```\n\n" \
           "> [!NOTE]\n> Cached atoms live until the store does.\n"
    start = text.index("import { atom }")
    hit = {"text": text, "answer_span": [start, len(text)], "line": 1, "end_line": 9}
    shown = _excerpt(hit, 100)
    assert "import { atom } from 'jotai'" in shown and "import { atomWithCache } from 'jotai-cache'" in shown
    assert "> [!NOTE]" in shown and "> Cached atoms live until the store does." in shown
    assert units(text)  # the pointed lines are units the spans can choose
    assert View(False, False, False, Path("/docs")).path({"source": "a.md"}).endswith("a.md")


def test_front_matter_describes_the_page_flattens_tables_and_splits_keyword_lists(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from docvec.cli import cli

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "menus.md").write_text('+++\ntitle = "Menus"\ndescription = "Add a page to the main menu of a site."\n'
                                   'keywords = "navigation, menu,sidebar"\n[extra]\nrelease = true\n+++\n\n'
                                   "Entries are sorted by weight, then by name.\n")
    (docs / "other.md").write_text("---\ntitle: Other\nkeywords: [menu]\n---\n\nUnrelated text about caching.\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n")

    def query(*args: str) -> list[dict[str, Any]]:
        done = CliRunner().invoke(cli, ["query", *args, "--config", str(cfg), "--json", "--no-server"])
        assert done.exit_code == 0, done.output
        return [json.loads(line) for line in done.output.splitlines() if line.startswith("{")]
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", str(cfg)]).exit_code == 0
    hits = query("Add a page to the main menu of a site", "--mode", "keyword", "-k", "1")
    assert hits[0]["source"] == "menus.md" and "main menu" in hits[0]["text"] and hits[0]["line"] == 1
    assert {h["source"] for h in query("sorted", "--where", "extra.release=true")} == {"menus.md"}
    assert {h["source"] for h in query("text", "--where", "keywords=menu")} == {"menus.md", "other.md"}
    assert {h["source"] for h in query("text", "--where", "keywords=sidebar")} == {"menus.md"}


def test_a_path_as_docvec_prints_it_works_for_where_and_get(project: Path, monkeypatch: Any) -> None:
    from click.testing import CliRunner

    import docvec
    from docvec.cli import cli

    cfg = str(project / "config.yaml")
    assert CliRunner().invoke(cli, ["ingest", "-q", "--config", cfg]).exit_code == 0
    elsewhere = project / "sub" / "dir"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    printed = CliRunner().invoke(cli, ["query", "webhook retries", "--files", "-k", "1", "--config", cfg,
                                       "--no-server"]).output.split()[1].rsplit(":", 1)[0]
    assert printed.startswith("../../docs/guides/")  # relative to the current folder
    for where in (printed, str(project / "docs" / "guides") + "/", "guides/"):
        done = CliRunner().invoke(cli, ["query", "webhook retries", "--where", f"source={where}", "--json",
                                        "--config", cfg, "--no-server"])
        assert done.exit_code == 0 and done.output.strip(), (where, done.output)
    missing = CliRunner().invoke(cli, ["query", "webhook", "--where", "source=nowhere/x.md", "--config", cfg,
                                       "--no-server"])
    assert missing.exit_code == 0 and "source= takes a file or a folder/ of the docs folder" in missing.output
    with docvec.open(cfg) as idx:
        assert idx.get(printed, 1, 1).source == printed.split("docs/", 1)[1]
        with pytest.raises(DocvecError):
            idx.get("../../../../etc/passwd")


def test_answer_lines_cover_the_whole_block_fences_and_continued_items_included() -> None:
    code = "Add it to your project:\n\n```console\n$ uv add httpx\n```\n\nThen write the tests.\n"
    (hit,) = point([_hit(code, "testing.md")], "add httpx to the project", None)
    assert hit.answer_lines == (1, 5)  # the closing fence is part of the answer, as it prints
    items = ("You'll use them most often in these situations:\n\n- When a type's size can't be known at compile\n"
             "  time and an exact size is required\n- When you have a large amount of data to move\n\nLater.\n")
    (box,) = point([_hit(items, "box.md")], "when should I use these situations", None)
    assert box.answer_lines == (1, 5)


def test_a_page_of_nothing_but_comments_is_skipped_like_an_empty_one(tmp_path: Path) -> None:
    """It was 'added' with no chunk, and verify then called the index wrong."""
    from click.testing import CliRunner

    from docvec.cli import cli

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "todo.md").write_text("<!-- This page will say how to rotate keys. -->\n")
    (docs / "real.md").write_text("# Real\n\nSome text here.\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"docs:\n  path: {docs}\nstore:\n  path: {tmp_path / 'index'}\n")
    done = CliRunner().invoke(cli, ["ingest", "-v", "--config", str(cfg)])
    assert done.exit_code == 0 and "skipped todo.md: no text besides front matter and comments" in done.output
    checked = CliRunner().invoke(cli, ["verify", "--config", str(cfg)])
    assert checked.exit_code == 0 and "ok:" in checked.output, checked.output
