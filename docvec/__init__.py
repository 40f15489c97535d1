"""docvec: a folder of markdown docs -> a persistent Chroma vector index, queried from the shell."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing serve at run time would load Chroma on every `import docvec`
    from serve.index import Index

__version__ = "0.1.0"


def open(config: str | None = None, index: str | None = None, collection: str | None = None) -> "Index":
    """Open an index for searching and syncing from Python (see serve/index.py): docvec.open("config.yaml")."""
    from serve.index import open_index

    return open_index(config, index, collection)
