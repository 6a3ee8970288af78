"""Warm starts: the runner's flow runs fork from a fork server that imported the flows once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT, cli_env


def test_prefects_spawn_context_becomes_a_fork_server() -> None:
    # A fresh interpreter: the stand-in replaces Prefect's multiprocessing for the process.
    code = textwrap.dedent(
        """
        from prefect import flow_engine
        from deployments.warm_start import use_warm_starts
        assert use_warm_starts(preload=["json"]) and use_warm_starts()
        spawn = flow_engine.multiprocessing.get_context("spawn")
        print(spawn.get_start_method(), flow_engine.multiprocessing.get_context("fork")
              .get_start_method(), flow_engine.multiprocessing.cpu_count() > 0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["forkserver", "fork", "True"]
