"""The whole service on loopback, as the API tests and benchmarks start it: a real Prefect server,
runner and uvicorn API from ``model-download serve``, against test servers of the hubs."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from deployments import serve
from tests.conftest import REPO_ROOT, cli_env
from tests.servers.hf_hub import FakeHub

API_KEY = "test-api-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    hub: FakeHub
    api: str
    prefect: str
    models: Path
    prefect_home: Path
    env: dict[str, str]

    def client(self, key: str | None = API_KEY) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=30)

    def wait_job(self, job_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                job = client.get(f"/jobs/{job_id}").json()
                if job.get("status") in ("completed", "failed", "cancelled"):
                    return job
                assert time.monotonic() < deadline, f"job still {job}"
                time.sleep(0.5)


def _wait_http(url: str, timeout: float = 120, ready=lambda response: True) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200 and ready(response):
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.3)


def wait_deployment(prefect: str, status: str = "READY", timeout: float = 120) -> None:
    """Until the pipeline deployment's status is ``status`` (READY once a runner polls it)."""
    _wait_http(
        f"{prefect}/deployments/name/pipeline/pipeline",
        timeout,
        lambda response: response.json().get("status") == status,
    )


def start_api(env: dict[str, str], port: int) -> subprocess.Popen:
    """One more API process, as ``make run`` starts it, once it answers."""
    api = serve.start_api(env, "127.0.0.1", port)
    _wait_http(f"http://127.0.0.1:{port}/api/v1/health")
    return api


@contextmanager
def run_service(root: Path, hub: FakeHub, **env: str) -> Iterator[Service]:
    """``model-download serve`` (Prefect server, runner, API) with its store under ``root``.

    The runner's flow runs inherit this process's environment plus ``env``: where a hub's test
    server is, which token to use.
    """
    prefect_port, api_port = free_port(), free_port()
    full = cli_env(
        MODELS_DIR=str(root / "models"),
        HF_ENDPOINT=hub.url,
        MODEL_DOWNLOAD_PREFECT_HOME=str(root / "prefect"),
        MODEL_DOWNLOAD_API_PORT=str(api_port),
        MODEL_DOWNLOAD_API_KEY=API_KEY,
        MODEL_DOWNLOAD_STALL_TIMEOUT="60",
        **env,
    )
    log = open(root / "service.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        [sys.executable, "-m", "model_download", "serve", "--port", str(prefect_port)],
        env=full,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_http(f"http://127.0.0.1:{api_port}/api/v1/health")
        prefect = f"http://127.0.0.1:{prefect_port}/api"
        wait_deployment(prefect)  # the API refuses jobs until the runner polls
        full = {**full, "PREFECT_API_URL": prefect, "PREFECT_HOME": str(root / "prefect")}
        yield Service(
            hub,
            f"http://127.0.0.1:{api_port}/api/v1",
            prefect,
            root / "models",
            root / "prefect",
            full,
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        log.close()
