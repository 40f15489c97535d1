"""docvec: a folder of markdown docs -> a persistent Chroma vector index, queried from the shell."""

__version__ = "0.1.0"
