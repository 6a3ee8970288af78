"""`model-download serve` (what `make run` starts): a run started through Prefect's REST API,
as the UI starts one, downloads into the store; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from model_download.runtime import get_store
from tests.conftest import REPO_ROOT, cli_env
from tests.deployments.rest import call, free_port
from tests.servers.hf_hub import FakeHub


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
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    service = subprocess.Popen(
        [sys.executable, "-m", "model_download", "serve", "--port", str(port)],
        env=cli_env(
            MODEL_DOWNLOAD_PREFECT_HOME=str(tmp_path / "prefect"),
            MODEL_DOWNLOAD_API_PORT=str(free_port()),
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
            lambda: call(f"{api}/deployments/name/download-models/download-models"),
            lambda d: bool(d.get("id")),
            timeout=120,
        )
        schema = deployment["parameter_openapi_schema"]
        assert "models" in schema["properties"]  # the UI renders a form from this
        pipeline = _poll(
            lambda: call(f"{api}/deployments/name/pipeline/pipeline"),
            lambda d: bool(d.get("id")),
            timeout=60,
        )
        assert "convert_concurrency" in pipeline["parameter_openapi_schema"]["properties"]
        recheck = _poll(
            lambda: call(f"{api}/deployments/name/download-models/recheck"),
            lambda d: bool(d.get("id")),
            timeout=60,
        )
        assert recheck["schedules"][0]["schedule"]["cron"] == "*/30 * * * *"
        assert recheck["parameters"]["models"][0]["id"] == "org/model"

        run = call(
            f"{api}/deployments/{deployment['id']}/create_flow_run",
            {"parameters": {"models": [{"id": "org/model"}]}},
        )
        final = _poll(
            lambda: call(f"{api}/flow_runs/{run['id']}"),
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
