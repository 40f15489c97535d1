"""The ingest stage: docs folder -> chunks -> vectors -> Chroma, as an incremental, crash-safe sync."""
