"""The fingerprint of an index: everything that determines its vectors, so two models are never mixed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from docvec.chunker import CHUNKER_VERSION, ChunkParams
from docvec.embedders import EmbedderInfo

FORMAT_VERSION = 2  # layout of docvec's records and metadata (2: a pointer collection names the live one)


@dataclass(frozen=True)
class Fingerprint:
    """What built an index; two indexes with equal fingerprints have interchangeable vectors."""

    provider: str
    model: str
    digest: str
    dimension: int
    normalized: bool
    query_prefix: str
    document_prefix: str
    truncation: int
    chunker_version: str
    max_tokens: int
    min_tokens: int
    overlap_tokens: int
    heading_context: bool

    @classmethod
    def build(cls, info: EmbedderInfo, params: ChunkParams) -> "Fingerprint":
        """The fingerprint of an embedder and chunking parameters."""
        return cls(info.provider, info.model, info.digest, info.dimension, info.normalized, info.query_prefix,
                   info.document_prefix, info.max_tokens, CHUNKER_VERSION, params.max_tokens, params.min_tokens,
                   params.overlap_tokens, params.heading_context)

    def same_vectors(self, other: "Fingerprint") -> bool:
        """Whether the two embed a document text to the same vector: only chunking differs, which changes what
        texts there are, not the vector of a given text (so a reindex may copy the vectors of texts it keeps)."""
        chunking = {"chunker_version", "max_tokens", "min_tokens", "overlap_tokens", "heading_context"}
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name not in chunking)

    def short_hash(self) -> str:
        """12 hex digits identifying this fingerprint, stored on every record it built."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Fingerprint":
        data = json.loads(text)
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def differences(self, other: "Fingerprint") -> list[str]:
        """Human-readable 'key: old → new' lines for what differs from `other` (self is the old one)."""
        return [f"{f.name}: {getattr(self, f.name)!r} → {getattr(other, f.name)!r}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]
