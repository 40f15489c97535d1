"""docvec: a folder of markdown docs -> a persistent Chroma vector index, queried from the shell."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~7 ms to import: this module is on the warm client's path (query/client.py)

if TYPE_CHECKING:  # importing the serve stage at run time would load Chroma on every `import docvec`
    from docvec.serve.index import Index

__version__ = "0.1.0"


def open(config: str | None = None, index: str | None = None, collection: str | None = None) -> "Index":
    """Open an index for searching and syncing from Python (see serve/index.py): docvec.open("config.yaml")."""
    from docvec.serve.index import open_index

    return open_index(config, index, collection)
