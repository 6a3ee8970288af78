"""Run the whole service on one machine: a Prefect server on SQLite and a runner of our flows.

This is the embedded default behind ``make run``. Past one machine, point ``PREFECT_API_URL`` at
a shared (Postgres-backed) Prefect server and run workers instead; the flows are the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import ValidationError

from model_download.errors import (
    InvalidReferenceError,
    ModelDownloadError,
    ServiceUnavailableError,
)
from model_download.refs import ModelReference, parse_reference

logger = logging.getLogger(__name__)

#: The deployments this runner serves, by flow.
DOWNLOAD_DEPLOYMENT = "download-models"
PIPELINE_DEPLOYMENT = "pipeline"
RECHECK_DEPLOYMENT = "recheck"

#: How long the Prefect server and the API get to answer their health checks.
START_TIMEOUT = 120.0


def prefect_env(prefect_home: Path, api_url: str) -> dict[str, str]:
    """Environment that points Prefect at our home and server, with a quick runner poll."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    defaults = {
        # The default 10 s poll makes a run wait that long before it starts.
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        # A runner that stops polling marks its deployments NOT_READY after this long (the
        # default is 60 s, checked every 15 s), and the API then refuses new jobs with 503.
        "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "5",
        "PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS": "15",
    }
    return {**env, **{k: os.environ.get(k, v) for k, v in defaults.items()}}


def check_port_free(host: str, port: int, setting: str) -> None:
    """Refuse to start on a port something else listens on, naming the setting to change.

    Raises:
        ServiceUnavailableError: the port is taken (or the address is not this machine's).
    """
    with socket.socket() as sock:
        # As the servers bind: a port in TIME_WAIT is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceUnavailableError(
                f"cannot listen on {host}:{port} ({exc.strerror}): stop what uses it, or set "
                f"{setting} to another port."
            ) from exc


def wait_healthy(process: subprocess.Popen, url: str, what: str, setting: str) -> None:
    """Wait until ``url`` answers; fail naming ``what`` and ``setting`` if it never does.

    Raises:
        ServiceUnavailableError: the process exited, or did not answer in time.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceUnavailableError(
                f"{what} exited with status {process.returncode} before answering at {url}: "
                f"see its messages above (is the port in use? {setting} sets it)."
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    process.terminate()
    raise ServiceUnavailableError(
        f"{what} did not answer at {url} within {START_TIMEOUT:.0f} s ({setting} sets its port)."
    )


def start_server(env: dict[str, str], host: str, port: int) -> subprocess.Popen:
    """Start ``prefect server start`` and wait until it answers its health check."""
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env,
    )
    url = f"http://{host}:{port}/api/health"
    wait_healthy(server, url, "the Prefect server", "MODEL_DOWNLOAD_PREFECT_PORT")
    return server


def serve_flows() -> None:
    """Serve the service's flows as deployments until interrupted (needs PREFECT_API_URL).

    The runner holds the flows themselves (not only their deployments), so it starts each run
    from them, forked from a warm process (see deployments.warm_start).
    """
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    from deployments.warm_start import use_warm_starts
    from flows.download import download_models
    from flows.pipeline import pipeline
    from model_download.runtime import get_settings

    # A run waits for the runner's next poll; Prefect's own setting counts whole seconds.
    runner = Runner(pause_on_shutdown=True, query_seconds=get_settings().runner_poll_seconds)
    runner.add_flow(
        download_models,
        name=DOWNLOAD_DEPLOYMENT,
        description="Download models from their hubs into the model store.",
        tags=["model-download"],
    )
    runner.add_flow(
        pipeline,
        name=PIPELINE_DEPLOYMENT,
        description="Download, convert to OpenVINO IR and validate models.",
        tags=["model-download"],
    )
    names = [f"download-models/{DOWNLOAD_DEPLOYMENT}", f"pipeline/{PIPELINE_DEPLOYMENT}"]
    if add_recheck(runner):
        names.append(f"recheck/{RECHECK_DEPLOYMENT}")
    use_warm_starts()
    print(f"Serving:    {', '.join(names)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt, TerminationSignal):
        asyncio.run(runner.start())


def recheck_references() -> list[ModelReference]:
    """MODEL_DOWNLOAD_RECHECK_MODELS, parsed (without importing Prefect: see _start).

    Raises:
        InvalidReferenceError: an entry is not ``hub:id[@revision]``, naming it and the setting.
    """
    from model_download.runtime import get_settings

    references = []
    for text in get_settings().recheck_models:
        try:
            references.append(parse_reference(text))
        except InvalidReferenceError as exc:
            raise InvalidReferenceError(
                f"MODEL_DOWNLOAD_RECHECK_MODELS has a bad entry {text!r}: {exc}"
            ) from exc
    return references


def add_recheck(runner) -> bool:
    """Add the scheduled re-check of MODEL_DOWNLOAD_RECHECK_MODELS (deployments.recheck), if any."""
    from deployments.recheck import recheck, recheck_models
    from model_download.runtime import get_settings

    specs = recheck_models()
    if not specs:
        return False
    runner.add_flow(
        recheck,
        name=RECHECK_DEPLOYMENT,
        description="Re-check the configured models for new revisions and download them.",
        cron=get_settings().recheck_cron,
        parameters={"models": [spec.model_dump() for spec in specs]},
        tags=["model-download", "schedule"],
    )
    return True


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


def run(host: str | None = None, port: int | None = None, api: bool = True) -> None:
    """Start the Prefect server and the API, then serve the flows here; Ctrl-C stops all.

    ``host`` and ``port`` of the Prefect server default to MODEL_DOWNLOAD_PREFECT_HOST and
    _PORT. A problem (a port in use, a bad setting) is one line on stderr and exit status 1.
    """
    children: list[subprocess.Popen] = []
    try:
        _start(children, host, port, api)
        serve_flows()
    except KeyboardInterrupt:
        pass
    except (ModelDownloadError, ValidationError) as exc:
        # A setting or a port at fault: its sentence, not a traceback.
        print(f"model-download serve: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        _stop(children)


def _start(children: list[subprocess.Popen], host: str | None, port: int | None, api: bool) -> None:
    from model_download.runtime import get_settings

    settings = get_settings()
    host, port = host or settings.prefect_host, port or settings.prefect_port
    # Refused before anything starts. Prefect must not be imported yet: it reads
    # PREFECT_API_URL once, and that is only set below.
    recheck_references()
    check_port_free(host, port, "MODEL_DOWNLOAD_PREFECT_PORT")
    if api:
        check_port_free(settings.api_host, settings.api_port, "MODEL_DOWNLOAD_API_PORT")
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(settings.prefect_home, f"http://{host}:{port}/api")
    children.append(start_server(env, host, port))
    os.environ.update(env)
    print(f"Prefect UI: http://{host}:{port}", flush=True)
    if api:
        children.append(start_api(env, settings.api_host, settings.api_port))
        base = f"http://{settings.api_host}:{settings.api_port}"
        health = f"{base}/api/v1/health"
        wait_healthy(children[-1], health, "the REST API", "MODEL_DOWNLOAD_API_PORT")
        print(f"REST API:   {base}/docs", flush=True)
    print(f"Models:     {settings.models_dir}", flush=True)


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    run()
