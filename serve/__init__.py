"""The warm stage: the Python API, `docvec serve` (HTTP + MCP), the client `docvec query` uses, watch mode."""
