"""A fake Ollama server on 127.0.0.1: the part of its HTTP API the ``ollama`` client calls.

    with FakeOllama({"tiny:latest": [1000, 20]}) as server:
        ollama.Client(host=server.url).pull("tiny", stream=True)

No Ollama server binary can be installed here (it is in neither Debian, PyPI nor npm), so this
speaks the routes as the official client (``ollama`` 0.6) sends and reads them:

- ``POST /api/pull`` ``{"model", "stream", "insecure"}``: NDJSON lines ``{status, digest, total,
  completed}``, ending in ``{"status": "success"}``; a model not in ``library`` gets a line with
  ``"error"`` after ``pulling manifest``, as the server does when its registry says no.
- ``GET /api/tags``: ``{"models": [...]}``; ``POST /api/show``; ``DELETE /api/delete``: 404 with
  ``{"error": ...}`` for a model the server does not hold.

Names are completed as Ollama completes them (``tiny`` means ``tiny:latest``). A model listed in
``private`` answers a pull with an ``unauthorized`` error. Every request is logged.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def full_name(name: str) -> str:
    """``name`` with Ollama's default tag when it names none."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


class FakeOllama:
    """Models to pull (``library``: name to layer sizes) and the models pulled, over HTTP."""

    def __init__(
        self, library: dict[str, list[int]] | None = None, private: tuple[str, ...] = ()
    ) -> None:
        self.library = {full_name(k): v for k, v in (library or {}).items()}
        self.private = {full_name(name) for name in private}
        self.installed: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> FakeOllama:
        owner = self

        class Handler(_Handler):
            server_state = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def layers(self, name: str) -> list[tuple[str, int]]:
        """The (digest, size) of each layer of a model in the library."""
        name = full_name(name)
        sizes = self.library[name]
        return [
            ("sha256:" + hashlib.sha256(f"{name}/{i}".encode()).hexdigest(), size)
            for i, size in enumerate(sizes)
        ]

    def progress(self, name: str) -> list[dict[str, Any]]:
        """The lines a pull of ``name`` streams (and installs the model on the way)."""
        name = full_name(name)
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if name in self.private:
            return [*lines, {"error": "pull model manifest: unauthorized: access denied"}]
        if name not in self.library:
            return [*lines, {"error": "pull model manifest: file does not exist"}]
        for digest, size in self.layers(name):
            for done in (0, size // 2, size):
                status = f"pulling {digest[7:19]}"
                lines.append({"status": status, "digest": digest, "total": size, "completed": done})
        lines += [{"status": s} for s in ("verifying sha256 digest", "writing manifest")]
        self.installed[name] = {
            "name": name,
            "model": name,
            "modified_at": datetime.now(UTC).isoformat(),
            "size": sum(size for _, size in self.layers(name)),
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"format": "gguf", "family": "test", "parameter_size": "1M"},
        }
        return [*lines, {"status": "success"}]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FakeOllama

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._log({})
        if self.path == "/api/tags":
            return self._json(200, {"models": list(self.server_state.installed.values())})
        return self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/api/pull":
            return self._pull(body)
        if self.path == "/api/show":
            model = self.server_state.installed.get(full_name(body.get("model", "")))
            if model is None:
                return self._json(404, {"error": f"model '{body.get('model')}' not found"})
            return self._json(200, _shown(model))
        return self._json(404, {"error": "404 page not found"})

    def do_DELETE(self) -> None:
        body = self._body()
        if self.path != "/api/delete":
            return self._json(404, {"error": "404 page not found"})
        if self.server_state.installed.pop(full_name(body.get("model", "")), None) is None:
            return self._json(404, {"error": f"model '{body.get('model')}' not found"})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _pull(self, body: dict[str, Any]) -> None:
        lines = self.server_state.progress(body.get("model", ""))
        if not body.get("stream", True):
            last = lines[-1]
            return self._json(500 if "error" in last else 200, last)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            # One chunk per line, flushed: the client sees progress as it happens.
            data = json.dumps(line).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        self._log(body)
        return body

    def _log(self, body: dict[str, Any]) -> None:
        self.server_state.requests.append((self.command, self.path, body))

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _shown(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "modelfile": f"FROM {model['name']}\n",
        "parameters": "stop <end>",
        "template": "{{ .Prompt }}",
        "details": model["details"],
        "model_info": {"general.architecture": "test"},
        "capabilities": ["completion"],
        "modified_at": model["modified_at"],
    }
