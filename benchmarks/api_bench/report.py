"""The benchmark's printed report: the two measurements, where the time went, the targets."""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import dataclass

from api_bench.common import (
    CACHED_REPO,
    FILE_BYTES,
    FILES,
    JOB_POLL_S,
    PICKUP,
    TARGET_CACHED_MS,
    TARGET_RATIO,
    TEARDOWN,
    WARMUP_REQUESTS,
    Phases,
    Timing,
)


@dataclass
class Results:
    """Everything one benchmark run measured."""

    cached: list[float]
    health: list[float]
    hub_hits: int
    prefect_ms: dict[str, float]
    api_runs: list[Timing]
    direct_runs: list[Timing]
    api_phases: list[Phases]
    direct_phases: list[Phases]
    poll: str
    import_s: float


def report(args: argparse.Namespace, results: Results) -> None:
    """Print the report: each part, then the targets met or missed."""
    _cached_part(args, results)
    ratios = _small_model_part(args, results)
    _where_the_time_goes(results)
    _targets(results, *ratios)
    _notes()


def _ms_row(name: str, values: list[float]) -> str:
    if len(values) < 2:
        return f"{name:<30}{values[0]:>9.1f}{values[0]:>9.1f}{values[0]:>9.1f}"
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8]
    return f"{name:<30}{statistics.median(values):>9.1f}{p90:>9.1f}{max(values):>9.1f}"


def _cached_part(args: argparse.Namespace, results: Results) -> None:
    print()
    print(
        f"1. cached request: {args.requests} sequential requests on one keep-alive connection\n"
        f"   (after {WARMUP_REQUESTS} untimed), {CACHED_REPO} already in the store; in ms."
    )
    print()
    header = f"{'request':<30}{'median':>9}{'p90':>9}{'max':>9}"
    print(header)
    print("-" * len(header))
    print(_ms_row("POST /models/download", results.cached))
    print(_ms_row("GET /health (the floor)", results.health))
    print(f"requests the hub saw during them: {results.hub_hits}")
    print(
        "what a cached POST would cost if it made a new client, looked the deployment up\n"
        "and wrote a new flow run each time, as it no longer does (median ms):"
    )
    for name, ms in results.prefect_ms.items():
        print(f"  {name:<62}{ms:>7.1f}")


def _small_model_part(args: argparse.Namespace, results: Results) -> tuple[float, float]:
    """The second table; returns the ratio API / direct, best and median."""
    api = [t.seconds for t in results.api_runs]
    direct = [t.seconds for t in results.direct_runs]
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
    to_final = [p.values["total"] - p.values[TEARDOWN] for p in results.direct_phases]
    print(
        f"{'direct, call -> Completed':<30}{min(to_final):>9.2f}{statistics.median(to_final):>9.2f}"
    )
    print(
        f"{'API / that':<30}{min(api) / min(to_final):>8.2f}x"
        f"{statistics.median(api) / statistics.median(to_final):>8.2f}x"
    )
    return best_ratio, median_ratio


def _where_the_time_goes(results: Results) -> None:
    print()
    print("where the time goes (median of the runs, s), from the flow runs' Prefect timestamps:")
    for title, phases in (("API", results.api_phases), ("direct", results.direct_phases)):
        print(f"  {title}:")
        for name in phases[0].values:
            values = [p.values[name] for p in phases if name in p.values]
            print(f"    {name:<62}{statistics.median(values):>7.2f}")
    print()
    pickups = [p.values[PICKUP] for p in results.api_phases]
    print(f"runner poll frequency: {results.poll};")
    print(f"  it picked runs up {min(pickups):.2f}-{max(pickups):.2f} s after their creation.")
    seen = sum(1 for t in results.api_runs if t.engine_cmd)
    runs = len(results.api_runs)
    print(f"how the runner started the flow runs (/proc, {seen} of {runs} runs seen):")
    print(f"  {_starter_text(results.api_runs)}.")
    print(
        "what a new interpreter per run would pay first, importing prefect.engine and\n"
        f"  flows.pipeline: {results.import_s:.2f} s (best)"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average at the end: {load} on {os.cpu_count()} CPUs (others' work included).")


def _targets(results: Results, best_ratio: float, median_ratio: float) -> None:
    # Both targets are judged on the median, the usual measure of a latency; the best run is
    # shown beside it.
    print()
    print("targets (judged on the median):")
    median_ms = statistics.median(results.cached)
    print(
        f"  [{'met' if median_ms < TARGET_CACHED_MS else 'MISSED'}] cached POST median < "
        f"{TARGET_CACHED_MS:g} ms: {median_ms:.1f} ms"
    )
    print(
        f"  [{'met' if median_ratio <= TARGET_RATIO else 'MISSED'}] API / direct <= "
        f"{TARGET_RATIO:g} (median): {median_ratio:.2f} x (best {best_ratio:.2f} x)"
    )


def _notes() -> None:
    print()
    print(
        "notes: the API path adds to the run itself: the POST (the API looks the model up in\n"
        "the store and creates a flow run of the pipeline deployment), the wait for the\n"
        "runner's next poll of scheduled runs, the runner proposing Pending and starting the\n"
        "flow run's process, which sets up Prefect's engine before it reports Running, and\n"
        "the client's own 50 ms poll of GET /jobs/{id}. The direct call pays only for creating\n"
        "the flow run, the run and Prefect's teardown. The run itself is slower in the API's\n"
        "process: its first hub request and connections happen in it, where the warm direct\n"
        "process made them once, untimed. Both run the same flow against\n"
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
    if commands and all(any("multiprocessing.forkserver" in p for p in cmd) for cmd in commands):
        return (
            "forks of a warm fork server (deployments/warm_start.py), which imported Prefect\n"
            "  and the flows once: a process per run, but no new interpreter"
        )
    if commands and all(any("spawn_main" in part for part in cmd) for cmd in commands):
        return "multiprocessing spawn children of the runner: a new interpreter per run"
    if commands:
        return f"subprocesses: {sorted({' '.join(cmd).strip() for cmd in commands})}"
    return "no flow run process was seen under the service (is /proc readable?)"
