"""Read a file beneath a directory on someone else's behalf, following no symbolic link on the way.

Resolving a path and then opening it by name is a race: between the two, any component can be swapped for a
symlink that leads out (a `get` of an indexed page leaked /etc/passwd that way). Here every component is opened
relative to the descriptor of the one before it, with O_NOFOLLOW (a symlink fails with ELOOP, whatever it points
to) and O_DIRECTORY for the folders on the way; the file is opened O_NONBLOCK (a FIFO put in its place cannot
hang the reader), then checked on its descriptor: a regular file, no larger than the cap. What is read is what
was checked, as no name is looked up again.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from docvec.errors import ConfigError, IndexNotFound
from docvec.smallfiles import read_until_end

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_beneath(root: Path, rel: str, max_bytes: int) -> bytes:
    """The bytes of `rel` (a relative path) inside `root`, refusing symlinks, non-regular files and files larger
    than `max_bytes` with one message naming the path."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ConfigError(f"'{rel}' is not a path inside the docs folder")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself is the owner's setting
    except OSError as exc:
        raise IndexNotFound(f"the docs folder {root} cannot be opened: {exc.strerror}") from None
    try:
        for n, part in enumerate(parts):
            inner = _open_at(fd, part, _DIR_FLAGS if n < len(parts) - 1 else _FILE_FLAGS, rel)
            os.close(fd)
            fd = inner
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IndexNotFound(f"'{rel}' is not a regular file inside the docs folder {root}")
        if info.st_size > max_bytes:
            raise ConfigError(f"'{rel}' is larger than {max_bytes // 2**20} MiB: ask for lines of it via search hits")
        return _read(fd, max_bytes, rel)
    finally:
        os.close(fd)


def _open_at(fd: int, name: str, flags: int, rel: str) -> int:
    """Open `name` relative to folder `fd`; a symlink, a missing name or a non-folder on the way is IndexNotFound."""
    try:
        return os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        why = ("is reached through a symbolic link" if exc.errno == errno.ELOOP
               else "is not a file inside the docs folder")
        raise IndexNotFound(f"'{rel}' {why}: get reads only regular files inside the docs folder") from None


def _read(fd: int, max_bytes: int, rel: str) -> bytes:
    """At most max_bytes from fd (a file that grew past the cap since fstat is refused, not cut)."""
    try:
        data = read_until_end(lambda: os.read(fd, 1 << 16), max_bytes)
    except OSError as exc:
        raise IndexNotFound(f"'{rel}' cannot be read: {exc.strerror}") from None
    if data is None:
        raise ConfigError(f"'{rel}' is larger than {max_bytes // 2**20} MiB: ask for lines of it via search hits")
    return data
