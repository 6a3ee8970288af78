"""Several processes on one store: one download per model, and recovery from a killed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from model_download.pull import download_resolved, resolve_reference
from model_download.refs import parse_reference
from model_download.runtime import get_registry, get_store
from tests.conftest import REPO_ROOT, cli_env
from tests.servers.hf_hub import FakeHub

SIZE = 400_000


def _start_pull(*models: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "model_download", "pull", "-q", *models],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**env),
        cwd=REPO_ROOT,
    )


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_two_processes_pulling_one_model_download_each_file_once(hub: FakeHub) -> None:
    files = {"config.json": b"{}", "a.bin": os.urandom(SIZE), "b.bin": os.urandom(SIZE)}
    hub.commit("org/model", files)
    # The first transfer of a.bin pauses for 2 s and then hangs up, so the first process is
    # still downloading when the second one starts; it resumes from where it was cut.
    hub.stall("a.bin", after_bytes=1000, seconds=2)

    first = _start_pull("hf:org/model", MODEL_DOWNLOAD_STALL_TIMEOUT="30")
    _wait_for(
        lambda: (
            any(r.file == "a.bin" for r in hub.requests)
            or any(r.file == "b.bin" for r in hub.requests)
        )
    )
    second = _start_pull("hf:org/model", MODEL_DOWNLOAD_STALL_TIMEOUT="30")
    outputs = [p.communicate(timeout=60) for p in (first, second)]

    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    for name, data in files.items():
        sent = sum(r.sent for r in hub.file_requests() if r.file == name)
        assert sent == len(data), f"{name} was sent {sent} bytes for {len(data)}"
    stored = get_store().list()
    assert len(stored) == 1 and get_store().verify(stored[0]) == []


def test_a_killed_pull_leaves_nothing_listed_and_the_next_one_resumes(
    hub: FakeHub, isolated_env: Path
) -> None:
    data = os.urandom(SIZE)
    commit = hub.commit("org/model", {"model.bin": data})
    hub.stall("model.bin", after_bytes=150_000, seconds=60)
    partial = get_store().staging_dir("huggingface", "org/model", commit) / "model.bin"

    victim = _start_pull("hf:org/model")
    _wait_for(lambda: partial.exists() and partial.stat().st_size >= 150_000)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    assert get_store().list() == []
    locks = list((isolated_env / ".store" / "locks").rglob("*.lock"))
    assert locks, "the killed process should have left its lock behind"

    started = time.monotonic()
    resolved = resolve_reference(parse_reference("hf:org/model"), get_registry())
    stored = download_resolved(resolved, store=get_store(), registry=get_registry())

    assert time.monotonic() - started < 15  # the dead holder's lock did not block us
    ranges = [r.range for r in hub.file_requests() if r.file == "model.bin"]
    assert ranges[-1] == "bytes=150000-"
    assert (stored.path / "model.bin").read_bytes() == data


def test_ctrl_c_stops_a_stalled_pull_at_once_and_the_next_one_resumes(
    hub: FakeHub, isolated_env: Path
) -> None:
    data = os.urandom(SIZE)
    commit = hub.commit("org/model", {"config.json": b"{}", "model.bin": data})
    hub.stall("model.bin", after_bytes=100_000, seconds=60)  # well under the stall timeout
    partial = get_store().staging_dir("huggingface", "org/model", commit) / "model.bin"

    pulling = _start_pull("hf:org/model", MODEL_DOWNLOAD_STALL_TIMEOUT="120")
    _wait_for(lambda: partial.exists() and partial.stat().st_size >= 100_000)
    started = time.monotonic()
    pulling.send_signal(signal.SIGINT)
    _, stderr = pulling.communicate(timeout=30)

    assert time.monotonic() - started < 5
    assert pulling.returncode == 130
    assert "interrupted: the partial files are kept" in stderr and "Traceback" not in stderr
    assert get_store().list() == []
    assert list((isolated_env / ".store" / "locks").rglob("*.lock")) == []  # released

    hub.clear_faults()
    stored = download_resolved(
        resolve_reference(parse_reference("hf:org/model"), get_registry()),
        store=get_store(),
        registry=get_registry(),
    )
    ranges = [r.range for r in hub.file_requests() if r.file == "model.bin"]
    assert ranges[-1] == "bytes=100000-"
    assert (stored.path / "model.bin").read_bytes() == data
