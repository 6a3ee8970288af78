"""Scale-out as the README describes it: a Prefect server, a process work pool, the deployments
of prefect.yaml, and two workers sharing one store, all on this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from model_download.store.store import ModelStore
from tests.conftest import REPO_ROOT, cli_env
from tests.deployments.rest import call, free_port
from tests.deployments.test_compose import load as load_compose
from tests.servers.hf_hub import FakeHub


def test_two_workers_run_four_pipelines_into_one_store(tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    models_dir = tmp_path / "models"
    with FakeHub(tmp_path / "hub") as hub:
        files = {
            "a": {"config.json": b"{}", "w.bin": os.urandom(300_000)},
            "b": {"config.json": b"[]", "w.bin": os.urandom(300_000)},
        }
        for name, content in files.items():
            hub.commit(f"org/{name}", content)
        env = cli_env(
            PREFECT_HOME=str(tmp_path / "prefect"),
            PREFECT_API_URL=api,
            MODELS_DIR=str(models_dir),
            HF_ENDPOINT=hub.url,
            MODEL_DOWNLOAD_PROJECT_DIR=str(REPO_ROOT),
            # prefect.yaml's recheck deployment takes its cron from here at deploy time, and
            # its models when it runs.
            MODEL_DOWNLOAD_RECHECK_MODELS='["hf:org/a@main"]',
            MODEL_DOWNLOAD_RECHECK_CRON="*/30 * * * *",
        )
        # The commands docker-compose.yml gives its services, on loopback instead of a network.
        services = load_compose()["services"]
        server = [a.replace("0.0.0.0", "127.0.0.1") for a in services["prefect-server"]["command"]]
        server[server.index("--port") + 1] = str(port)
        # "$$" is compose's escape for a "$" left to the shell.
        worker = [part.replace("$$", "$") for part in services["worker"]["command"]]
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # compose polls every 2 s; tests are impatient
        started: list[subprocess.Popen] = []
        try:
            started.append(
                subprocess.Popen(
                    server, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
            _rest_wait(f"{api}/health")
            logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
            for log in logs:
                started.append(
                    subprocess.Popen(
                        worker,
                        env=env,
                        cwd=REPO_ROOT,
                        stdout=log.open("w"),
                        stderr=subprocess.STDOUT,
                    )
                )
                # One at a time: each registers the pool and deployments before it polls.
                _rest_wait(f"{api}/deployments/name/pipeline/pipeline")
                _wait_for_text(log, "started")

            deployment = call(f"{api}/deployments/name/pipeline/pipeline")
            models = [{"id": "org/a", "convert": None}, {"id": "org/b", "convert": None}]
            runs = [
                call(
                    f"{api}/deployments/{deployment['id']}/create_flow_run",
                    {"parameters": {"models": models}},
                )["id"]
                for _ in range(4)
            ]
            states = [_final_state(api, run) for run in runs]

            recheck = call(f"{api}/deployments/name/recheck/recheck")
            schedule = recheck["schedules"][0]
            assert schedule["schedule"]["cron"] == "*/30 * * * *" and schedule["active"]
            assert recheck["work_pool_name"] == "model-download"
            checked = call(f"{api}/deployments/{recheck['id']}/create_flow_run", {})["id"]
            recheck_state = _final_state(api, checked)
        finally:
            for process in reversed(started):
                process.terminate()
            for process in started:
                process.wait(timeout=60)

        assert states == ["COMPLETED"] * 4
        assert recheck_state == "COMPLETED"  # it read org/a from the worker's environment
        by_worker = [len(_ran(log) & set(runs)) for log in logs]
        assert sum(by_worker) == 4 and min(by_worker) >= 1, by_worker  # both workers worked
        for name, content in files.items():
            for path, data in content.items():
                sent = sum(r.sent for r in hub.file_requests(f"org/{name}") if r.file == path)
                assert sent == len(data), f"org/{name}/{path} sent {sent} of {len(data)}"
        store = ModelStore(models_dir)
        assert sorted(m.manifest.id for m in store.list()) == ["org/a", "org/b"]
        assert all(store.verify(m) == [] for m in store.list())


def test_prefect_yaml_declares_every_deployment_for_the_pool() -> None:
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in config["deployments"]}
    assert set(by_name) == {"download-models", "pipeline", "recheck"}
    assert all(d["work_pool"]["name"] == "model-download" for d in by_name.values())
    recheck = by_name["recheck"]
    assert recheck["entrypoint"] == "deployments/recheck.py:recheck"
    assert "recheck-cron.stdout" in recheck["schedules"][0]["cron"]
    # The build step answers from the settings: the default cron, and no models to re-check.
    env = cli_env(MODEL_DOWNLOAD_RECHECK_CRON="5 4 * * *")
    env.pop("MODEL_DOWNLOAD_RECHECK_MODELS", None)
    for arg, answer in (("cron", "5 4 * * *"), ("active", "false")):
        done = subprocess.run(
            [sys.executable, "-m", "deployments.recheck", arg],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode, done.stdout.strip()) == (0, answer), done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "deployments.recheck", "cron"],
        env={**env, "MODEL_DOWNLOAD_RECHECK_MODELS": '["org/no-hub"]'},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "MODEL_DOWNLOAD_RECHECK_MODELS has a bad entry" in bad.stderr


def _ran(log: Path) -> set[str]:
    """The flow runs a worker ran: those it submitted, less those the server took back."""
    text = log.read_text(errors="replace")
    submitted = set(re.findall(r"submitting flow run '([0-9a-f-]{36})'", text))
    aborted = set(re.findall(r"Aborted submission of flow run '([0-9a-f-]{36})'", text))
    return submitted - aborted


def _wait_for_text(log: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{log.name}: no {text!r} in {log.read_text()}"
        time.sleep(0.5)


def _rest_wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.5)


def _final_state(api: str, run_id: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = call(f"{api}/flow_runs/{run_id}")["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        assert time.monotonic() < deadline, f"run {run_id} still {state}"
        time.sleep(1)
