"""Find the markdown files of a docs folder and read them, saying why any file is skipped."""

from __future__ import annotations

import errno
import fnmatch
import functools
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from docvec.chunker import mdx_to_markdown
from docvec.errors import SourceError

ALWAYS_SKIPPED_DIRS = {".git", "node_modules", "__pycache__", ".venv"}
# Files docvec itself writes (lock, holder, keyword index, Chroma's catalog): never documents, wherever they are.
DOCVEC_FILES = ("chroma.sqlite3", ".docvec-*", "keyword-*.sqlite3")
DOCVEC_DIRS = ("keyword-*.tantivy",)  # keyword indexes


@dataclass(frozen=True)
class SourceFile:
    """A file to index: its path relative to the docs root (posix) and on disk."""

    rel: str
    path: Path


@dataclass(frozen=True)
class Skipped:
    """A file that was not indexed, and why."""

    rel: str
    reason: str


@dataclass(frozen=True)
class ScanOptions:
    """Which files of the docs folder are indexed."""

    root: Path
    include: tuple[str, ...] = ("**/*.md", "**/*.markdown")
    exclude: tuple[str, ...] = ()
    skip_hidden: bool = True
    follow_symlinks: bool = False
    max_bytes: int = 20 * 1024 * 1024
    index_dirs: tuple[Path, ...] = ()  # index folders, never walked even when inside the docs folder


class Unreadable(Exception):
    """A file that cannot be indexed; the message is the reason shown to the user.

    `transient` marks read failures (permissions, a file vanishing mid-run): what is indexed for the file is kept,
    whereas content that cannot be indexed (binary, empty, ...) is a real change and its old chunks go.
    """

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


def scan(options: ScanOptions) -> tuple[list[SourceFile], list[Skipped]]:
    """The files to index under root, sorted, and the ones skipped with their reasons."""
    root = options.root
    try:
        if not root.exists():
            raise SourceError(f"docs folder {root} does not exist: pass DOCS_DIR or set docs.path in config.yaml")
        if not root.is_dir():
            raise SourceError(f"docs folder {root} is a file, not a folder: pass the folder that holds the markdown")
        os.listdir(root)
    except OSError as exc:
        raise SourceError(f"docs folder {root} cannot be read: {exc.strerror or exc}") from exc
    real_root = root.resolve()
    index_dirs = {p.resolve() for p in options.index_dirs}
    files: dict[Path, SourceFile] = {}
    skipped: list[Skipped] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: skipped.append(_walk_error(root, e))):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if _keep_dir(here / d, root, options, index_dirs, skipped))
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if not _selected(rel, name, options, skipped):
                continue
            try:  # any OS error on one path (a name too long, a permission) is that path's reason, not the run's
                _add_file(path, rel, real_root, options, files, skipped)
            except OSError as exc:
                skipped.append(Skipped(shown(rel), f"unreadable: {exc.strerror or exc}"))
    return sorted(files.values(), key=lambda f: f.rel), skipped


def shown(rel: str) -> str:
    """A path as it can be printed and stored: bytes that are not UTF-8 appear as \\xNN escapes."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _bad_name(rel: str) -> bool:
    try:
        rel.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _keep_dir(path: Path, root: Path, options: ScanOptions, index_dirs: set[Path], skipped: list[Skipped]) -> bool:
    name = path.name
    rel = path.relative_to(root).as_posix() + "/"
    if name in ALWAYS_SKIPPED_DIRS or (options.skip_hidden and name.startswith(".")):
        return False
    if _matches(name, DOCVEC_DIRS):
        return False
    try:
        if path.is_symlink():
            skipped.append(Skipped(shown(rel), "symlinked folder not followed"))
            return False
        if (path / "chroma.sqlite3").exists() or path.resolve() in index_dirs:
            return False  # an index folder (this one or another): docvec's own files are never documents
    except OSError as exc:
        skipped.append(Skipped(shown(rel), f"folder unreadable: {exc.strerror or exc}"))
        return False
    if _bad_name(rel):
        skipped.append(Skipped(shown(rel), "folder name is not valid UTF-8: rename it to index its files"))
        return False
    return True


def _selected(rel: str, name: str, options: ScanOptions, skipped: list[Skipped]) -> bool:
    if _matches(name, DOCVEC_FILES):
        return False
    if not _matches(rel, options.include) or _matches(rel, options.exclude):
        return False
    if options.skip_hidden and name.startswith("."):
        skipped.append(Skipped(shown(rel), "hidden file (its name starts with '.'; set docs.skip_hidden: false "
                                           "to index it)"))
        return False
    if _bad_name(rel):
        skipped.append(Skipped(shown(rel), "file name is not valid UTF-8: rename it to index it"))
        return False
    return True


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    """Glob match where a leading **/ also matches files at the root."""
    return _glob(patterns).match(rel) is not None


@functools.lru_cache(maxsize=64)
def _glob(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """The patterns as one expression (fnmatch's own translation): one match a file, where a call per pattern
    was 11 % of a no-op sync of 130k files."""
    each = [q for p in patterns for q in ((p, p[3:]) if p.startswith("**/") else (p,))]
    return re.compile("|".join(f"(?:{fnmatch.translate(q)})" for q in each) or "(?!)")


def _add_file(path: Path, rel: str, real_root: Path, options: ScanOptions, files: dict[Path, SourceFile],
              skipped: list[Skipped]) -> None:
    """Add a file once under one path: a symlink to a file inside the root is the same file."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        try:
            real = path.resolve(strict=True)
            info = real.stat()
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                raise
            skipped.append(Skipped(rel, "broken symlink or symlink loop"))
            return
        except RuntimeError:
            skipped.append(Skipped(rel, "broken symlink or symlink loop"))
            return
        if not real.is_relative_to(real_root) and not options.follow_symlinks:
            skipped.append(Skipped(rel, "symlink leads outside the docs folder (set docs.follow_symlinks to index "
                                        "it)"))
            return
    else:
        # The walk enters no linked folder (_keep_dir), so a file that is no link is where its path says: one
        # lstat, where resolving every part of the path was ~10 system calls a file (a no-op sync at 130k files).
        real = real_root / rel
    if not stat.S_ISREG(info.st_mode):
        skipped.append(Skipped(rel, "not a regular file"))
        return
    size = info.st_size
    if size > options.max_bytes:
        skipped.append(Skipped(rel, f"too large ({size / 2**20:.1f} MB > docs.max_file_mb "
                                    f"{options.max_bytes / 2**20:.3g}; raise it to index this file)"))
        return
    known = files.get(real)
    # Keep the real file's own path when both it and a link to it are inside the root.
    if known is None or (known.path.is_symlink() and not path.is_symlink()):
        files[real] = SourceFile(rel, path)


def _walk_error(root: Path, error: OSError) -> Skipped:
    try:
        name = Path(error.filename).relative_to(root).as_posix() if error.filename else str(root)
    except ValueError:
        name = str(error.filename)
    return Skipped(shown(name) + "/", f"folder unreadable: {error.strerror}")


def read_markdown(path: Path) -> tuple[str, bytes]:
    """The file's text (MDX read as markdown) and raw bytes; raises Unreadable with the reason a file cannot be
    indexed."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"unreadable: {exc.strerror or exc}", transient=True) from exc
    text = _decode(data)
    if path.suffix.lower() == ".mdx":
        text = mdx_to_markdown(text)
    if not text.strip():
        raise Unreadable("empty")
    return text, data


def content_file_hash(data: bytes) -> str:
    """The hash a file's records carry: ingest writes it and verify compares against it."""
    return hashlib.sha256(data).hexdigest()[:32]


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise Unreadable("invalid UTF-16") from exc
    if b"\x00" in data:
        raise Unreadable("binary file (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 (invalid byte at offset {exc.start})") from exc
