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
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

# The parts live in api_bench/, beside this script (its folder is the first on sys.path).
from api_bench.common import (
    API_KEY,
    QUIET_ENV,
    REPO_ROOT,
    BenchError,
    Phases,
    Service,
    Timing,
    check_files,
    commit,
)
from api_bench.measure import (
    api_job,
    api_run_phases,
    direct_run_phases,
    import_seconds,
    measure_cached,
    poll_frequency,
    prefect_calls,
)
from api_bench.report import Results, report
from api_bench.service import DirectChild, direct_child, settle, start_service, stop_service


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    os.environ.update(QUIET_ENV)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # tests.* is not installed, only the project
    if args.direct_child:
        return direct_child()

    from tests.servers.hf_hub import FakeHub

    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="api-bench-")) if owned else args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    made = [workdir / name for name in ("hub", "models", "prefect", "hf-home", "logs")]
    service = direct = None
    try:
        with FakeHub(workdir / "hub") as hub:
            try:
                service = start_service(workdir, hub.url)
                direct = DirectChild(service, workdir / "logs" / "direct.log")
                _run(args, hub, service, direct)
            finally:
                # Before the hub goes: a run still downloading would only stall against it.
                if direct is not None:
                    direct.stop()
                if service is not None:
                    stop_service(service.process)
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
        cached, health, hub_hits = measure_cached(client, hub, service, args)
        prefect_ms = prefect_calls(service, min(args.requests, 50))
        print("warming up the direct path...", file=sys.stderr)
        # The first call in a process pays for lazy imports and Prefect's client setup once;
        # the runner's first run paid its share in the cached part's pull.
        commit(hub, "org/direct-warmup")
        direct.run("org/direct-warmup", args.timeout)
        api_runs: list[Timing] = []
        direct_runs: list[Timing] = []
        api_phases: list[Phases] = []
        direct_phases: list[Phases] = []
        for i in range(1, args.repeat + 1):
            api_repo, direct_repo = f"org/small-{i}", f"org/direct-{i}"
            api_files, direct_files = commit(hub, api_repo), commit(hub, direct_repo)
            settle(service.process.pid)
            api = api_job(client, service, api_repo, api_files, args.timeout)
            settle(service.process.pid)
            stored, run = direct.run(direct_repo, args.timeout)
            check_files(direct_repo, Path(stored), direct_files)
            api_runs.append(api)
            direct_runs.append(run)
            # Read after both clocks stopped, so the reads slow neither.
            api_phases.append(api_run_phases(service.prefect, api))
            direct_phases.append(direct_run_phases(service.prefect, run))
            steps = ", ".join(f"{v:.2f}" for k, v in api_phases[-1].values.items() if k != "total")
            print(
                f"run {i}/{args.repeat}  API {api.seconds:6.2f} s ({steps})"
                f"   direct {run.seconds:6.2f} s",
                file=sys.stderr,
            )
    results = Results(
        cached,
        health,
        hub_hits,
        prefect_ms,
        api_runs,
        direct_runs,
        api_phases,
        direct_phases,
        poll_frequency(service),
        import_seconds(service.env),
    )
    report(args, results)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
