"""docvec's MCP server: the `search`, `get` and `status` tools over an open Index (official `mcp` SDK).

The same server speaks stdio (`docvec serve --mcp`, how editors and agents launch it) and streamable HTTP (mounted
at /mcp by `docvec serve`).
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from docvec import __version__
from docvec.errors import DocvecError
from docvec.text import printable
from docvec.query.limits import MAX_K
from docvec.serve.index import Index

INSTRUCTIONS = """docvec searches this project's markdown documentation (a vector + keyword index).
Use `search` first with a natural-language question; read more of a hit's file with `get` (source and lines from a
hit). `status` says what the index holds and when it was last synced."""

SEARCH_HELP = """Search the documentation; returns the best chunks, best first, each with its source file, the
chunk's line range, the lines that best answer the question (answer_lines), a label (heading trail), a score and
the text.
mode: "hybrid" (default: meaning + exact words; use it for most questions), "vector" (meaning only: paraphrased or
conceptual questions), "keyword" (exact terms: error codes, identifiers, config keys, CLI flags).
where: filters as {"KEY": "VALUE"}: {"source": "guides/"} (a folder, trailing slash) or {"source": "guides/x.md"}
(a file), {"tag": "auth"}, or any front-matter key, e.g. {"status": "stable"}.
min_score: drop hits scoring below this (hybrid scores are about 0..1; 0.3 keeps only fair matches).
k: number of hits, 1..50 (default 5)."""

GET_HELP = """Read lines of a file that this index holds (a `source` path exactly as `search` returns it),
e.g. to see more context around a hit. start_line/end_line are 1-based and inclusive; omit them for the whole
file (at most 5000 lines)."""

STATUS_HELP = """What the index holds: docs folder, files, chunks, when it was last synced, the embedding model and
its fingerprint."""



class _Server(MCPServer):
    """The SDK's server, whose argument errors are one line like the CLI's (pydantic's text names its website)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError) and cause.errors():
                raise ToolError(printable(_one_line(cause.errors()[0]))) from cause
            raise


def _one_line(error: Any) -> str:
    field = ".".join(str(part) for part in error.get("loc", ())) or "arguments"
    message = str(error.get("msg", "is not valid"))
    return f"'{field}': {message[:1].lower()}{message[1:]} (got {error.get('input')!r:.80})"


def build_mcp(index: Index) -> MCPServer:
    """An MCP server whose tools answer from `index` (calls run in worker threads: the event loop stays free)."""
    mcp: MCPServer = _Server(name="docvec", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    @mcp.tool(description=SEARCH_HELP)
    async def search(question: str, k: Annotated[int, Field(ge=1, le=MAX_K)] = 5,
                     mode: Literal["hybrid", "vector", "keyword"] = "hybrid",
                     where: dict[str, str] | None = None,
                     min_score: Annotated[float | None, Field(ge=-1.0, le=1.0)] = None) -> list[dict[str, Any]]:
        # (the schema carries the limits; the Index checks them again for callers that skip the schema)
        hits = await _run(lambda: index.search(question, k=k, mode=mode, where=where, min_score=min_score))
        return [_hit(h.as_dict()) for h in hits]

    @mcp.tool(description=GET_HELP)
    async def get(source: str, start_line: int | None = None, end_line: int | None = None) -> dict[str, Any]:
        passage = await _run(lambda: index.get(source, start_line, end_line))
        return passage.as_dict()  # type: ignore[no-any-return]

    @mcp.tool(description=STATUS_HELP)
    async def status() -> dict[str, Any]:
        data = await _run(index.status)
        return {k: data[k] for k in ("docs_root", "model", "provider", "files", "chunks", "last_sync",
                                     "last_sync_seconds", "fingerprint", "live")}

    return mcp


async def _run(fn: Any) -> Any:
    """Run an Index call in a worker thread; docvec's one-line errors become the tool's error text."""
    try:
        return await anyio.to_thread.run_sync(fn)
    except DocvecError as exc:
        raise ToolError(printable(str(exc))) from exc


def _hit(d: dict[str, Any]) -> dict[str, Any]:
    """A hit as a model wants it: no internal ids or bookkeeping metadata."""
    keep = ("rank", "score", "source", "line", "end_line", "answer_lines", "label", "text", "also")
    return {k: d[k] for k in keep if k in d}


NOT_A_MESSAGE = ("the line is not one JSON-RPC 2.0 message: malformed JSON, a batch (not supported), or a value "
                 "too deep, too large or not valid text")


def run_stdio(mcp: MCPServer) -> None:
    """MCP over stdin/stdout, where a line that is not one JSON-RPC message (malformed JSON, a batch, nesting or a
    number too large to parse, a lone surrogate) gets a JSON-RPC error answer: the SDK drops such a line, and the
    client waits for an answer forever (to be reported upstream; this uses the SDK's stdio transport and server
    loop, which mcp 2.x keeps on these names)."""
    anyio.run(_run_stdio, mcp)


async def _run_stdio(mcp: MCPServer) -> None:
    from mcp.server.stdio import stdio_server
    from mcp.shared._context_streams import create_context_streams
    from mcp.shared.message import SessionMessage
    from mcp_types import ErrorData, JSONRPCError

    server = mcp._lowlevel_server
    async with stdio_server() as (read_stream, write_stream):
        messages, incoming = create_context_streams[Any](0)

        async def sort_out() -> None:
            async with messages:
                async for item in read_stream:
                    if not isinstance(item, Exception):
                        await messages.send(item)
                        continue
                    error = ErrorData(code=-32700, message=NOT_A_MESSAGE)
                    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                        await write_stream.send(SessionMessage(JSONRPCError(jsonrpc="2.0", id=None, error=error)))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sort_out)
            await server.run(incoming, write_stream, server.create_initialization_options())
            tasks.cancel_scope.cancel()
