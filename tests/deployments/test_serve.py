"""`model-download serve` (what `make run` starts): a run started through Prefect's REST API,
as the UI starts one, downloads into the store; Ctrl-C stops everything."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
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
    port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{port}/api"
    service = subprocess.Popen(
        [sys.executable, "-m", "model_download", "serve", "--port", str(port)],
        env=cli_env(
            MODEL_DOWNLOAD_PREFECT_HOME=str(tmp_path / "prefect"),
            MODEL_DOWNLOAD_API_PORT=str(api_port),
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
            lambda: call(f"{api}/deployments/name/recheck/recheck"),
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
        # The runner polls every second: the run left SCHEDULED within about that.
        states = call(f"{api}/flow_run_states/?flow_run_id={run['id']}")
        picked = min(_epoch(s["timestamp"]) for s in states if s["type"] == "PENDING")
        assert picked - _epoch(run["created"]) < 2.5, states
        # The run was forked from the warm fork server, not started as a new interpreter.
        assert any("multiprocessing.forkserver" in c for c in _children_commands(service.pid))
        # The API line is printed once the API answers, and it does answer.
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v1/health") as health:
            assert health.status == 200
    finally:
        service.send_signal(signal.SIGINT)
        output, _ = service.communicate(timeout=60)
    assert f"Prefect UI: http://127.0.0.1:{port}" in output
    assert f"REST API:   http://127.0.0.1:{api_port}/docs" in output
    assert service.returncode == 0, output
    for closed in (port, api_port):  # the Prefect server and the API went down with it
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", closed)) != 0, closed


def _children_commands(pid: int) -> list[str]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                found.append(Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"))
    return found


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployments.serve"],
        env=cli_env(MODEL_DOWNLOAD_PREFECT_HOME=str(tmp_path / "prefect"), **env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_port_in_use_is_named_with_its_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        settings = ("MODEL_DOWNLOAD_PREFECT_PORT", "MODEL_DOWNLOAD_API_PORT")
        for setting, other in (settings, settings[::-1]):
            done = _serve(tmp_path, **{setting: str(taken), other: str(free_port())})
            assert done.returncode == 1, done.stderr
            assert f"cannot listen on 127.0.0.1:{taken}" in done.stderr and setting in done.stderr
            assert "Traceback" not in done.stderr and "REST API" not in done.stdout


def test_a_bad_recheck_entry_is_one_clear_line(tmp_path: Path) -> None:
    done = _serve(
        tmp_path,
        MODEL_DOWNLOAD_PREFECT_PORT=str(free_port()),
        MODEL_DOWNLOAD_API_PORT=str(free_port()),
        MODEL_DOWNLOAD_RECHECK_MODELS='["org/without-hub"]',
    )
    assert done.returncode == 1
    assert "MODEL_DOWNLOAD_RECHECK_MODELS has a bad entry 'org/without-hub'" in done.stderr
    assert "Traceback" not in done.stderr and "Prefect UI" not in done.stdout
