"""Which files are indexed, and the reason given for every file that is not."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docvec.errors import SourceError
from docvec.ingest.scan import ScanOptions, Unreadable, _matches, read_markdown, scan


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# A\n\ntext\n")
    (root / "sub" / "b.markdown").write_text("# B\n")
    (root / "notes.txt").write_text("not markdown")
    for hidden in (".git", "node_modules", ".hidden"):
        (root / hidden).mkdir()
        (root / hidden / "x.md").write_text("# hidden\n")


def test_selects_markdown_and_skips_hidden_and_vendored(tmp_path: Path) -> None:
    _tree(tmp_path)
    files, skipped = scan(ScanOptions(tmp_path))
    assert [f.rel for f in files] == ["a.md", "sub/b.markdown"]
    assert skipped == []


def test_exclude_globs(tmp_path: Path) -> None:
    _tree(tmp_path)
    files, _ = scan(ScanOptions(tmp_path, exclude=("sub/**",)))
    assert [f.rel for f in files] == ["a.md"]


def test_oversized_files_are_skipped_with_the_setting_named(tmp_path: Path) -> None:
    (tmp_path / "big.md").write_text("word " * 1000)
    (tmp_path / "small.md").write_text("# ok\n")
    files, skipped = scan(ScanOptions(tmp_path, max_bytes=1000))
    assert [f.rel for f in files] == ["small.md"]
    assert "too large" in skipped[0].reason and "docs.max_file_mb" in skipped[0].reason


def test_symlinks_inside_are_indexed_once_outside_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "docs", tmp_path / "outside.md"
    root.mkdir()
    (root / "real.md").write_text("# R\n")
    outside.write_text("# O\n")
    os.symlink(root / "real.md", root / "alias.md")
    os.symlink(outside, root / "escape.md")
    os.symlink(root / "loop.md", root / "loop.md")
    files, skipped = scan(ScanOptions(root))
    assert [f.rel for f in files] == ["real.md"]
    reasons = {s.rel: s.reason for s in skipped}
    assert "outside the docs folder" in reasons["escape.md"] and "loop" in reasons["loop.md"]


def test_a_docs_root_reached_through_a_link_indexes_each_file_once(tmp_path: Path) -> None:
    """A file that is no link is keyed by the real root plus its path (no resolving a file): a link to it, even
    through a linked root, must still come out as the same file, and what is no regular file is skipped."""
    real = tmp_path / "real-docs"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "page.md").write_text("# P\n")
    os.symlink(real / "sub" / "page.md", real / "alias.md")  # absolute, through the real root
    os.symlink("sub/page.md", real / "relative.md")
    os.symlink(real / "sub", real / "linked-folder")
    os.mkfifo(real / "pipe.md")
    root = tmp_path / "docs"
    os.symlink(real, root)
    files, skipped = scan(ScanOptions(root))
    assert [f.rel for f in files] == ["sub/page.md"]
    assert {s.rel: s.reason for s in skipped} == {"linked-folder/": "symlinked folder not followed",
                                                 "pipe.md": "not a regular file"}


@settings(max_examples=300, deadline=None)
@given(rel=st.lists(st.sampled_from(["a", "b.md", "x.markdown", "docs", ".h", "c d.MD"]), min_size=1, max_size=4)
       .map("/".join),
       patterns=st.lists(st.sampled_from(["**/*.md", "*.md", "docs/**", "**/b.md", "a/*", "*", "?.md", "[ab]*",
                                          "**/*.markdown", "docs/*.md"]), max_size=4).map(tuple))
def test_globs_match_as_fnmatch_does_pattern_by_pattern(rel: str, patterns: tuple[str, ...]) -> None:
    """The patterns are matched as one expression: the same answer as fnmatch, one pattern at a time (a leading
    **/ also matching at the root)."""
    expected = any(fnmatch.fnmatchcase(rel, p) or (p.startswith("**/") and fnmatch.fnmatchcase(rel, p[3:]))
                   for p in patterns)
    assert _matches(rel, patterns) == expected


@pytest.mark.parametrize("data, reason", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
    (b"caf\xe9 au lait", "not UTF-8"),
    (b"  \n\t\n", "empty"),
])
def test_unindexable_files_say_why(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "f.md"
    path.write_bytes(data)
    with pytest.raises(Unreadable, match=reason):
        read_markdown(path)


def test_utf16_with_bom_and_utf8_bom_are_read(tmp_path: Path) -> None:
    (tmp_path / "u16.md").write_bytes("# Überschrift\n".encode("utf-16"))
    (tmp_path / "u8.md").write_bytes(b"\xef\xbb\xbf# Title\n")
    assert read_markdown(tmp_path / "u16.md")[0] == "# Überschrift\n"
    assert read_markdown(tmp_path / "u8.md")[0] == "# Title\n"


def test_missing_or_file_docs_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        scan(ScanOptions(tmp_path / "nope"))
    (tmp_path / "file.md").write_text("x")
    with pytest.raises(SourceError, match="is a file"):
        scan(ScanOptions(tmp_path / "file.md"))
