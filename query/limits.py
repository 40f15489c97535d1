"""What a question may ask: its length, the hits it may want, the rankings and the ways of pointing at answers.

A module of plain values: the warm client (query/client.py) checks options against them without importing the
search's dataclasses, and the search, the CLI, HTTP, MCP and the API use the same ones.
"""

MAX_QUERY_CHARS = 10_000
MAX_K = 1000  # the most hits one search returns: the same limit in the CLI, HTTP, MCP (in its schema) and the API
MODES = ("vector", "keyword", "hybrid")
FUSIONS = ("score", "rrf")
SPAN_MODES = ("words", "model", "off")  # how a hit points at its answering lines (query/spans.py)
