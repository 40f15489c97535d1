"""Which files are indexed, and the reason given for every file that is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from docvec.errors import SourceError
from docvec.ingest.scan import ScanOptions, Unreadable, read_markdown, scan


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
