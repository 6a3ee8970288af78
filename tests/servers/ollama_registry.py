"""A real OCI registry (Debian's ``docker-registry``) holding Ollama models, and a proxy before it.

    with DockerRegistry(tmp_path / "registry") as registry, CountingProxy(registry.url) as proxy:
        registry.push_model("library/tiny", "latest", [(MODEL, data), (TEMPLATE, b"{{ .Prompt }}")])
        # point the client at proxy.url; proxy.requests lists what it asked for

The registry is the distribution project's own server, so pushes, manifests, digests and ranges
behave as on any registry. The proxy adds what a test needs and a registry cannot do: it counts
requests, cuts a response after some bytes, and can demand a Bearer token handed out by its own
``/token`` endpoint (the anonymous token exchange registry.ollama.ai asks for).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"
BINARY = "docker-registry"

_CONFIG = """version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


#: Set to 1 (as CI does) to fail, not skip, the tests that need the registry when it is missing.
REQUIRE = "MODEL_DOWNLOAD_REQUIRE_REGISTRY"


def registry_available() -> bool:
    """Whether the ``docker-registry`` binary is installed (``apt-get install docker-registry``)."""
    return shutil.which(BINARY) is not None


def require_registry() -> None:
    """Skip the calling test when ``docker-registry`` is missing; fail it when ``REQUIRE`` says
    the registry tests must run (a CI machine that lost the package must not go green)."""
    if registry_available():
        return
    why = "docker-registry is not installed: apt-get install docker-registry"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{why} ({REQUIRE}=1 requires the Ollama registry tests)")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DockerRegistry:
    """``docker-registry serve`` on 127.0.0.1 with its storage under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._http = urllib3.PoolManager()

    def __enter__(self) -> DockerRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        config = self.root / "config.yml"
        config.write_text(_CONFIG.format(root=self.root / "data", port=port))
        log = open(self.root / "registry.log", "wb")
        self._process = subprocess.Popen(
            [BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self._http.request("GET", f"{self.url}/v2/", retries=False).status == 200:
                    return self
            except urllib3.exceptions.HTTPError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"docker-registry did not start: {self.root / 'registry.log'}")

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    # -- pushing ---------------------------------------------------------------------------------

    def push_blob(self, repo: str, data: bytes) -> str:
        """Upload ``data`` (monolithic upload); return its digest ``sha256:<hex>``."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = self._http.request("POST", f"{self.url}/v2/{repo}/blobs/uploads/")
        assert start.status == 202, start.data
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        joiner = "&" if urlsplit(location).query else "?"
        done = self._http.request(
            "PUT",
            f"{location}{joiner}digest={digest}",
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status == 201, done.data
        return digest

    def push_manifest(self, repo: str, tag: str, manifest: bytes) -> str:
        """Put ``manifest`` under ``tag``; return its digest."""
        response = self._http.request(
            "PUT",
            f"{self.url}/v2/{repo}/manifests/{tag}",
            body=manifest,
            headers={"Content-Type": MANIFEST_TYPE},
        )
        assert response.status == 201, response.data
        return response.headers["Docker-Content-Digest"]

    def push_model(self, repo: str, tag: str, layers: list[tuple[str, bytes]]) -> PushedModel:
        """Push an Ollama model: a config blob and ``layers`` of (media type, bytes)."""
        config = json.dumps({"model_format": "gguf", "model_family": "test"}).encode()
        entries = [(CONFIG_TYPE, config), *layers]
        digests = [self.push_blob(repo, data) for _, data in entries]
        described = [
            {"mediaType": kind, "digest": digest, "size": len(data)}
            for (kind, data), digest in zip(entries, digests, strict=True)
        ]
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": described[0],
                "layers": described[1:],
            }
        ).encode()
        digest = self.push_manifest(repo, tag, body)
        pairs = zip(digests, entries, strict=True)
        blobs = {blob.removeprefix("sha256:"): data for blob, (_, data) in pairs}
        return PushedModel(repo=repo, tag=tag, manifest=body, digest=digest, blobs=blobs)

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (to tamper with them)."""
        hex_digest = digest.removeprefix("sha256:")
        return (
            self.root / f"data/docker/registry/v2/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"
        )


@dataclass
class PushedModel:
    """What :meth:`DockerRegistry.push_model` put in the registry."""

    repo: str
    tag: str
    manifest: bytes
    digest: str
    blobs: dict[str, bytes] = field(default_factory=dict)  # hex digest -> bytes


@dataclass
class Logged:
    """One request the proxy saw."""

    method: str
    path: str
    range: str | None
    status: int = 0


class CountingProxy:
    """A reverse proxy on 127.0.0.1 to ``upstream``: logs, cuts responses, demands tokens.

    Attributes:
        requests: every request seen, in order.
        cut: (path fragment, byte count): the next response whose path contains the fragment is
            cut after that many body bytes, then the rule is spent.
        token: when set, requests whose path holds ``protect`` (``/v2/``) need
            ``Authorization: Bearer <token>``; ``/token`` hands it out unless ``refuse_token``.
        tamper: a path fragment: such responses get a byte more than the registry sent.
        ignore_ranges: forward requests without their ``Range``, as servers without ranges do.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.requests: list[Logged] = []
        self.cut: tuple[str, int] | None = None
        self.token: str | None = None
        self.refuse_token = False
        self.protect = "/v2/"
        self.tamper: str | None = None
        self.ignore_ranges = False
        self.token_requests: list[dict[str, list[str]]] = []
        self.url = ""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> CountingProxy:
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def blob_requests(self) -> list[Logged]:
        """The requests for blobs, in order."""
        return [r for r in self.requests if "/blobs/" in r.path]

    def clear(self) -> None:
        """Forget the requests seen so far."""
        with self._lock:
            self.requests.clear()

    def _take_cut(self, path: str) -> int | None:
        with self._lock:
            if self.cut and self.cut[0] in path:
                count, self.cut = self.cut[1], None
                return count
        return None


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: CountingProxy

    def log_message(self, *_args: object) -> None:
        pass  # the request log is the owner's list

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.owner
        entry = Logged(self.command, self.path, self.headers.get("Range"))
        with owner._lock:
            owner.requests.append(entry)
        if self.path.startswith("/token"):
            entry.status = self._token()
            return
        wanted = f"Bearer {owner.token}"
        if owner.token and owner.protect in self.path and self.headers["Authorization"] != wanted:
            entry.status = self._challenge()
            return
        entry.status = self._forward()

    def _token(self) -> int:
        query = parse_qs(urlsplit(self.path).query)
        self.owner.token_requests.append(query)
        if self.owner.refuse_token:
            return self._send(403, b'{"errors":[{"code":"DENIED","message":"no"}]}')
        return self._send(200, json.dumps({"access_token": self.owner.token}).encode())

    def _challenge(self) -> int:
        realm = f"http://{self.headers['Host']}/token"
        repo = self.path.split("/v2/", 1)[-1].rsplit("/manifests/", 1)[0].rsplit("/blobs/", 1)[0]
        header = f'Bearer realm="{realm}",service="test-registry",scope="repository:{repo}:pull"'
        body = b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}'
        return self._send(401, body, {"WWW-Authenticate": header})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> int:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _forward(self) -> int:
        upstream = self.owner.upstream
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
        skip = {"host", "authorization", "connection"}
        if self.owner.ignore_ranges:
            skip.add("range")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        conn.request(self.command, self.path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if self.owner.tamper and self.owner.tamper in self.path:
            body += b" "  # still valid JSON, but no longer the bytes the digest names
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return response.status
        cut = self.owner._take_cut(self.path) if response.status < 300 else None
        if cut is None:
            self.wfile.write(body)
            return response.status
        self.wfile.write(body[:cut])
        self.wfile.flush()
        # A connection cut mid-body: the client has the headers and some bytes, then EOF.
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
        return response.status
