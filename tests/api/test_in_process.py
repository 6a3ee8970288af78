"""What the API answers before it needs Prefect: the key check, request bodies, hubs, docs.

In-process (FastAPI's TestClient): these answers come before any Prefect call, so no server is
needed; the routes that reach Prefect are tested against a real one in test_api.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from api.main import create_app
from api.routes.models import _export_error
from model_download import runtime
from model_download.errors import InvalidReferenceError, ServiceUnavailableError
from plugins import registry

KEY = "s3cret-key"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("MODEL_DOWNLOAD_API_KEY", KEY)
    # A plugin that is installed (registered) but cannot load here, as a broken extra would.
    hubs = {**registry.BUILTINS["hub"], "broken": "no_such_package.hub:BrokenHub"}
    monkeypatch.setitem(registry.BUILTINS, "hub", hubs)
    runtime.reset()
    # Nothing listens there: a route that reached Prefect would fail, and no temporary
    # server is started for these requests, which are all answered before that.
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield TestClient(create_app(), headers={"X-API-Key": KEY})
    runtime.reset()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "é".encode()},
        {"Authorization": "Bearer é".encode()},
        {"X-API-Key": "\u00e9\u00e9".encode("latin-1")},
    ],
)
def test_a_non_ascii_key_is_refused_not_a_crash(client: TestClient, headers: dict) -> None:
    response = TestClient(client.app).get("/api/v1/plugins", headers=headers)
    assert response.status_code == 401, response.text
    assert "missing or wrong API key" in response.text


def test_a_non_ascii_configured_key_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DOWNLOAD_API_KEY", "clé")
    runtime.reset()
    client = TestClient(create_app())
    assert client.get("/api/v1/plugins", headers={"X-API-Key": "clé".encode()}).status_code == 200
    assert client.get("/api/v1/plugins", headers={"X-API-Key": "cle"}).status_code == 401


def test_an_unavailable_hub_is_named_with_its_reason(client: TestClient) -> None:
    body = {"models": [{"name": "a/b", "hub": "broken"}]}
    response = client.post("/api/v1/models/download", json=body)
    assert response.status_code == 400
    assert "'broken' is installed but unavailable here: ModuleNotFoundError" in response.text
    unknown = client.post("/api/v1/models/download", json={"models": [{"name": "a", "hub": "x"}]})
    assert unknown.status_code == 400 and "supports geti, huggingface" in unknown.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a/b", "hub": "huggingface", "config": {"precison": "int8"}}, "precison"),
        ({"name": "a/b", "hub": "huggingface", "is_ovm": True}, "is_ovm"),
        (
            {"name": "a/b", "hub": "openvino", "config": {"openvino_config": {"grup": 1}}},
            "grup",
        ),
    ],
)
def test_a_misspelt_field_is_a_422_naming_it(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/api/v1/models/download", json={"models": [body]})
    assert response.status_code == 422 and field in response.text


@pytest.mark.parametrize(
    "path",
    ["team\x00x", "x" * 300, "ok/" + "é" * 128, "tab\there"],
)
def test_a_download_path_the_os_would_refuse_is_a_400(client: TestClient, path: str) -> None:
    body = {"models": [{"name": "org/m", "hub": "huggingface"}]}
    response = client.post("/api/v1/models/download", params={"download_path": path}, json=body)
    assert response.status_code == 400, response.text
    assert "download_path" in response.text


def test_an_os_error_while_exporting_is_a_clear_answer() -> None:
    # Running as root here, the file system refuses nothing: the mapping is checked directly.
    too_long = _export_error(OSError(errno.ENAMETOOLONG, "File name too long"), "t")
    assert isinstance(too_long, InvalidReferenceError) and "shorter" in str(too_long)
    full = _export_error(OSError(errno.ENOSPC, "No space left on device"), "t")
    assert full.status_code == 507 and "free space" in full.detail
    denied = _export_error(OSError(errno.EACCES, "Permission denied"), "t")
    assert isinstance(denied, ServiceUnavailableError) and "writable" in str(denied)


def test_openapi_shows_the_hubs_and_docs_are_open(client: TestClient) -> None:
    bare = TestClient(client.app)  # no key: the docs describe the API, they hold no data
    schema = bare.get("/api/v1/openapi.json").json()
    request = schema["components"]["schemas"]["ModelRequest"]
    hubs = set(request["properties"]["hub"]["enum"])
    assert {"huggingface", "ollama", "openvino", "geti"} <= hubs
    assert bare.get("/docs").status_code == 200
    assert bare.get("/api/v1/plugins").status_code == 401


def test_plugins_in_the_references_shape(client: TestClient) -> None:
    answer = client.get("/api/v1/plugins").json()
    assert set(answer) >= {
        "available_plugins",
        "total_count",
        "available_count",
        "activation_instructions",
    }
    assert set(answer["available_plugins"]) == {"downloader", "converter"}
    broken = next(p for p in answer["available_plugins"]["downloader"] if p["name"] == "broken")
    assert broken["type"] == "downloader" and broken["available"] is False
    assert broken["unavailable_reason"].startswith("ModuleNotFoundError")
    assert set(broken["capabilities"]) >= {"supports_parallel_downloads"}
    hf = next(p for p in answer["available_plugins"]["downloader"] if p["name"] == "huggingface")
    assert hf["available"] and hf["unavailable_reason"] is None
    assert hf["capabilities"]["supports_search"] is True
    total = sum(len(v) for v in answer["available_plugins"].values())
    assert answer["total_count"] == total


class _Busy(BaseHTTPRequestHandler):
    """Answers as Prefect on a locked SQLite database does, once its client gave up retrying."""

    def _busy(self) -> None:
        body = b'{"exception_message": "database is locked"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _busy

    def log_message(self, *args: object) -> None:
        pass


def test_a_busy_prefect_server_is_a_503_saying_so(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        # No client retries: they would only make the test wait for the same answer.
        settings = {PREFECT_API_URL: url, PREFECT_CLIENT_MAX_RETRIES: 0}
        with temporary_settings(settings), TestClient(create_app()) as client:
            response = client.get("/api/v1/jobs")
    finally:
        server.shutdown()
    assert response.status_code == 503, response.text
    assert "busy: its database may be locked" in response.text
