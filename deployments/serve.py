"""Run the whole service on one machine: a Prefect server on SQLite and a runner of our flows.

This is the embedded default behind ``make run``. Past one machine, point ``PREFECT_API_URL`` at
a shared (Postgres-backed) Prefect server and run workers instead; the flows are the same.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

#: The deployments this runner serves, by flow.
DOWNLOAD_DEPLOYMENT = "download-models"
PIPELINE_DEPLOYMENT = "pipeline"
RECHECK_DEPLOYMENT = "recheck"


def prefect_env(prefect_home: Path, api_url: str) -> dict[str, str]:
    """Environment that points Prefect at our home and server, with a quick runner poll."""
    return {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        # The default 10 s poll makes a run wait that long before it starts.
        "PREFECT_RUNNER_POLL_FREQUENCY": os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY", "1"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_server(env: dict[str, str], host: str, port: int) -> subprocess.Popen:
    """Start ``prefect server start`` and wait until it answers its health check."""
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env,
    )
    url = f"http://{host}:{port}/api/health"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"the Prefect server did not answer at {url} within 120 s")


def serve_flows() -> None:
    """Serve the service's flows as deployments until interrupted (needs PREFECT_API_URL)."""
    from prefect import serve

    from flows.download import download_models
    from flows.pipeline import pipeline

    deployments = [
        download_models.to_deployment(
            name=DOWNLOAD_DEPLOYMENT,
            description="Download models from their hubs into the model store.",
            tags=["model-download"],
        ),
        pipeline.to_deployment(
            name=PIPELINE_DEPLOYMENT,
            description="Download, convert to OpenVINO IR and validate models.",
            tags=["model-download"],
        ),
    ]
    if recheck := recheck_deployment():
        deployments.append(recheck)
    serve(*deployments)


def recheck_deployment():
    """The scheduled re-check of MODEL_DOWNLOAD_RECHECK_MODELS for new revisions, if any.

    A re-check is the download flow: resolving always asks the hub, and a model whose branch
    has not moved is a cache hit, so only new revisions are downloaded.
    """
    from flows.download import ModelSpec, download_models
    from model_download.refs import parse_reference
    from model_download.runtime import get_settings

    settings = get_settings()
    if not settings.recheck_models:
        return None
    specs = []
    for text in settings.recheck_models:
        ref = parse_reference(text)
        specs.append(ModelSpec(hub=ref.hub, id=ref.id, revision=ref.revision).model_dump())
    return download_models.to_deployment(
        name=RECHECK_DEPLOYMENT,
        description="Re-check the configured models for new revisions and download them.",
        cron=settings.recheck_cron,
        parameters={"models": specs},
        tags=["model-download", "schedule"],
    )


def start_api(env: dict[str, str], host: str, port: int) -> subprocess.Popen:
    """Start the REST API (uvicorn) against the Prefect server ``env`` names."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:create_app",
            "--factory",
            "--host",
            host,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )


def run(host: str = "127.0.0.1", port: int = 4200, api: bool = True) -> None:
    """Start the Prefect server and the API, then serve the flows here; Ctrl-C stops all."""
    from model_download.runtime import get_settings

    settings = get_settings()
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(settings.prefect_home, f"http://{host}:{port}/api")
    children = [start_server(env, host, port)]
    os.environ.update(env)
    if api:
        children.append(start_api(env, settings.api_host, settings.api_port))
    print(f"Prefect UI: http://{host}:{port}", flush=True)
    if api:
        print(f"REST API:   http://{settings.api_host}:{settings.api_port}/docs", flush=True)
    print(f"Models:     {settings.models_dir}", flush=True)
    try:
        serve_flows()
    except KeyboardInterrupt:
        pass
    finally:
        _stop(children)


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
