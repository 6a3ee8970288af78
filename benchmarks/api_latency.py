"""Latency of the REST API: a cached request, and a small model from POST to a completed job.

The whole service runs as in ``tests/api/test_api.py``: a fake Hugging Face hub
(``tests.servers.hf_hub.FakeHub``, in this process) on 127.0.0.1, then
``python -m model_download serve`` (a Prefect server, the API and the runner) with its own store
and Prefect home. Two things are measured in one run:

- A cached request: after one pull of ``org/small`` through the API, ``--requests`` sequential
  ``POST /api/v1/models/download`` of it on one keep-alive connection, each answered from the
  store (the API records a Completed flow run and starts none); ``GET /api/v1/health``
  alongside, the floor of the HTTP stack.
- A small model (2 files of 1 MB, a new repo each run): POST until ``GET /jobs/{id}`` (polled
  every 50 ms) says completed, against ``flows.pipeline.pipeline`` called directly in a
  long-lived child process pointed at the same Prefect server and store.

    .venv/bin/python benchmarks/api_latency.py                    # 200 requests, best of 5
    .venv/bin/python benchmarks/api_latency.py --requests 50 --repeat 2

It reports and does not judge: the exit status is 0 even when a target is missed, and 1 only
when the service does not start, a job fails or a pulled file is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
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


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ.update(QUIET_ENV)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # tests.* is not installed, only the project
    if args.direct_child:
        return _direct_child()

    from tests.servers.hf_hub import FakeHub

    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="api-bench-")) if owned else args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    made = [workdir / name for name in ("hub", "models", "prefect", "hf-home", "logs")]
    service = direct = None
    try:
        with FakeHub(workdir / "hub") as hub:
            try:
                service = _start_service(workdir, hub.url)
                direct = DirectChild(service, workdir / "logs" / "direct.log")
                _run(args, hub, service, direct)
            finally:
                # Before the hub goes: a run still downloading would only stall against it.
                if direct is not None:
                    direct.stop()
                if service is not None:
                    _stop_service(service.process)
        return 0
    except (BenchError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if service is not None:
            where = f"in {service.log}" if args.keep else "with --keep to keep it"
            print(f"(the service's log: {where})", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\nkept the data in {workdir}", file=sys.stderr)
        elif owned:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            # Only what we made: a --workdir given by the user may hold other things.
            for path in made:
                shutil.rmtree(path, ignore_errors=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the REST API: a cached request, and POST to a completed job.",
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="cached requests to time (default 200)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="small-model runs per path (default 5)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the hub, store and logs go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the data and logs behind")
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds a job may take (default 300)"
    )
    parser.add_argument("--direct-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.repeat < 1 or args.timeout <= 0:
        parser.error("--requests, --repeat and --timeout must be positive")
    return args


def _run(args: argparse.Namespace, hub, service: Service, direct: DirectChild) -> None:
    client = httpx.Client(
        base_url=service.api, headers={"X-API-Key": API_KEY}, timeout=60, trust_env=False
    )
    with client:
        cached, health, hub_hits = _measure_cached(client, hub, service, args)
        prefect_ms = _prefect_calls(service, min(args.requests, 50))
        print("warming up the direct path...", file=sys.stderr)
        # The first call in a process pays for lazy imports and Prefect's client setup once;
        # the runner's first run paid its share in the cached part's pull.
        _commit(hub, "org/direct-warmup")
        direct.run("org/direct-warmup", args.timeout)
        api_runs: list[Timing] = []
        direct_runs: list[Timing] = []
        api_phases: list[Phases] = []
        direct_phases: list[Phases] = []
        for i in range(1, args.repeat + 1):
            api_repo, direct_repo = f"org/small-{i}", f"org/direct-{i}"
            api_files, direct_files = _commit(hub, api_repo), _commit(hub, direct_repo)
            _settle(service.process.pid)
            api = _api_job(client, service, api_repo, api_files, args.timeout)
            _settle(service.process.pid)
            stored, run = direct.run(direct_repo, args.timeout)
            _check_files(direct_repo, Path(stored), direct_files)
            api_runs.append(api)
            direct_runs.append(run)
            # Read after both clocks stopped, so the reads slow neither.
            api_phases.append(_api_phases(service.prefect, api))
            direct_phases.append(_direct_phases(service.prefect, run))
            steps = ", ".join(f"{v:.2f}" for k, v in api_phases[-1].values.items() if k != "total")
            print(
                f"run {i}/{args.repeat}  API {api.seconds:6.2f} s ({steps})"
                f"   direct {run.seconds:6.2f} s",
                file=sys.stderr,
            )
    _report(
        args,
        cached,
        health,
        hub_hits,
        prefect_ms,
        api_runs,
        direct_runs,
        api_phases,
        direct_phases,
        _poll_frequency(service),
        _import_seconds(service.env),
    )


# -- the service ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
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


def _start_service(workdir: Path, hub_url: str) -> Service:
    prefect_port, api_port = _free_port(), _free_port()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = _clean_env(
        MODELS_DIR=str(workdir / "models"),
        HF_ENDPOINT=hub_url,
        HF_HOME=str(workdir / "hf-home"),
        MODEL_DOWNLOAD_PREFECT_HOME=str(workdir / "prefect"),
        MODEL_DOWNLOAD_API_PORT=str(api_port),
        MODEL_DOWNLOAD_API_KEY=API_KEY,
    )
    log_path = logs / "service.log"
    print("starting the service (Prefect server, API, runner)...", file=sys.stderr)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "model_download", "serve", "--port", str(prefect_port)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own group: a Ctrl-C here reaches it once, from us, and a last resort kill
            # takes its Prefect server and API with it.
            start_new_session=True,
        )
    prefect = f"http://127.0.0.1:{prefect_port}/api"
    service = Service(
        process,
        f"http://127.0.0.1:{api_port}/api/v1",
        prefect,
        workdir / "models",
        workdir / "prefect",
        env,
        log_path,
    )
    try:
        _wait_http(f"{service.api}/health", process, log_path)
        _wait_http(f"{prefect}/deployments/name/pipeline/pipeline", process, log_path)
    except BaseException:
        _stop_service(process)
        raise
    return service


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise BenchError(f"the service exited ({process.returncode}):\n{_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2, trust_env=False).status_code < 400:
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not answer within {timeout:g} s:\n{_tail(log)}")
        time.sleep(0.3)


def _stop_service(process: subprocess.Popen) -> None:
    if process.poll() is None:
        # SIGINT is Ctrl-C: serve stops its runner, then its Prefect server and API.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
                    break
    # Whatever serve left running in its group (its server, API, a flow run) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def _commit(hub, repo: str) -> dict[str, bytes]:
    # Random bytes: the store shares blobs by content, so nothing may match an earlier run.
    files = {f"weights-{n}.bin": os.urandom(FILE_BYTES) for n in range(1, FILES + 1)}
    hub.commit(repo, files)
    return files


def _check_files(repo: str, stored: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = stored / name
        if not path.is_file():
            raise BenchError(f"{repo}: {name} is not in the store (looked at {path})")
        if path.read_bytes() != content:
            raise BenchError(f"{repo}: {path} does not hold the bytes the hub served")


# -- the cached request --------------------------------------------------------------------------


def _measure_cached(
    client: httpx.Client, hub, service: Service, args: argparse.Namespace
) -> tuple[list[float], list[float], int]:
    files = _commit(hub, CACHED_REPO)
    body = {"models": [{"name": CACHED_REPO, "hub": "huggingface"}]}
    print(f"pulling {CACHED_REPO} through the API once...", file=sys.stderr)
    first = _json(client.post("/models/download", json=body))
    job = _wait_job(client, first["job_ids"][0], args.timeout)
    _check_files(CACHED_REPO, Path(job["result"]["stored"]), files)

    def timed(send) -> float:
        start = time.perf_counter()
        response = send()
        elapsed = time.perf_counter() - start
        answer = _json(response)
        if answer.get("status") not in ("completed", "ok"):
            raise BenchError(f"a cached request was not answered from the store: {answer}")
        return elapsed * 1000

    def post():
        return client.post("/models/download", json=body)

    def health():
        return client.get("/health")

    print(f"timing {args.requests} cached requests...", file=sys.stderr)
    for _ in range(WARMUP_REQUESTS):
        timed(post)
        timed(health)
    hub.clear_log()
    posts, healths = [], []
    # Taking turns, so a busy spell of the machine falls on both alike.
    for _ in range(args.requests):
        posts.append(timed(post))
        healths.append(timed(health))
    return posts, healths, len(hub.requests)


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:1000]}"
        )
    return response.json()


def _prefect_calls(service: Service, count: int) -> dict[str, float]:
    """The share of a cached POST that is Prefect: the calls api/ makes, timed one by one."""
    import asyncio
    import ssl

    import certifi

    # Prefect reads these when it is imported, which nothing here has done yet.
    os.environ["PREFECT_API_URL"] = service.prefect
    os.environ["PREFECT_HOME"] = str(service.prefect_home)
    from prefect.client.orchestration import get_client
    from prefect.states import Completed

    from api.jobs import DEPLOYMENT

    parameters = {"models": [{"hub": "huggingface", "id": CACHED_REPO}], "export_to": None}
    steps = {
        "new PrefectClient (the API keeps one for its life)": [],
        "  its SSL context alone (certifi's CA bundle, built each time)": [],
        "read_deployment_by_name": [],
        "create_flow_run_from_deployment, state Completed": [],
        "close the client": [],
    }
    names = list(steps)

    async def once() -> None:
        start = time.perf_counter()
        client = get_client()
        await client.__aenter__()
        made = time.perf_counter()
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        read = time.perf_counter()
        await client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, state=Completed(), tags=["benchmark"]
        )
        created = time.perf_counter()
        await client.__aexit__(None, None, None)
        closed = time.perf_counter()
        ssl_start = time.perf_counter()
        ssl.create_default_context(cafile=certifi.where())
        ssl_s = time.perf_counter() - ssl_start
        for name, seconds in zip(
            names,
            (made - start, ssl_s, read - made, created - read, closed - created),
            strict=True,
        ):
            steps[name].append(seconds * 1000)

    async def all_of_them() -> None:
        for _ in range(count):
            await once()

    asyncio.run(all_of_them())
    return {name: statistics.median(values) for name, values in steps.items()}


# -- a small model through the API --------------------------------------------------------------


def _api_job(
    client: httpx.Client, service: Service, repo: str, files: dict[str, bytes], timeout: float
) -> Timing:
    body = {"models": [{"name": repo, "hub": "huggingface"}]}
    started_wall = time.time()
    start = time.perf_counter()
    answer = _json(client.post("/models/download", json=body))
    post_s = time.perf_counter() - start
    if answer.get("status") != "processing":
        raise BenchError(f"{repo} was not new to the store: {answer}")
    job_id = answer["job_ids"][0]
    engine = None
    while True:
        job = _json(client.get(f"/jobs/{job_id}"))
        seconds = time.perf_counter() - start
        if job["status"] == "completed":
            break
        if job["status"] in ("failed", "cancelled"):
            raise BenchError(f"the job for {repo} ended {job['status']}: {job.get('error')}")
        if seconds > timeout:
            raise BenchError(f"the job for {repo} is still {job['status']} after {timeout:g} s")
        if engine is None:
            engine = _engine_process(service.process.pid)
        time.sleep(JOB_POLL_S)
    _check_files(repo, Path(job["result"]["stored"]), files)
    timing = Timing(seconds, job_id, started_wall, post_s)
    if engine is not None:
        timing.engine_started, timing.engine_cmd = engine
    return timing


def _wait_job(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = _json(client.get(f"/jobs/{job_id}"))
        if job["status"] == "completed":
            return job
        if job["status"] in ("failed", "cancelled"):
            raise BenchError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        if time.monotonic() > deadline:
            raise BenchError(f"job {job_id} is still {job['status']} after {timeout:g} s")
        time.sleep(JOB_POLL_S)


# The runner's children, read from /proc: how and when it starts a flow run's process.


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                todo += children
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_flow_run(cmd: list[str]) -> bool:
    # `python -m prefect.engine` (a deployment loaded from its entrypoint) or a multiprocessing
    # spawn child (a flow object the runner holds in memory); not multiprocessing's resource
    # tracker, which outlives the runs.
    return "prefect.engine" in cmd or any("spawn_main" in part for part in cmd)


def _engine_process(serve_pid: int) -> tuple[float, list[str]] | None:
    """When the running flow run's process started (epoch seconds), and its command."""
    for pid in _descendants(serve_pid):
        if _is_flow_run(cmd := _cmdline(pid)):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Field 22 of stat, after the parenthesised command name: ticks since boot.
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
                # Against the uptime rather than btime, which /proc rounds to whole seconds.
                uptime = float(Path("/proc/uptime").read_text().split()[0])
                return time.time() - (uptime - started), cmd
    return None


def _settle(serve_pid: int, timeout: float = 30) -> None:
    """Wait for the last flow run's process to exit: its teardown must not slow the next run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_is_flow_run(_cmdline(pid)) for pid in _descendants(serve_pid)):
            return
        time.sleep(0.1)


# -- the flow called directly --------------------------------------------------------------------


class DirectChild:
    """A long-lived process that calls ``pipeline()`` for each repo id it is sent, and times it.

    Its own process, so the hub's threads here do not share a GIL with the flow, as they do not
    for the API's runs; pointed at the service's Prefect server and store.
    """

    def __init__(self, service: Service, log: Path) -> None:
        env = service.env | {
            "PREFECT_API_URL": service.prefect,
            "PREFECT_HOME": str(service.prefect_home),
        }
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--direct-child"],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
                text=True,
            )
        self.log = log

    def run(self, repo: str, timeout: float) -> tuple[str, Timing]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(repo + "\n")
            self.process.stdin.flush()
        except BrokenPipeError as exc:
            raise BenchError(f"the direct child exited:\n{_tail(self.log)}") from exc
        ready, _, _ = select.select([self.process.stdout], [], [], timeout + 120)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise BenchError(f"the direct child did not answer for {repo}:\n{_tail(self.log)}")
        answer = json.loads(line)
        if answer.get("error"):
            raise BenchError(f"calling pipeline() for {repo} failed: {answer['error']}")
        return answer["stored"], Timing(answer["seconds"], answer["run_id"], answer["started"])

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # its loop ends at end of input
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _direct_child() -> int:
    # Our answers keep the real stdout; Prefect's console logging and any print go to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    from flows.pipeline import PipelineSpec, pipeline

    for line in sys.stdin:
        repo = line.strip()
        started = time.time()
        start = time.perf_counter()
        try:
            state = pipeline(models=[PipelineSpec(id=repo, convert=None)], return_state=True)
            seconds = time.perf_counter() - start
            outcome = state.result()[0]
            answer = {
                "seconds": seconds,
                "started": started,
                "run_id": str(state.state_details.flow_run_id),
                "stored": outcome.stored,
            }
        except Exception as exc:  # the parent reports it and stops
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")
    return 0


# -- where the time goes -------------------------------------------------------------------------


def _flow_run(prefect: str, run_id: str) -> tuple[dict[str, Any], dict[str, float]]:
    """The flow run, and the first time it entered each state type (epoch seconds)."""
    run = httpx.get(f"{prefect}/flow_runs/{run_id}", timeout=30, trust_env=False)
    states = httpx.get(
        f"{prefect}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30, trust_env=False
    )
    if run.status_code != 200 or states.status_code != 200:
        raise BenchError(f"cannot read flow run {run_id} from Prefect: {run.text[:500]}")
    entered: dict[str, float] = {}
    for state in sorted(states.json(), key=lambda s: s["timestamp"]):
        entered.setdefault(state["type"], _epoch(state["timestamp"]))
    return run.json(), entered


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _api_phases(prefect: str, timing: Timing) -> Phases:
    run, entered = _flow_run(prefect, timing.run_id)
    created = _epoch(run["created"])
    start, end = _epoch(run["start_time"]), _epoch(run["end_time"])
    pending = entered.get("PENDING", start)
    phases = {"POST answered": timing.post_s}
    phases[PICKUP] = pending - created
    if timing.engine_started is not None and pending <= timing.engine_started <= start:
        phases["Pending -> process started"] = timing.engine_started - pending
        phases["process started -> Running: interpreter, imports, flow load"] = (
            start - timing.engine_started
        )
    else:
        phases["Pending -> Running: process start, imports, flow load"] = start - pending
    phases["Running -> Completed: the run itself"] = end - start
    phases["Completed -> seen by the client: 50 ms poll, GET /jobs"] = (
        timing.started_wall + timing.seconds - end
    )
    phases["total"] = timing.seconds
    return Phases(phases)


def _direct_phases(prefect: str, timing: Timing) -> Phases:
    run, _ = _flow_run(prefect, timing.run_id)
    start, end = _epoch(run["start_time"]), _epoch(run["end_time"])
    return Phases(
        {
            "call -> Running: creating the flow run": start - timing.started_wall,
            "Running -> Completed: the run itself": end - start,
            # Prefect joins the run's heartbeat thread, which sleeps in 1 s steps, after the
            # final state is set: the API's client never waits for that, a direct caller does.
            TEARDOWN: timing.started_wall + timing.seconds - end,
            "total": timing.seconds,
        }
    )


def _poll_frequency(service: Service) -> str:
    """The runner's poll interval as serve sets it from the environment the service was given."""
    from deployments.serve import prefect_env

    with mock.patch.dict(os.environ, service.env, clear=True):
        value = prefect_env(service.prefect_home, service.prefect)["PREFECT_RUNNER_POLL_FREQUENCY"]
    given = "PREFECT_RUNNER_POLL_FREQUENCY" in service.env
    source = "given to the service" if given else "deployments/serve.py's default, not overridden"
    return f"{value} s ({source})"


def _import_seconds(env: dict[str, str], runs: int = 3) -> float:
    """A fresh interpreter importing what a flow run's process needs: the best of ``runs``."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import prefect.engine, flows.pipeline"],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        best = min(best, time.perf_counter() - start)
    return best


# -- reporting -----------------------------------------------------------------------------------


def _ms_row(name: str, values: list[float]) -> str:
    if len(values) < 2:
        return f"{name:<30}{values[0]:>9.1f}{values[0]:>9.1f}{values[0]:>9.1f}"
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8]
    return f"{name:<30}{statistics.median(values):>9.1f}{p90:>9.1f}{max(values):>9.1f}"


def _report(
    args: argparse.Namespace,
    cached: list[float],
    health: list[float],
    hub_hits: int,
    prefect_ms: dict[str, float],
    api_runs: list[Timing],
    direct_runs: list[Timing],
    api_phases: list[Phases],
    direct_phases: list[Phases],
    poll: str,
    import_s: float,
) -> None:
    print()
    print(
        f"1. cached request: {args.requests} sequential requests on one keep-alive connection\n"
        f"   (after {WARMUP_REQUESTS} untimed), {CACHED_REPO} already in the store; in ms."
    )
    print()
    header = f"{'request':<30}{'median':>9}{'p90':>9}{'max':>9}"
    print(header)
    print("-" * len(header))
    print(_ms_row("POST /models/download", cached))
    print(_ms_row("GET /health (the floor)", health))
    print(f"requests the hub saw during them: {hub_hits}")
    print(
        "what a cached POST would cost if it made a new client, looked the deployment up\n"
        "and wrote a new flow run each time, as it no longer does (median ms):"
    )
    for name, ms in prefect_ms.items():
        print(f"  {name:<62}{ms:>7.1f}")

    api = [t.seconds for t in api_runs]
    direct = [t.seconds for t in direct_runs]
    print()
    print(
        f"2. a small model ({FILES} files x {FILE_BYTES / 1e6:g} MB, a new repo each run), best\n"
        f"   of {args.repeat} run(s), median alongside; in s. API: POST until GET /jobs/{{id}}"
        f" (every\n   {JOB_POLL_S * 1000:.0f} ms) says completed. direct: pipeline() called in a"
        " warm process on the\n   same Prefect server and store."
    )
    print()
    header = f"{'path':<30}{'best':>9}{'median':>9}"
    print(header)
    print("-" * len(header))
    print(f"{'API, POST -> completed':<30}{min(api):>9.2f}{statistics.median(api):>9.2f}")
    print(f"{'direct pipeline() call':<30}{min(direct):>9.2f}{statistics.median(direct):>9.2f}")
    best_ratio = min(api) / min(direct)
    median_ratio = statistics.median(api) / statistics.median(direct)
    print(f"{'API / direct':<30}{best_ratio:>8.2f}x{median_ratio:>8.2f}x")
    # The direct call returns only after Prefect's teardown, which the API's client, reading
    # the state, never waits for: this row compares the two at the same point.
    to_final = [p.values["total"] - p.values[TEARDOWN] for p in direct_phases]
    print(
        f"{'direct, call -> Completed':<30}{min(to_final):>9.2f}{statistics.median(to_final):>9.2f}"
    )
    print(
        f"{'API / that':<30}{min(api) / min(to_final):>8.2f}x"
        f"{statistics.median(api) / statistics.median(to_final):>8.2f}x"
    )

    print()
    print("where the time goes (median of the runs, s), from the flow runs' Prefect timestamps:")
    for title, phases in (("API", api_phases), ("direct", direct_phases)):
        print(f"  {title}:")
        for name in phases[0].values:
            values = [p.values[name] for p in phases if name in p.values]
            print(f"    {name:<62}{statistics.median(values):>7.2f}")
    print()
    pickups = [p.values[PICKUP] for p in api_phases]
    print(f"runner poll frequency: {poll};")
    print(f"  it picked runs up {min(pickups):.2f}-{max(pickups):.2f} s after their creation.")
    seen = sum(1 for t in api_runs if t.engine_cmd)
    print(f"how the runner started the flow runs (/proc, {seen} of {len(api_runs)} runs seen):")
    print(f"  {_starter_text(api_runs)}.")
    print(f"a new interpreter importing prefect.engine and flows.pipeline: {import_s:.2f} s (best)")

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end: {load} on {os.cpu_count()} CPUs (others' work included).")

    print()
    print("targets:")
    median_ms = statistics.median(cached)
    print(
        f"  [{'met' if median_ms < TARGET_CACHED_MS else 'MISSED'}] cached POST median < "
        f"{TARGET_CACHED_MS:g} ms: {median_ms:.1f} ms"
    )
    print(
        f"  [{'met' if best_ratio <= TARGET_RATIO else 'MISSED'}] API / direct <= "
        f"{TARGET_RATIO:g} (best): {best_ratio:.2f} x (median {median_ratio:.2f} x)"
    )
    print()
    print(
        "notes: the API path adds to the run itself: the POST (the API looks the model up in\n"
        "the store and creates a flow run of the pipeline deployment), the wait for the\n"
        "runner's next poll of scheduled runs, the runner proposing Pending and starting the\n"
        "flow run's process, which imports Prefect and the flow before it reports Running, and\n"
        "the client's own 50 ms poll of GET /jobs/{id}. The direct call pays only for creating\n"
        "the flow run, the run and Prefect's teardown. The run itself is slower in the API's\n"
        "fresh process: its first hub request, connections and lazy imports happen in it,\n"
        "where the warm direct process did them once, untimed. Both run the same flow against\n"
        "the same Prefect server, store and hub; both fsync the files. Each run waits for the\n"
        "previous flow run's process to exit first."
    )


def _starter_text(api_runs: list[Timing]) -> str:
    """What /proc showed of the runner's children while the API's jobs ran."""
    commands = [t.engine_cmd for t in api_runs if t.engine_cmd]
    if commands and all("prefect.engine" in cmd for cmd in commands):
        return (
            "`python -m prefect.engine` subprocesses: a new interpreter per run, which imports\n"
            "  Prefect and loads the flow from its entrypoint. serve() registers deployments,\n"
            "  not in-memory flows, so the runner has no flow object to hand to a child"
        )
    if commands and all(any("spawn_main" in part for part in cmd) for cmd in commands):
        return "multiprocessing spawn children of the runner: a new interpreter per run"
    if commands:
        return f"subprocesses: {sorted({' '.join(cmd).strip() for cmd in commands})}"
    return "no flow run process was seen under the service (is /proc readable?)"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
