"""Running a contender as a child process and reading what it cost: shared by the benchmarks."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


@dataclass
class Timed:
    """One finished child: wall seconds, CPU seconds, its own peak RSS in MB, its stdout."""

    seconds: float
    cpu: float
    rss_mb: float
    stdout: str


class RunStats:
    """The best and median seconds, and the peak memory, of a contender's ``runs`` (each with
    ``seconds`` and ``rss_mb``)."""

    runs: list

    @property
    def best(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_rss(self) -> float:
        return max(r.rss_mb for r in self.runs)


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Timed:
    """Run ``cmd`` in ``cwd`` to its end, killing it after ``timeout`` seconds.

    Raises:
        BenchError: it exited non-zero or was killed; the message ends with its output.
    """
    stdout_path, stderr_path = cwd / "stdout.log", cwd / "stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            # wait4, not RUSAGE_CHILDREN: that one keeps the largest child ever reaped, so a
            # contender would inherit the peak of the one before it.
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by us: Popen must not wait
    out = stdout_path.read_text(errors="replace")
    if proc.returncode != 0:
        err = stderr_path.read_text(errors="replace")
        why = f"killed after {timeout:g} s" if seconds >= timeout else f"exit {proc.returncode}"
        shown = " ".join(cmd[:4]) + (" ..." if len(cmd) > 4 else "")
        raise BenchError(f"{shown} failed ({why}):\n{(out + err)[-3000:]}")
    # Linux reports ru_maxrss in KiB.
    cpu = usage.ru_utime + usage.ru_stime
    return Timed(seconds, cpu, usage.ru_maxrss * 1024 / 1e6, out)
