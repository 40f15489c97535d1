"""docvec's local HTTP JSON API (Starlette), with MCP's streamable HTTP transport mounted at /mcp.

    POST /search   {"question": "...", "k": 5, "mode": "hybrid", "where": {"tag": "auth"}, "min_score": 0.3}
    POST /get      {"source": "guides/x.md", "start_line": 10, "end_line": 40}
    GET  /status   GET /healthz

Every request passes one gate first: the Host header must name this server (and an Origin header, when a browser
sends one, must be this server's), against DNS rebinding; a configured token must come as `Authorization: Bearer`
(compared in constant time); bodies are capped. Errors are JSON {"error": "<one line>"} with a fitting status.
"""

from __future__ import annotations

import hmac
import json
import math
from typing import Any, Awaitable, Callable

import anyio.to_thread
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from docvec.text import valid_text
from docvec.config import RANGES
from docvec.errors import ConfigError, DocvecError, IndexNotFound, ModelUnavailable
from docvec.status import mask_userinfo
from docvec.text import printable
from docvec.query.hits import Fusion
from docvec.query.limits import FUSIONS, MAX_K, MAX_QUERY_CHARS
from docvec.serve.index import Index
from docvec.serve.tools import build_mcp

MAX_BODY_BYTES = 64 * 1024
LOCAL_ROUTES = {"/search", "/get", "/status", "/healthz"}  # what a local client may ask over the socket
SEARCH_FIELDS = {"question", "k", "mode", "where", "min_score", "per_file", "spans", "fusion"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class HttpError(Exception):
    """A request the API refuses: status code and one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(index: Index, host: str, port: int, token: str | None) -> Starlette:
    """The API and the MCP endpoint for one open index, served at host:port."""
    hosts, origins = allowed_hosts(host, port)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=bool(hosts), allowed_hosts=hosts,
                                         allowed_origins=origins)
    app = build_mcp(index).streamable_http_app(streamable_http_path="/mcp", stateless_http=True,
                                               json_response=True, transport_security=security, host=host,
                                               max_request_body_size=MAX_BODY_BYTES)
    routes = [Route("/search", _endpoint(index, _search), methods=["POST"]),
              Route("/get", _endpoint(index, _get), methods=["POST"]),
              Route("/status", _endpoint(index, _status), methods=["GET"]),
              Route("/healthz", _healthz, methods=["GET"])]
    app.router.routes[:0] = routes
    app.add_exception_handler(HTTPException, _http_error)  # unknown route, wrong method: JSON like every answer
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(Gate, hosts=hosts, origins=origins, token=token)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    what = {404: f"no such endpoint {request.url.path}: POST /search, POST /get, GET /status, GET /healthz, /mcp",
            405: f"{request.method} is not allowed on {request.url.path}"}.get(status, str(getattr(exc, "detail", exc)))
    return _Json({"error": printable(what)}, status_code=status)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A failure no handler expected is still one line of JSON (its type, never a traceback)."""
    return _Json({"error": f"internal error ({type(exc).__name__}): the server log has nothing more"}, status_code=500)


def allowed_hosts(host: str, port: int) -> tuple[list[str], list[str]]:
    """Host and Origin values a loopback server accepts; none checked for a wildcard bind (a token guards it)."""
    if host in ("0.0.0.0", "::"):
        return [], []
    names = {host, *LOOPBACK} if host in LOOPBACK else {host}
    shown = [f"[{n}]" if ":" in n else n for n in sorted(names)]
    return [f"{n}:{port}" for n in shown], [f"{scheme}://{n}:{port}" for n in shown for scheme in ("http", "https")]


class Gate:
    """Host/Origin check, bearer token and body cap, before any route (the MCP endpoint included)."""

    def __init__(self, app: ASGIApp, hosts: list[str], origins: list[str], token: str | None) -> None:
        self.app, self.hosts, self.origins, self.token = app, hosts, origins, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _Json({"error": refusal[1]}, status_code=refusal[0])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return 413, f"the request body is larger than {MAX_BODY_BYTES} bytes"
        server = scope.get("server")
        if server is not None and server[1] is None and scope["path"] in LOCAL_ROUTES:
            # The owner-only Unix socket beside the index: the kernel let only the owner connect (no browser, no
            # other user), so neither Host nor token applies.
            return None
        if self.hosts and headers.get("host") not in self.hosts:
            return 421, "this server answers only to its own address (Host header refused)"
        origin = headers.get("origin")
        if origin is not None and self.hosts and origin not in self.origins:
            return 403, "requests from web pages of other origins are refused"
        if self.token is not None and scope["path"] != "/healthz":
            scheme, _, given = headers.get("authorization", "").strip().partition(" ")
            # The scheme is case-insensitive (RFC 9110 11.1): 'bearer' and 'BEARER' are 'Bearer'.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "replace"),
                                                                     self.token.encode("utf-8")):
                return 401, "missing or wrong token: send 'Authorization: Bearer <serve.token>'"
        return None


Handler = Callable[[Index, dict[str, Any]], Any]


class _Json(JSONResponse):
    """A JSON response that can always be sent: an error message may quote the request, and a \\ud800 escape in
    the request is a lone surrogate that UTF-8 cannot encode (Starlette's own answer to it is a bare 500)."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return valid_text(text).encode("utf-8")


def _endpoint(index: Index, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            body = await _json_body(request) if request.method == "POST" else {}
            result = await anyio.to_thread.run_sync(lambda: handler(index, body))
            return _Json(result)
        except HttpError as exc:
            return _Json({"error": printable(exc.args[0])}, status_code=exc.status)
        except DocvecError as exc:
            return _Json({"error": _clean(str(exc), index)}, status_code=_status_of(exc))
    return endpoint


async def _json_body(request: Request) -> dict[str, Any]:
    raw = b""
    async for piece in request.stream():  # chunked bodies have no Content-Length: count as they come
        raw += piece
        if len(raw) > MAX_BODY_BYTES:
            raise HttpError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}", parse_constant=_no_constant)
    except ValueError as exc:
        raise HttpError(400, f"the body is not valid JSON ({exc})") from exc
    except RecursionError:
        raise HttpError(400, "the body is nested too deeply to be a docvec request") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _search(index: Index, body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - SEARCH_FIELDS)
    if unknown:
        raise HttpError(400, f"unknown field '{unknown[0]}'; expected {', '.join(sorted(SEARCH_FIELDS))}")
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise HttpError(400, "'question' must be a non-empty string")
    if len(question) > MAX_QUERY_CHARS:
        raise HttpError(413, f"'question' is {len(question)} characters; the limit is {MAX_QUERY_CHARS}")
    k = _int(body, "k", 1, MAX_K)  # docvec.query.search.MAX_K: the same limit everywhere
    per_file = _int(body, "per_file", *_range("per_file"))
    min_score = body.get("min_score")
    low, high = _range("min_score")
    if min_score is not None and (not isinstance(min_score, (int, float)) or isinstance(min_score, bool)
                                  or not math.isfinite(min_score) or not low <= min_score <= high):
        raise HttpError(400, f"'min_score' must be a number in {low:g}..{high:g}")
    for name in ("mode", "spans"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise HttpError(400, f"'{name}' must be a string")
    hits = index.search(question, k=k, mode=body.get("mode"), where=_where(body.get("where")),
                        min_score=min_score, per_file=per_file, spans=body.get("spans"),
                        fusion=_fusion(body.get("fusion")))
    return {"hits": [h.as_dict() for h in hits], "live": index.live, "docs_root": index.docs_root()}


def _range(key: str) -> tuple[Any, Any]:
    """The bounds the configuration accepts for query.<key>: the API accepts exactly the same."""
    return RANGES[("query", key)]


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise HttpError(400, f"'{name}' must be an integer in {low}..{high}")
    return value


def _where(where: Any) -> dict[str, str] | list[str] | None:
    if where is None:
        return None
    if isinstance(where, dict) and all(isinstance(k, str) and isinstance(v, (str, int, float, bool))
                                       for k, v in where.items()):
        bad = next((k for k in where if "=" in k or not k.strip()), None)
        if bad is not None:  # it would be read as KEY=VALUE and filter on something else than asked
            raise HttpError(400, f"'where' key {bad!r} is not a key: write {{\"KEY\": \"VALUE\"}}, e.g. "
                                 f"{{\"source\": \"guides/\"}}")
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in where.items()}
    if isinstance(where, list) and all(isinstance(v, str) for v in where):
        return list(where)
    raise HttpError(400, "'where' must be an object of KEY: VALUE filters or a list of 'KEY=VALUE' strings")


def _fusion(spec: Any) -> Fusion | None:
    """The client's fusion settings, so that a `docvec query` answered here matches one answered in-process."""
    if spec is None:
        return None
    try:
        fusion = Fusion(str(spec["method"]), float(spec["vector_weight"]), float(spec["keyword_weight"]),
                        int(spec["rrf_k"]), int(spec["candidates"]),
                        float(spec.get("file_penalty", Fusion.file_penalty)))  # absent: an older client
    except (KeyError, TypeError, ValueError) as exc:
        raise HttpError(400, "'fusion' must hold method, vector_weight, keyword_weight, rrf_k, candidates") from exc
    numbers = {k: getattr(fusion, k) for k in ("vector_weight", "keyword_weight", "rrf_k", "candidates",
                                               "file_penalty")}
    if fusion.method not in FUSIONS or not all(math.isfinite(v) and _range(k)[0] <= v <= _range(k)[1]
                                               for k, v in numbers.items()):
        raise HttpError(400, "'fusion' has a value out of range")
    return fusion


def _get(index: Index, body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"source", "start_line", "end_line"})
    if unknown:
        raise HttpError(400, f"unknown field '{unknown[0]}'; expected source, start_line, end_line")
    source = body.get("source")
    if not isinstance(source, str):
        raise HttpError(400, "'source' must be a string: a path as search returns it")
    passage = index.get(source, _int(body, "start_line", 1, 10**9), _int(body, "end_line", 1, 10**9))
    return passage.as_dict()


def _status(index: Index, body: dict[str, Any]) -> dict[str, Any]:
    return index.status()


async def _healthz(request: Request) -> Response:
    return _Json({"ok": True})


def _status_of(exc: DocvecError) -> int:
    if isinstance(exc, ConfigError):
        return 400
    if isinstance(exc, IndexNotFound):
        return 404
    return 503 if isinstance(exc, ModelUnavailable) else 500


def _clean(message: str, index: Index) -> str:
    """The message without secrets (the serve token, URL user-info) or control characters it quotes."""
    token = index.settings.serve.token
    if token and len(token) >= 4:
        message = message.replace(token, "***")
    return printable(mask_userinfo(message))
