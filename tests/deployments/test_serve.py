"""`model-download serve` (what `make run` starts): a run started through Prefect's REST API,
as the UI starts one, downloads into the store; Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from model_download.runtime import get_store
from tests.conftest import REPO_ROOT, cli_env
from tests.servers.hf_hub import FakeHub


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json"},
    )
    for attempt in range(10):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            # Prefect on SQLite answers 503 while its database is locked: retry, as its client.
            if exc.code != 503 or attempt == 9:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _poll(fetch, done, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fetch()
            if done(value):
                return value
        except OSError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_served_deployment_runs_from_the_rest_api(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/model", {"config.json": b"{}", "model.bin": os.urandom(20_000)})
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    service = subprocess.Popen(
        [sys.executable, "-m", "model_download", "serve", "--port", str(port)],
        env=cli_env(
            MODEL_DOWNLOAD_PREFECT_HOME=str(tmp_path / "prefect"),
            MODEL_DOWNLOAD_API_PORT=str(_free_port()),
            MODEL_DOWNLOAD_RECHECK_MODELS='["hf:org/model@main"]',
            MODEL_DOWNLOAD_RECHECK_CRON="*/30 * * * *",
        ),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deployment = _poll(
            lambda: _call(f"{api}/deployments/name/download-models/download-models"),
            lambda d: bool(d.get("id")),
            timeout=120,
        )
        schema = deployment["parameter_openapi_schema"]
        assert "models" in schema["properties"]  # the UI renders a form from this
        pipeline = _poll(
            lambda: _call(f"{api}/deployments/name/pipeline/pipeline"),
            lambda d: bool(d.get("id")),
            timeout=60,
        )
        assert "convert_concurrency" in pipeline["parameter_openapi_schema"]["properties"]
        recheck = _poll(
            lambda: _call(f"{api}/deployments/name/download-models/recheck"),
            lambda d: bool(d.get("id")),
            timeout=60,
        )
        assert recheck["schedules"][0]["schedule"]["cron"] == "*/30 * * * *"
        assert recheck["parameters"]["models"][0]["id"] == "org/model"

        run = _call(
            f"{api}/deployments/{deployment['id']}/create_flow_run",
            {"parameters": {"models": [{"id": "org/model"}]}},
        )
        final = _poll(
            lambda: _call(f"{api}/flow_runs/{run['id']}"),
            lambda r: r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED"),
            timeout=120,
        )
        assert final["state"]["type"] == "COMPLETED", final["state"]
        assert [m.manifest.id for m in get_store().list()] == ["org/model"]
    finally:
        service.send_signal(signal.SIGINT)
        output, _ = service.communicate(timeout=60)
    assert f"Prefect UI: http://127.0.0.1:{port}" in output
    with socket.socket() as sock:  # the Prefect server went down with it
        assert sock.connect_ex(("127.0.0.1", port)) != 0
