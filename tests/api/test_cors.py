"""CORS: closed unless origins are configured (in-process app; no server needed for headers)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from model_download import runtime

PREFLIGHT = {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}


def test_no_cross_origin_access_by_default() -> None:
    client = TestClient(create_app())
    response = client.options("/api/v1/health", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in response.headers
    got = client.get("/api/v1/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in got.headers


def test_configured_origins_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DOWNLOAD_CORS_ORIGINS", '["http://app.example"]')
    runtime.reset()
    client = TestClient(create_app())
    allowed = client.options(
        "/api/v1/health",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    other = client.options("/api/v1/health", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in other.headers
