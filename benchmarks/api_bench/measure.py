"""The measurements: cached requests, Prefect's calls, a job through the API, and where a
run's time went, from the flow run's timestamps in Prefect."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from api_bench.common import (
    CACHED_REPO,
    JOB_POLL_S,
    PICKUP,
    REPO_ROOT,
    TEARDOWN,
    WARMUP_REQUESTS,
    BenchError,
    Phases,
    Service,
    Timing,
    answer_json,
    check_files,
    commit,
    epoch,
)
from api_bench.service import engine_process


def measure_cached(
    client: httpx.Client, hub, service: Service, args: argparse.Namespace
) -> tuple[list[float], list[float], int]:
    files = commit(hub, CACHED_REPO)
    body = {"models": [{"name": CACHED_REPO, "hub": "huggingface"}]}
    print(f"pulling {CACHED_REPO} through the API once...", file=sys.stderr)
    first = answer_json(client.post("/models/download", json=body))
    job = wait_job(client, first["job_ids"][0], args.timeout)
    check_files(CACHED_REPO, Path(job["result"]["stored"]), files)

    def timed(send) -> float:
        start = time.perf_counter()
        response = send()
        elapsed = time.perf_counter() - start
        answer = answer_json(response)
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


def prefect_calls(service: Service, count: int) -> dict[str, float]:
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


def api_job(
    client: httpx.Client, service: Service, repo: str, files: dict[str, bytes], timeout: float
) -> Timing:
    body = {"models": [{"name": repo, "hub": "huggingface"}]}
    started_wall = time.time()
    start = time.perf_counter()
    answer = answer_json(client.post("/models/download", json=body))
    post_s = time.perf_counter() - start
    if answer.get("status") != "processing":
        raise BenchError(f"{repo} was not new to the store: {answer}")
    job_id = answer["job_ids"][0]
    engine = None
    while True:
        job = answer_json(client.get(f"/jobs/{job_id}"))
        seconds = time.perf_counter() - start
        if job["status"] == "completed":
            break
        if job["status"] in ("failed", "cancelled"):
            raise BenchError(f"the job for {repo} ended {job['status']}: {job.get('error')}")
        if seconds > timeout:
            raise BenchError(f"the job for {repo} is still {job['status']} after {timeout:g} s")
        if engine is None:
            engine = engine_process(service.process.pid)
        time.sleep(JOB_POLL_S)
    check_files(repo, Path(job["result"]["stored"]), files)
    timing = Timing(seconds, job_id, started_wall, post_s)
    if engine is not None:
        timing.engine_started, timing.engine_cmd = engine
    return timing


def wait_job(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = answer_json(client.get(f"/jobs/{job_id}"))
        if job["status"] == "completed":
            return job
        if job["status"] in ("failed", "cancelled"):
            raise BenchError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        if time.monotonic() > deadline:
            raise BenchError(f"job {job_id} is still {job['status']} after {timeout:g} s")
        time.sleep(JOB_POLL_S)


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
        entered.setdefault(state["type"], epoch(state["timestamp"]))
    return run.json(), entered


def api_run_phases(prefect: str, timing: Timing) -> Phases:
    run, entered = _flow_run(prefect, timing.run_id)
    created = epoch(run["created"])
    start, end = epoch(run["start_time"]), epoch(run["end_time"])
    pending = entered.get("PENDING", start)
    phases = {"POST answered": timing.post_s}
    phases[PICKUP] = pending - created
    if timing.engine_started is not None and pending <= timing.engine_started <= start:
        phases["Pending -> process started"] = timing.engine_started - pending
        phases["process started -> Running: interpreter or fork, engine set-up"] = (
            start - timing.engine_started
        )
    else:
        phases["Pending -> Running: process start, engine set-up"] = start - pending
    phases["Running -> Completed: the run itself"] = end - start
    phases["Completed -> seen by the client: 50 ms poll, GET /jobs"] = (
        timing.started_wall + timing.seconds - end
    )
    phases["total"] = timing.seconds
    return Phases(phases)


def direct_run_phases(prefect: str, timing: Timing) -> Phases:
    run, _ = _flow_run(prefect, timing.run_id)
    start, end = epoch(run["start_time"]), epoch(run["end_time"])
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


def poll_frequency(service: Service) -> str:
    """The runner's poll interval, as the service's settings give it."""
    from model_download.settings import Settings

    with mock.patch.dict(os.environ, service.env, clear=True):
        value = Settings().runner_poll_seconds
    given = "MODEL_DOWNLOAD_RUNNER_POLL_SECONDS" in service.env
    source = "given to the service" if given else "the default, not overridden"
    return f"{value:g} s (MODEL_DOWNLOAD_RUNNER_POLL_SECONDS, {source})"


def import_seconds(env: dict[str, str], runs: int = 3) -> float:
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
