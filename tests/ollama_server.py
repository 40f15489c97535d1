"""A small HTTP server on 127.0.0.1 that speaks the part of Ollama's API docvec uses, with fault injection.

`/api/version`, `/api/tags`, `/api/show` and `/api/embed` answer with Ollama's response shapes and error bodies
(``{"error": "..."}`` with Ollama's status codes). Vectors come from the built-in MiniLM model
(``backend="builtin"``, for quality checks and benchmarks) or from a deterministic bag of words (``"hash"``, fast).
Token counts (``prompt_eval_count``, the context-length check) use the real MiniLM word-piece tokenizer.

This is the network edge of the tests: the real `ollama` client talks to it over TCP. Run it alone with
``python tests/ollama_server.py --port 11434 --backend builtin`` to point a real docvec at it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


@dataclass
class FakeModel:
    """A model the server has 'pulled'."""

    name: str  # with its tag, as /api/tags lists it
    family: str = "bert"
    context: int = 512
    dimension: int = 384
    capabilities: list[str] = field(default_factory=lambda: ["embedding"])
    digest: str = ""
    enforced: int = 0  # the limit the runner really applies, when lower than the context /api/show reports

    def __post_init__(self) -> None:
        self.digest = self.digest or hashlib.sha256(self.name.encode()).hexdigest()
        self.enforced = self.enforced or self.context


@dataclass
class Faults:
    """What goes wrong, and how often; counters decrease as faults are served."""

    fail_embeds: int = 0  # the next N /api/embed requests answer 500
    drop_embeds: int = 0  # the next N /api/embed requests close the connection without an answer
    delay: float = 0.0  # seconds every /api/embed request sleeps before answering
    poison: str | None = None  # any input containing this makes /api/embed answer 500, every time
    fail_after: int | None = None  # after N successful embeds, every further embed answers 500


class FakeOllama:
    """The server object: start(), url, stop(); the models, faults and a log of embed requests are public."""

    def __init__(self, backend: str = "hash", port: int = 0) -> None:
        self.backend = backend
        self.models: dict[str, FakeModel] = {}
        self.faults = Faults()
        self.requests: list[dict[str, Any]] = []  # every /api/embed body
        self.lock = threading.Lock()
        self._embedder: Any = None
        self._tokenizer: Any = None
        self._init = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def add(self, model: FakeModel) -> FakeModel:
        self.models[model.name] = model
        return model

    def start(self) -> "FakeOllama":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def embed_count(self) -> int:
        return len(self.requests)

    # -- answers ------------------------------------------------------------------------------------------

    def model(self, name: str) -> FakeModel | None:
        return self.models.get(name) or self.models.get(f"{name}:latest")

    def tokens(self, texts: list[str]) -> list[int]:
        with self._init:
            if self._tokenizer is None:
                from docvec.embedders.builtin import load_tokenizer

                self._tokenizer = load_tokenizer()
                self._tokenizer.no_truncation()
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts)]

    def vectors(self, texts: list[str], dimension: int) -> list[list[float]]:
        if self.backend == "builtin":
            with self._init:
                if self._embedder is None:
                    from docvec.embedders.builtin import BuiltinEmbedder

                    self._embedder = BuiltinEmbedder()
            return [[float(x) for x in v] for v in self._embedder.embed_documents(texts)]
        return [_bag_of_words(t, dimension) for t in texts]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a dropped connection is a fault we inject on purpose


def _bag_of_words(text: str, dimension: int) -> list[float]:
    vec = np.zeros(dimension, dtype=np.float32)
    for word in text.lower().split():
        vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % dimension] += 1.0
    norm = float(np.linalg.norm(vec))
    return [float(x) for x in (vec / norm if norm else vec + 1 / np.sqrt(dimension))]


def _handler(server: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path == "/api/version":
                self._send(200, {"version": "0.12.6"})
            elif self.path == "/api/tags":
                self._send(200, {"models": [_tag(m) for m in server.models.values()]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/api/show":
                self._show(body)
            elif self.path == "/api/embed":
                self._embed(body)
            else:
                self._send(404, {"error": "not found"})

        def _show(self, body: dict[str, Any]) -> None:
            model = server.model(body.get("model", ""))
            if model is None:
                self._send(404, {"error": f"model '{body.get('model')}' not found"})
                return
            info = {"general.architecture": model.family, f"{model.family}.context_length": model.context,
                    f"{model.family}.embedding_length": model.dimension}
            self._send(200, {"modelfile": "", "parameters": "", "template": "", "details": {"family": model.family},
                             "model_info": info, "capabilities": model.capabilities,
                             "modified_at": "2026-01-01T00:00:00Z"})

        def _embed(self, body: dict[str, Any]) -> None:
            texts = body.get("input", [])
            texts = [texts] if isinstance(texts, str) else list(texts)
            with server.lock:
                server.requests.append(body)
                faults = server.faults
                dropped = faults.drop_embeds > 0
                failed = faults.fail_embeds > 0 or (faults.fail_after is not None and faults.fail_after <= 0)
                faults.drop_embeds -= dropped
                faults.fail_embeds -= (faults.fail_embeds > 0 and not dropped)
                if faults.fail_after is not None and not failed:
                    faults.fail_after -= 1
            if faults.delay:
                time.sleep(faults.delay)
            if dropped:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            model = server.model(body.get("model", ""))
            if model is None:
                self._send(404, {"error": f"model \"{body.get('model')}\" not found, try pulling it first"})
            elif "embedding" not in model.capabilities:
                self._send(400, {"error": f"\"{model.name}\" does not support embeddings"})
            elif failed or (faults.poison and any(faults.poison in t for t in texts)):
                self._send(500, {"error": "llama runner process has terminated: exit status 2"})
            else:
                self._answer(model, texts, body.get("truncate", True))

        def _answer(self, model: FakeModel, texts: list[str], truncate: bool) -> None:
            counts = server.tokens(texts)
            if not truncate and max(counts, default=0) > model.enforced:
                self._send(400, {"error": "the input length exceeds the context length"})
                return
            # truncate: true (Ollama's default) cuts silently, as the real server does: the fault docvec avoids
            cut = [t if n <= model.enforced else t[: len(t) * model.enforced // n] for t, n in zip(texts, counts)]
            self._send(200, {"model": model.name, "embeddings": server.vectors(cut, model.dimension),
                             "total_duration": 1000, "load_duration": 10,
                             "prompt_eval_count": sum(min(n, model.enforced) for n in counts)})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _tag(model: FakeModel) -> dict[str, Any]:
    return {"name": model.name, "model": model.name, "modified_at": "2026-01-01T00:00:00Z", "size": 45_000_000,
            "digest": model.digest, "details": {"format": "gguf", "family": model.family, "families": [model.family],
                                                "parameter_size": "23M", "quantization_level": "F16"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--backend", choices=["builtin", "hash"], default="builtin")
    parser.add_argument("--model", default="all-minilm:latest")
    args = parser.parse_args()
    server = FakeOllama(args.backend, args.port)
    server.add(FakeModel(args.model))
    print(f"fake Ollama on {server.url} serving {args.model} ({args.backend})", flush=True)
    server.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
