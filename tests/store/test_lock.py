"""Tests for the store lock, with real processes and a real filesystem."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from model_download.cancel import Cancel
from model_download.errors import DownloadCancelled, LockTimeout
from model_download.store.lock import StoreLock
from model_download.store.lock_files import remove_if_same, snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]

# Holds the lock for a while, reporting when it has it and whether it still had it at the end.
HOLDER = """
import sys, time
from pathlib import Path
from model_download.store.lock import StoreLock

lock = StoreLock(Path(sys.argv[1]), stale_after=float(sys.argv[2]))
lock.acquire(timeout=10)
print("held", flush=True)
time.sleep(float(sys.argv[3]))
print("is_held", lock.is_held(), flush=True)
lock.release()
"""

# Takes the lock a few times, logging entry and exit; starts when the go file appears so that
# all workers contend at once rather than in the order they finished importing.
WORKER = """
import os, sys, time
from pathlib import Path
from model_download.store.lock import StoreLock

lock_path, log_path, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rounds = int(sys.argv[4])
while not go.exists():
    time.sleep(0.002)
for _ in range(rounds):
    with StoreLock(lock_path, poll_interval=0.01):
        with log_path.open("a") as f:
            f.write(f"start {os.getpid()}\\n")
        time.sleep(0.02)
        with log_path.open("a") as f:
            f.write(f"end {os.getpid()}\\n")
"""


def _spawn(code: str, *args: object, stderr: int | None = None) -> subprocess.Popen[str]:
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: Path, *, host: str, pid: int, age: float = 0.0) -> str:
    token = uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"token": token, "host": host, "pid": pid, "created": time.time() - age}
    path.write_text(json.dumps(record))
    _age(path, age)
    return token


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def _heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("store-lock-heartbeat")]


def _assert_not_interleaved(log: Path, expected_sections: int) -> None:
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * expected_sections
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert start.startswith("start ")
        assert end == "end " + start.removeprefix("start ")


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    # A parent that does not exist yet, which acquire() must create.
    return tmp_path / "locks" / "model.lock"


def test_acquire_and_release(lock_path: Path) -> None:
    lock = StoreLock(lock_path)
    lock.acquire()

    record = json.loads(lock_path.read_text())
    assert record["host"] == socket.gethostname()
    assert record["pid"] == os.getpid()
    assert len(record["token"]) == 32
    assert lock.holder == record
    assert lock.is_held()
    assert not lock.waited
    assert len(_heartbeat_threads()) == 1

    lock.release()
    assert not lock_path.exists()
    assert not lock.is_held()
    assert lock.holder is None
    assert _heartbeat_threads() == []
    lock.release()  # idempotent

    lock.acquire(timeout=0)  # reusable after release
    lock.release()
    assert _leftovers(lock_path) == []


def test_context_manager(lock_path: Path) -> None:
    with StoreLock(lock_path) as lock:
        assert lock.is_held()
        assert lock_path.exists()
    assert not lock_path.exists()
    assert not lock.is_held()


def test_not_reentrant(lock_path: Path) -> None:
    with StoreLock(lock_path) as lock, pytest.raises(RuntimeError, match="re-entrant"):
        lock.acquire()


@pytest.mark.parametrize(
    "kwargs",
    [{"stale_after": 0}, {"stale_after": 1, "heartbeat": 1}, {"poll_interval": 0}],
)
def test_rejects_bad_durations(lock_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        StoreLock(lock_path, **kwargs)


def test_second_lock_times_out_naming_holder(lock_path: Path) -> None:
    with StoreLock(lock_path):
        other = StoreLock(lock_path)
        start = time.monotonic()
        with pytest.raises(LockTimeout, match=rf"pid {os.getpid()}\b") as excinfo:
            other.acquire(timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 1.0
        assert other.waited
        assert str(lock_path) in str(excinfo.value)
        assert socket.gethostname() in str(excinfo.value)
        assert excinfo.value.holder is not None
        assert excinfo.value.holder["pid"] == os.getpid()

        with pytest.raises(LockTimeout):
            other.acquire(timeout=0)
        assert not other.is_held()


def test_lock_timeout_is_a_picklable_timeout_error(lock_path: Path) -> None:
    exc = LockTimeout("message", path=lock_path, holder={"pid": 1})
    assert isinstance(exc, TimeoutError)
    copy = pickle.loads(pickle.dumps(exc))
    assert (str(copy), copy.path, copy.holder) == ("message", lock_path, {"pid": 1})


def test_mutual_exclusion_across_processes(tmp_path: Path, lock_path: Path) -> None:
    log, go = tmp_path / "log", tmp_path / "go"
    workers = [_spawn(WORKER, lock_path, log, go, 2) for _ in range(4)]
    go.touch()
    for worker in workers:
        assert worker.wait(timeout=30) == 0

    _assert_not_interleaved(log, expected_sections=8)
    assert not lock_path.exists()
    assert _leftovers(lock_path) == []


def test_many_waiters_break_a_stale_lock_once(tmp_path: Path, lock_path: Path) -> None:
    log, go = tmp_path / "log", tmp_path / "go"
    _write_lock(lock_path, host="other-host", pid=1, age=3600)
    workers = [_spawn(WORKER, lock_path, log, go, 1, stderr=subprocess.PIPE) for _ in range(6)]
    go.touch()
    stderr = "".join(worker.communicate(timeout=30)[1] for worker in workers)
    assert [worker.returncode for worker in workers] == [0] * 6

    _assert_not_interleaved(log, expected_sections=6)
    # Without logging configured, the workers' warnings go to stderr through the last resort.
    assert stderr.count("Broke stale lock") == 1
    assert "lost" not in stderr
    assert _leftovers(lock_path) == []


def test_lock_of_killed_process_is_recovered_at_once(
    lock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = _spawn(HOLDER, lock_path, 60, 60)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
    finally:
        holder.send_signal(signal.SIGKILL)
        # Reaped, or the zombie would still answer kill(pid, 0).
        holder.wait(timeout=10)
    assert json.loads(lock_path.read_text())["pid"] == holder.pid

    lock = StoreLock(lock_path, stale_after=60)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), lock:
        assert time.monotonic() - start < 1.0
        assert lock.waited
        assert lock.holder is not None
        assert lock.holder["pid"] == os.getpid()
    assert f"pid {holder.pid}" in caplog.text
    assert "no longer exists" in caplog.text
    assert _leftovers(lock_path) == []


def test_other_hosts_lock_is_broken_only_once_stale(
    lock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The pid is dead here, which must not matter: it belongs to another machine.
    token = _write_lock(lock_path, host="other-host", pid=_dead_pid())
    lock = StoreLock(lock_path, stale_after=5)

    with pytest.raises(LockTimeout, match="other-host"):
        lock.acquire(timeout=0.2)
    assert lock.holder is not None
    assert lock.holder["token"] == token

    _age(lock_path, 6)
    with caplog.at_level(logging.WARNING):
        lock.acquire(timeout=2)
    assert lock.is_held()
    assert "Broke stale lock" in caplog.text
    assert "other-host" in caplog.text
    lock.release()
    assert _leftovers(lock_path) == []


def test_other_hosts_lock_goes_stale_with_time(lock_path: Path) -> None:
    _write_lock(lock_path, host="other-host", pid=1)
    lock = StoreLock(lock_path, stale_after=0.5, poll_interval=0.02)
    start = time.monotonic()
    with lock:
        assert 0.4 <= time.monotonic() - start < 2.0
        assert lock.waited


def test_heartbeat_keeps_a_live_lock_fresh(
    lock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = _spawn(HOLDER, lock_path, 0.6, 2)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    start = time.monotonic()

    with caplog.at_level(logging.WARNING), StoreLock(lock_path, stale_after=0.6) as lock:
        assert time.monotonic() - start >= 1.5
        assert lock.waited
    out, _ = holder.communicate(timeout=10)
    assert holder.returncode == 0
    assert out == "is_held True\n"
    assert "Broke stale lock" not in caplog.text


def test_is_held_notices_a_broken_lock_and_release_spares_the_new_holder(
    lock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = StoreLock(lock_path)
    first.acquire()
    lock_path.unlink()
    assert not first.is_held()

    second = StoreLock(lock_path)
    second.acquire(timeout=1)
    assert not first.is_held()
    assert second.is_held()

    with caplog.at_level(logging.WARNING):
        first.release()
    assert "lost" in caplog.text
    assert second.is_held()
    second.release()
    assert not lock_path.exists()


def test_release_spares_a_foreign_lock_file(lock_path: Path) -> None:
    lock = StoreLock(lock_path)
    lock.acquire()
    lock_path.unlink()
    token = _write_lock(lock_path, host="other-host", pid=1)
    assert not lock.is_held()
    lock.release()
    assert json.loads(lock_path.read_text())["token"] == token


def test_heartbeat_refreshes_only_its_own_lock(lock_path: Path) -> None:
    lock = StoreLock(lock_path, stale_after=0.4)  # heartbeat every 0.1 s
    lock.acquire()
    _age(lock_path, 10)
    time.sleep(0.3)
    assert time.time() - lock_path.stat().st_mtime < 1  # refreshed

    lock_path.unlink()
    _write_lock(lock_path, host="other-host", pid=1, age=10)
    time.sleep(0.3)
    assert time.time() - lock_path.stat().st_mtime > 9  # left alone
    assert _heartbeat_threads() == []  # gave up on the lost lock
    lock.release()


@pytest.mark.parametrize("content", [b"", b'{"token": "0123'], ids=["empty", "half-written"])
def test_unreadable_lock_file_is_judged_by_mtime(lock_path: Path, content: bytes) -> None:
    lock_path.parent.mkdir()
    lock_path.write_bytes(content)
    lock = StoreLock(lock_path, stale_after=5)

    with pytest.raises(LockTimeout, match="unknown holder"):
        lock.acquire(timeout=0.2)
    assert lock.holder is None
    assert lock_path.read_bytes() == content

    _age(lock_path, 6)
    with lock:
        assert lock.holder is not None
    assert _leftovers(lock_path) == []


def test_breaking_puts_back_a_lock_replaced_since_it_was_judged(lock_path: Path) -> None:
    # Stands for a waiter that judged an old lock stale, while another waiter broke it and a new
    # holder took the lock before the first waiter got to act on its judgement.
    _write_lock(lock_path, host="other-host", pid=1, age=3600)
    judged = snapshot(lock_path)
    assert judged is not None
    lock_path.unlink()
    with StoreLock(lock_path) as holder:
        assert not remove_if_same(lock_path, judged)
        assert holder.is_held()
        assert _leftovers(lock_path) == []


def test_breaking_puts_back_an_unreadable_lock_that_was_replaced(lock_path: Path) -> None:
    lock_path.parent.mkdir()
    lock_path.touch()
    _age(lock_path, 3600)
    judged = snapshot(lock_path)
    assert judged is not None
    lock_path.unlink()
    lock_path.touch()  # a new holder between creating its file and writing its record
    assert not remove_if_same(lock_path, judged)
    assert lock_path.exists()
    assert _leftovers(lock_path) == []


def test_heartbeat_outlives_a_waiter_judging_the_lock(lock_path: Path) -> None:
    lock = StoreLock(lock_path, stale_after=0.4)  # heartbeat every 0.1 s
    lock.acquire()
    # What remove_if_same does to a lock it judges and finds fresh: rename it aside, look,
    # put it back. Held open past a heartbeat, the window makes the holder find no file.
    aside = lock_path.with_name("aside")
    os.rename(lock_path, aside)
    time.sleep(0.15)
    os.rename(aside, lock_path)
    _age(lock_path, 10)

    time.sleep(0.3)

    assert time.time() - lock_path.stat().st_mtime < 1  # still refreshed
    assert len(_heartbeat_threads()) == 1
    assert lock.is_held()
    lock.release()
    assert _heartbeat_threads() == []


def test_heartbeat_gives_up_on_a_lock_gone_for_good(lock_path: Path) -> None:
    lock = StoreLock(lock_path, stale_after=0.2)  # heartbeat every 0.05 s
    lock.acquire()
    lock_path.unlink()
    deadline = time.monotonic() + 10
    while _heartbeat_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _heartbeat_threads() == []
    assert not lock.is_held()
    lock.release()


def test_a_cancel_ends_the_wait_for_a_held_lock(lock_path: Path) -> None:
    holder = StoreLock(lock_path)
    holder.acquire()
    cancel = Cancel()
    threading.Timer(0.3, cancel.set, args=("interrupted",)).start()

    started = time.monotonic()
    with pytest.raises(DownloadCancelled, match="was stopped \\(interrupted\\)"):
        StoreLock(lock_path, poll_interval=0.5).acquire(cancel=cancel)

    assert time.monotonic() - started < 1.5
    assert holder.is_held()
    holder.release()
