"""What the API benchmark's modules share: its constants, records and small helpers."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The script itself: the direct child is another run of it.
SCRIPT = REPO_ROOT / "benchmarks" / "api_latency.py"
CACHED_REPO = "org/small"
FILES = 2
FILE_BYTES = 1_000_000
API_KEY = "bench-api-key"
JOB_POLL_S = 0.05
WARMUP_REQUESTS = 10
TARGET_CACHED_MS = 50.0
TARGET_RATIO = 1.5
PICKUP = "created -> Pending: waiting for the runner's poll"
TEARDOWN = "Completed -> return: Prefect's teardown, heartbeat thread join"
# Nothing may report home: Prefect's analytics, the hub client's telemetry, OpenVINO's and nncf's
# usage statistics (silenced by CI=true).
QUIET_ENV = {
    "CI": "true",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_DISABLE_XET": "1",  # the fake hub speaks plain HTTP only
}


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


@dataclass
class Service:
    process: subprocess.Popen
    api: str
    prefect: str
    models: Path
    prefect_home: Path
    env: dict[str, str]
    log: Path


@dataclass
class Timing:
    """One small-model run: the wall time and the flow run it made."""

    seconds: float
    run_id: str
    started_wall: float  # time.time() when the request (or the call) began
    post_s: float = 0.0  # API only: until the POST answered
    engine_started: float | None = None  # API only: the flow run's process, from /proc
    engine_cmd: list[str] = field(default_factory=list)


@dataclass
class Phases:
    """Where one run's time went, in seconds, from Prefect's timestamps of its flow run."""

    values: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without settings that would change what the service does."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_", "MODEL_DOWNLOAD_", "PREFECT_"))
        and key != "MODELS_DIR"
        and not key.lower().endswith("_proxy")
    }
    # A proxy from the environment must not carry loopback traffic.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env | QUIET_ENV | extra


def tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def commit(hub, repo: str) -> dict[str, bytes]:
    # Random bytes: the store shares blobs by content, so nothing may match an earlier run.
    files = {f"weights-{n}.bin": os.urandom(FILE_BYTES) for n in range(1, FILES + 1)}
    hub.commit(repo, files)
    return files


def check_files(repo: str, stored: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = stored / name
        if not path.is_file():
            raise BenchError(f"{repo}: {name} is not in the store (looked at {path})")
        if path.read_bytes() != content:
            raise BenchError(f"{repo}: {path} does not hold the bytes the hub served")


def answer_json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:1000]}"
        )
    return response.json()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
