"""Every error docvec raises on purpose, in one tree.

    DocvecError                 base: the CLI turns any of these into one line and exit code 1
    ├── Interrupted             Ctrl-C or SIGTERM: work stopped between two atomic writes (carries what was done)
    ├── Refused                 the run would act on the wrong docs folder or delete most of the index; it names
    │                           the flag that confirms it (--docs-moved, --yes)
    ├── ConfigError             a config file, key or value is wrong (names file, key, expected)
    │   └── InvalidValue        an argument's value is out of range (k=0, a NaN score, line -3); also a
    │                           ValueError, as the Python API's wrong types are TypeError
    ├── SourceError             the docs folder is missing, not a folder, or unreadable
    ├── EmbeddingError          the embedding provider failed (raised ``from`` the provider's error)
    │   ├── ModelUnavailable    the model cannot be loaded or reached (missing package, bad checksum, not pulled,
    │   │                       server down, not an embedding model)
    │   └── InputRejected       the model refuses one input (longer than its context); carries its position
    └── StoreError              Chroma failed (raised ``from`` Chroma's error)
        ├── IndexNotFound       no index at the configured place: run ``docvec ingest``
        ├── IndexMismatch       the index was built with another fingerprint than the configuration's
        └── LockHeld            another process is writing this index

Provider errors are mapped in the embedder modules, Chroma errors in ``docvec/store.py``; nothing else
catches third-party exceptions. Each of those places first asks ``interrupt_behind``: a Ctrl-C or stop signal
that a third party re-raised as its own error stays an interrupt (exit 130 / 143, never "the model failed").
"""

from __future__ import annotations


class DocvecError(Exception):
    """Base class: a failure docvec understands and can explain in one line."""


class Interrupted(DocvecError):
    """The user interrupted a run; everything stored so far is consistent and the next run continues."""

    def __init__(self, message: str, report: object = None, signal_number: int = 2) -> None:
        super().__init__(message)
        self.report = report
        self.signal_number = signal_number  # SIGINT (2) or SIGTERM (15): the exit code is 128 + it


class Refused(DocvecError):
    """A run that looks like a mistake (another docs folder, most of the index deleted) and needs confirming."""


class ConfigError(DocvecError):
    """A configuration file, key or value is invalid."""


class InvalidValue(ConfigError, ValueError):
    """An argument (of a command, a request or a Python call) has a value outside what it accepts."""


class SourceError(DocvecError):
    """The docs folder cannot be read."""


class EmbeddingError(DocvecError):
    """The embedding provider failed."""


class ModelUnavailable(EmbeddingError):
    """The configured model cannot be loaded or reached."""


class InputRejected(EmbeddingError):
    """The model refuses one particular input; `index` is its position in the batch the caller passed."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class StoreError(DocvecError):
    """The vector store (Chroma) failed."""


class IndexNotFound(StoreError):
    """There is no index where the configuration points."""


class IndexMismatch(StoreError):
    """The index was built with a different embedding fingerprint."""


class LockHeld(StoreError):
    """Another process holds the writer lock of this index."""


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt down a third-party error's chain, if any. A C extension running Python code when a signal
    lands re-raises the KeyboardInterrupt as its own error: pybind11's module init turns it into
    ImportError("initialization failed") with the interrupt as its cause, so a Ctrl-C while onnxruntime loaded
    read as a broken model (exit 1, not 130)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None
