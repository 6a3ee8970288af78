"""The service under test: started and stopped as `make run` does, its runner's children read
from /proc, and the direct contender: a warm process that calls ``pipeline()`` itself."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from api_bench.common import (
    API_KEY,
    REPO_ROOT,
    SCRIPT,
    BenchError,
    Service,
    Timing,
    clean_env,
    free_port,
    tail,
)


def start_service(workdir: Path, hub_url: str) -> Service:
    prefect_port, api_port = free_port(), free_port()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = clean_env(
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
        # The API refuses jobs (503) until the runner has polled its deployment once.
        _wait_http(
            f"{prefect}/deployments/name/pipeline/pipeline",
            process,
            log_path,
            ready=lambda response: response.json().get("status") == "READY",
        )
    except BaseException:
        stop_service(process)
        raise
    return service


def _wait_http(
    url: str,
    process: subprocess.Popen,
    log: Path,
    timeout: float = 180,
    ready: Callable[[httpx.Response], bool] = lambda response: True,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise BenchError(f"the service exited ({process.returncode}):\n{tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, timeout=2, trust_env=False)
            if response.status_code < 400 and ready(response):
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not answer within {timeout:g} s:\n{tail(log)}")
        time.sleep(0.3)


def stop_service(process: subprocess.Popen) -> None:
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


def _is_flow_run(pid: int) -> bool:
    # `python -m prefect.engine` (a deployment loaded from its entrypoint), a multiprocessing
    # spawn child (a flow object the runner holds in memory), or a fork of the warm fork server
    # (deployments.warm_start): a child with its parent's forkserver command line. Not the fork
    # server itself, nor multiprocessing's resource tracker, which outlive the runs.
    cmd = _cmdline(pid)
    if "prefect.engine" in cmd or any("spawn_main" in part for part in cmd):
        return True
    return _is_forkserver(cmd) and _is_forkserver(_cmdline(_parent(pid)))


def _is_forkserver(cmd: list[str]) -> bool:
    return any("multiprocessing.forkserver" in part for part in cmd)


def _parent(pid: int) -> int:
    try:
        # Field 4 of stat, after the parenthesised command name.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def engine_process(serve_pid: int) -> tuple[float, list[str]] | None:
    """When the running flow run's process started (epoch seconds), and its command."""
    for pid in _descendants(serve_pid):
        if _is_flow_run(pid):
            cmd = _cmdline(pid)
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Field 22 of stat, after the parenthesised command name: ticks since boot.
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
                # Against the uptime rather than btime, which /proc rounds to whole seconds.
                uptime = float(Path("/proc/uptime").read_text().split()[0])
                return time.time() - (uptime - started), cmd
    return None


def settle(serve_pid: int, timeout: float = 30) -> None:
    """Wait for the last flow run's process to exit: its teardown must not slow the next run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_is_flow_run(pid) for pid in _descendants(serve_pid)):
            return
        time.sleep(0.1)


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
                [sys.executable, str(SCRIPT), "--direct-child"],
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
            raise BenchError(f"the direct child exited:\n{tail(self.log)}") from exc
        ready, _, _ = select.select([self.process.stdout], [], [], timeout + 120)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise BenchError(f"the direct child did not answer for {repo}:\n{tail(self.log)}")
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


def direct_child() -> int:
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
