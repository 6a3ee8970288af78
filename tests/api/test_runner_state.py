"""The API against a Prefect server whose runner comes and goes: a job is refused (503) when
nothing would run it, and a deployment served again under a new id is found again.

A Prefect server, runners of `serve_flows` and the API run as processes, as `make run` starts
them; the server notices a runner that stopped polling after 2 s here (15 s in `make run`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.serve import prefect_env, start_server
from tests.api.service import API_KEY, free_port, start_api, wait_deployment
from tests.conftest import REPO_ROOT, cli_env
from tests.servers.hf_hub import FakeHub


class Runners:
    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env, self.root, self.started = env, root, []

    def start(self) -> subprocess.Popen:
        log = (self.root / f"runner-{len(self.started)}.log").open("w")
        runner = subprocess.Popen(
            [sys.executable, "-c", "from deployments.serve import serve_flows; serve_flows()"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append(runner)
        return runner


@pytest.fixture
def setup(tmp_path: Path, hub: FakeHub) -> Iterator[tuple[str, str, Runners, FakeHub]]:
    port = free_port()
    prefect = f"http://127.0.0.1:{port}/api"
    env = prefect_env(tmp_path / "prefect", prefect)
    env.update(
        cli_env(
            PREFECT_HOME=str(tmp_path / "prefect"),
            PREFECT_API_URL=prefect,
            MODELS_DIR=str(tmp_path / "models"),
            HF_ENDPOINT=hub.url,
            MODEL_DOWNLOAD_API_KEY=API_KEY,
            PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS="1",
            PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS="2",
        )
    )
    server = start_server(env, "127.0.0.1", port)
    api_port = free_port()
    api = start_api(env, api_port)
    runners = Runners(env, tmp_path)
    try:
        yield f"http://127.0.0.1:{api_port}/api/v1", prefect, runners, hub
    finally:
        for process in [*runners.started, api, server]:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=60)


def _post(api: str, name: str, **params: str) -> httpx.Response:
    return httpx.post(
        f"{api}/models/download",
        params=params,
        json={"models": [{"name": name, "hub": "huggingface"}]},
        headers={"X-API-Key": API_KEY},
        timeout=60,
    )


def _wait_job(api: str, job_id: str) -> dict:
    import time

    deadline = time.monotonic() + 120
    while True:
        job = httpx.get(f"{api}/jobs/{job_id}", headers={"X-API-Key": API_KEY}).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def test_jobs_are_refused_while_no_runner_polls(setup) -> None:
    api, prefect, runners, hub = setup
    for name in ("org/a", "org/b"):
        hub.commit(name, {"config.json": b"{}", "w.bin": os.urandom(5000)})

    never = _post(api, "org/a")
    assert never.status_code == 503 and "not served" in never.text and "make run" in never.text

    first = runners.start()
    wait_deployment(prefect)
    accepted = _post(api, "org/a")
    assert accepted.status_code == 200, accepted.text
    assert _wait_job(api, accepted.json()["job_ids"][0])["status"] == "completed"

    first.kill()  # no goodbye: the server notices the polls stopped
    wait_deployment(prefect, "NOT_READY", timeout=60)
    refused = _post(api, "org/b")
    assert refused.status_code == 503, refused.text
    assert "not polled by any runner or worker" in refused.text and "make run" in refused.text
    listed = httpx.get(f"{api}/jobs", headers={"X-API-Key": API_KEY}).json()["jobs"]
    assert all(j["model_name"] != "org/b" for j in listed)  # no job left queued forever

    # Served again under a new id: the API forgets the id it knew and finds the new one.
    old = httpx.get(f"{prefect}/deployments/name/pipeline/pipeline").json()["id"]
    assert httpx.delete(f"{prefect}/deployments/{old}").status_code == 204
    second = runners.start()
    wait_deployment(prefect)
    again = _post(api, "org/a", download_path="team")  # stored: answered from the store
    assert again.status_code == 200 and again.json()["status"] == "completed", again.text

    second.send_signal(signal.SIGINT)  # a runner stopped with Ctrl-C pauses its deployments
    second.wait(timeout=60)
    paused = _post(api, "org/b")
    assert paused.status_code == 503 and "is paused" in paused.text, paused.text
