"""Real docs-site shapes: YAML, TOML and JSON front matter, description-only section pages, MDX, list filters."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from docvec.chunker import CHARS_PER_TOKEN, ChunkParams, chunk_markdown, mdx_to_markdown
from docvec.cli import cli
from tests.conftest import RecordingEmbedder

COUNT = RecordingEmbedder().count_tokens

HUGO_TOML = """+++
title = "Configure the cache"
date = 2024-03-01T10:00:00Z
tags = ["cache", "performance"]
weight = 20
[params]
hidden = true
+++

The cache keeps rendered pages for `cacheDuration` seconds before rebuilding them.
"""

HUGO_JSON = """{
  "title": "Syntax highlighting",
  "keywords": ["highlight", "chroma"],
  "draft": false
}

Code fences are highlighted at build time; pick a style with `markup.highlight.style`.
"""

SECTION_PAGE = """---
title: Content management
description: How pages, sections and bundles are organised, and how front matter controls them.
---
"""

DOCUSAURUS_MDX = """---
title: Install the CLI
---
import Tabs from '@theme/Tabs';
import TabItem from '@theme/TabItem';
import {
  Admonition,
} from '@site/src/components';

export const minimum = '18.0';

# Install the CLI

<Tabs groupId="os">
  <TabItem value="mac" label="macOS">

Install the command-line tool with `brew install quokka`.

  </TabItem>
</Tabs>

{/* keep this in sync with the release notes */}
<Admonition type="tip" title="Upgrades">
Upgrading keeps your saved profiles.
</Admonition>

```jsx
import Tabs from '@theme/Tabs';
<Tabs groupId="os" />
```
"""


def test_toml_and_json_front_matter_become_fields_and_titles() -> None:
    toml = chunk_markdown(HUGO_TOML, COUNT, ChunkParams())
    assert toml.title == "Configure the cache" and toml.front_matter["tags"] == ["cache", "performance"]
    assert toml.front_matter["weight"] == 20 and toml.front_matter["date"].startswith("2024-03-01")
    assert "+++" not in toml.chunks[0].text and toml.chunks[0].start_line == 10
    js = chunk_markdown(HUGO_JSON, COUNT, ChunkParams())
    assert js.title == "Syntax highlighting" and js.front_matter["keywords"] == ["highlight", "chroma"]
    assert js.chunks[0].text.startswith("Code fences") and js.chunks[0].start_line == 7
    plain = chunk_markdown("{braces} open this paragraph.\n", COUNT, ChunkParams())
    assert plain.front_matter == {} and plain.chunks[0].text.startswith("{braces}")


def test_a_description_only_page_is_indexed_from_title_and_description() -> None:
    doc = chunk_markdown(SECTION_PAGE, COUNT, ChunkParams())
    assert len(doc.chunks) == 1 and doc.chunks[0].text.startswith("Content management\n\nHow pages")
    assert (doc.chunks[0].start_line, doc.chunks[0].end_line) == (1, 4)


def test_a_description_over_the_limits_is_cut_like_a_body() -> None:
    """A 64 KiB description (the front matter's limit) was one chunk: thousands of tokens the model truncated, or
    60 KB of text in every result that showed it."""
    params = ChunkParams()
    words = [f"word{i}" for i in range(3000)]
    for description in (" ".join(words), "x" * 60_000):
        doc = chunk_markdown(f"---\ntitle: Long page\ndescription: {description}\n---\n", COUNT, params)
        assert len(doc.chunks) > 1
        for c in doc.chunks:
            assert c.tokens <= params.max_tokens and len(c.text) <= params.max_tokens * CHARS_PER_TOKEN
            assert (c.start_line, c.end_line, c.trail) == (1, 4, ("Long page",))
        assert doc.chunks[0].text.startswith("Long page\n\n")
        assert doc.chunks[1].embed_text.startswith("Long page\n\n")  # the title heads the later pieces too
    cut = chunk_markdown(f"---\ntitle: Long page\ndescription: {' '.join(words)}\n---\n", COUNT, params)
    assert set(words) <= {w for c in cut.chunks for w in c.text.split()}  # nothing is lost


def test_mdx_keeps_prose_and_fences_and_drops_imports_and_jsx() -> None:
    text = mdx_to_markdown(DOCUSAURUS_MDX)
    assert len(text) == len(DOCUSAURUS_MDX) and text.count("\n") == DOCUSAURUS_MDX.count("\n")  # lines kept
    assert "import Tabs from" in text.split("```jsx")[1]  # code in fences is left alone
    prose = text.split("```jsx")[0]
    for gone in ("import", "export", "<Tabs", "</TabItem>", "Admonition", "keep this in sync"):
        assert gone not in prose
    assert "brew install quokka" in prose and "Upgrading keeps your saved profiles." in prose


@given(st.text(alphabet=st.sampled_from(list("<>/{}*`~ \nAaimportexp'\"=")), max_size=200))
def test_mdx_transform_never_moves_a_line(text: str) -> None:
    out = mdx_to_markdown(text)
    assert len(out) == len(text) and [len(x) for x in out.split("\n")] == [len(x) for x in text.split("\n")]


def test_site_shapes_end_to_end_with_list_filters(project: Path) -> None:
    docs = project / "docs"
    (docs / "hugo").mkdir()
    (docs / "hugo" / "cache.md").write_text(HUGO_TOML)
    (docs / "hugo" / "highlight.md").write_text(HUGO_JSON)
    (docs / "hugo" / "_index.md").write_text(SECTION_PAGE)
    (docs / "install.mdx").write_text(DOCUSAURUS_MDX)
    cfg = ["--config", str(project / "config.yaml")]
    runner = CliRunner()
    ingest = runner.invoke(cli, ["ingest", "--json", *cfg])
    report = json.loads(ingest.stdout)
    assert ingest.exit_code == 0 and not report["skipped"], ingest.output
    assert {"hugo/cache.md", "hugo/highlight.md", "hugo/_index.md", "install.mdx"} <= set(report["added"])

    def sources(*args: str) -> list[str]:
        out = runner.invoke(cli, ["query", *args, *cfg, "--json", "-k", "3"])
        assert out.exit_code == 0, out.output
        return [json.loads(line)["source"] for line in out.stdout.splitlines()]

    assert sources("syntax colours in code", "--where", "keywords=highlight") == ["hugo/highlight.md"]
    assert sources("caching pages", "--where", "tags=performance") == ["hugo/cache.md"]
    assert sources("caching pages", "--where", "fm.title=Configure the cache") == ["hugo/cache.md"]
    assert sources("caching pages", "--where", "title=Configure the cache") == ["hugo/cache.md"]
    assert sources("caching pages", "--where", "weight=20") == ["hugo/cache.md"]
    assert sources("how are sections organised", "--where", "source=hugo/")[0] == "hugo/_index.md"
    assert sources("install the command line tool with brew")[0] == "install.mdx"
    typo = runner.invoke(cli, ["query", "caching", *cfg, "--where", "keyword=highlight"])
    assert typo.exit_code == 2 and "did you mean 'keywords'" in typo.output
