"""Download throughput of ``model-download pull`` against curl and ``hf download``, on loopback.

A fake Hugging Face hub (``tests.servers.hf_hub``, in its own process so its CPU use is not
charged to ours) serves one repo of large random ``.bin`` files. Each contender downloads the
whole repo into a fresh empty directory, as a subprocess timed from start to exit; its own peak
RSS comes from ``os.wait4``. The bytes each contender wrote are checked against the served ones
after the clock stops.

    .venv/bin/python benchmarks/pull_throughput.py                  # 4 x 200 MB, best of 3
    .venv/bin/python benchmarks/pull_throughput.py --size-mb 50 --repeat 1

It reports and does not judge: the exit status is 0 even when a target is missed, and 1 only
when a contender failed or wrote wrong bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from timed_process import BenchError, RunStats, run_timed

REPO_ROOT = Path(__file__).resolve().parent.parent
# Not resolved: the venv's bin is where hf and model-download sit next to its python symlink.
VENV_BIN = Path(sys.executable).parent
REPO_ID = "org/model"

MD = "model-download"
MD_NOSYNC = "md FSYNC=0"
TARGET_VS_CURL = 0.8
TARGET_RSS_MB = 300.0


@dataclass
class Run:
    seconds: float
    rss_mb: float
    # fsync of the written files right after the run: the writeback the contender left behind.
    fsync_seconds: float = 0.0


@dataclass
class Contender(RunStats):
    name: str
    # Given the served repo and a scratch dir, the command, its environment and the directory
    # holding the downloaded files (None: read it from the command's stdout).
    prepare: Callable[[Served, Path], tuple[list[str], dict[str, str], Path | None]]
    runs: list[Run] = field(default_factory=list)

    @property
    def median_fsync(self) -> float:
        return statistics.median(r.fsync_seconds for r in self.runs)


@dataclass
class Served:
    base: str
    commit: str
    sha256: dict[str, str]  # file name -> hex digest of the bytes the hub serves
    total_bytes: int


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    curl = shutil.which("curl")
    if curl is None:
        print(
            "error: curl is not installed; it is the baseline. Install it "
            "(e.g. `apt-get install -y curl`) and run again.",
            file=sys.stderr,
        )
        return 1
    try:
        tools = {name: _venv_tool(name) for name in ("hf", "model-download")}
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="pull-bench-")) if owned else args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    made = [workdir / "server", workdir / "runs"]
    server = None
    try:
        server, served = _start_server(workdir / "server", args.files, args.size_mb)
        contenders = _contenders(curl, tools)
        _measure(contenders, served, workdir / "runs", args.repeat, args.timeout)
        _report(contenders, served, args.repeat)
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            _stop(server)
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
        description="Time model-download pull against curl and hf download on loopback.",
    )
    parser.add_argument("--files", type=int, default=4, help="files in the repo (default 4)")
    parser.add_argument(
        "--size-mb", type=float, default=200, help="size of each file, 10**6 bytes (default 200)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per contender; the best counts (default 3)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where served and downloaded files go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the data behind")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds before a run is killed (default 900)"
    )
    args = parser.parse_args(argv)
    if args.files < 1 or args.size_mb <= 0 or args.repeat < 1:
        parser.error("--files, --size-mb and --repeat must be positive")
    return args


def _venv_tool(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} is not installed; run `make setup` first")
    return found


# -- the hub -------------------------------------------------------------------------------------


def _start_server(root: Path, files: int, size_mb: float) -> tuple[subprocess.Popen, Served]:
    names = [f"f{i}.bin" for i in range(1, files + 1)]
    cmd = [sys.executable, "-m", "tests.servers.hf_hub", "--root", str(root), "--repo", REPO_ID]
    for name in names:
        cmd += ["--file", f"{name}={size_mb:g}"]
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "server.log").open("wb")
    print(f"generating {files} x {size_mb:g} MB and starting the hub...", file=sys.stderr)
    server = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=_clean_env(), stdout=subprocess.PIPE, stderr=log, text=True
    )
    log.close()
    try:
        # The hub writes and hashes every file before it prints its URL: allow for a slow disk.
        ready, _, _ = select.select([server.stdout], [], [], 600)
        base = server.stdout.readline().strip() if ready else ""
        if not base.startswith("http://127.0.0.1:"):
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            raise BenchError(f"the fake hub did not start (printed {base!r}):\n{tail}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
        with opener.open(f"{base}/api/models/{REPO_ID}/revision/main", timeout=30) as response:
            commit = json.load(response)["sha"]
        sha256 = {name: _sha256(root / "src" / name) for name in names}
        total = sum((root / "src" / name).stat().st_size for name in names)
    except BaseException:
        _stop(server)
        raise
    return server, Served(base, commit, sha256, total)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server.stdout is not None:
        server.stdout.close()


# -- contenders ----------------------------------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    """Our environment without settings that would change what a contender does."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_", "MODEL_DOWNLOAD_"))
        and key not in ("MODELS_DIR", "CURL_HOME")
        and not key.lower().endswith("_proxy")
    }
    # A proxy from the environment must not carry loopback traffic, for any of the tools.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env | extra


def _contenders(curl: str, tools: dict[str, str]) -> list[Contender]:
    def curl_cmd(served: Served, scratch: Path):
        out = scratch / "out"
        out.mkdir()
        # -q first: a ~/.curlrc must not add options to the baseline.
        cmd = [curl, "-q", "--parallel", "--parallel-max", "4", "-s", "-S", "--fail"]
        for name in served.sha256:
            url = f"{served.base}/{REPO_ID}/resolve/{served.commit}/{name}"
            cmd += ["-o", str(out / name), url]
        return cmd, _clean_env(HOME=str(scratch)), out

    def hf_cmd(served: Served, scratch: Path):
        out = scratch / "out"
        env = _clean_env(
            HF_ENDPOINT=served.base,
            HF_HOME=str(scratch / "hf-home"),  # fresh: nothing cached by an earlier run
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_XET="1",
        )
        # --quiet, as model-download runs: neither pays for drawing progress bars.
        return [tools["hf"], "download", REPO_ID, "--local-dir", str(out), "--quiet"], env, out

    def md_cmd(fsync: bool):
        def prepare(served: Served, scratch: Path):
            env = _clean_env(
                HF_ENDPOINT=served.base,
                MODELS_DIR=str(scratch / "models"),
                MODEL_DOWNLOAD_PREFECT_HOME=str(scratch / "prefect"),
                MODEL_DOWNLOAD_FSYNC="1" if fsync else "0",
            )
            return [tools["model-download"], "pull", "--quiet", f"hf:{REPO_ID}"], env, None

        return prepare

    return [
        Contender("curl", curl_cmd),
        Contender("hf download", hf_cmd),
        Contender(MD, md_cmd(fsync=True)),
        # The same pull leaving writeback to the kernel, as curl and hf download do.
        Contender(MD_NOSYNC, md_cmd(fsync=False)),
    ]


# -- measuring -----------------------------------------------------------------------------------


def _measure(
    contenders: list[Contender], served: Served, runs_dir: Path, repeat: int, timeout: float
) -> None:
    for rep in range(1, repeat + 1):
        # Interleaved, so a slow spell of the machine hits every contender rather than one.
        for contender in contenders:
            scratch = runs_dir / f"{contender.name.replace(' ', '-')}-{rep}"
            scratch.mkdir(parents=True)
            try:
                cmd, env, out = contender.prepare(served, scratch)
                # Dirty pages of the previous run would otherwise be written back on this one's
                # time.
                os.sync()
                run, stdout = _timed(cmd, env, scratch, timeout)
                if out is None:
                    out = _pulled_dir(stdout)
                run.fsync_seconds = _fsync_files(out, served)
                _check_bytes(contender.name, out, served)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            contender.runs.append(run)
            mbps = served.total_bytes / 1e6 / run.seconds
            print(
                f"run {rep}/{repeat}  {contender.name:<15} {run.seconds:7.2f} s"
                f"  {mbps:7.1f} MB/s  {run.rss_mb:6.1f} MB RSS"
                f"  then fsync {run.fsync_seconds:.2f} s",
                file=sys.stderr,
            )


def _timed(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[Run, str]:
    """Run ``cmd`` to its end: wall time, its own peak RSS, and its stdout."""
    timed = run_timed(cmd, env, cwd, timeout)
    return Run(timed.seconds, timed.rss_mb), timed.stdout


def _fsync_files(out: Path, served: Served) -> float:
    """Seconds to make the files a contender wrote durable, which it may have left undone."""
    start = time.perf_counter()
    for name in served.sha256:
        # Per file rather than `sync`: that would also flush whatever else the machine writes.
        with contextlib.suppress(FileNotFoundError), (out / name).open("rb") as f:
            os.fsync(f.fileno())
    return time.perf_counter() - start


def _pulled_dir(stdout: str) -> Path:
    # pull prints "<reference>  ->  <path of the stored model>" for each model.
    for line in reversed(stdout.splitlines()):
        if "  ->  " in line:
            return Path(line.rsplit("  ->  ", 1)[1].strip())
    raise BenchError(f"cannot find the stored model's path in pull's output:\n{stdout[-2000:]}")


def _check_bytes(name: str, out: Path, served: Served) -> None:
    for file, want in served.sha256.items():
        path = out / file
        if not path.is_file():
            raise BenchError(f"{name} did not write {file} (looked at {path})")
        if (have := _sha256(path)) != want:
            raise BenchError(f"{name} wrote wrong bytes to {file}: sha256 {have}, served {want}")


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- reporting -----------------------------------------------------------------------------------


def _report(contenders: list[Contender], served: Served, repeat: int) -> None:
    by_name = {c.name: c for c in contenders}
    mb = served.total_bytes / 1e6
    nfiles = len(served.sha256)
    print()
    print(
        f"{nfiles} files x {mb / nfiles:g} MB = {mb:g} MB over loopback; best of {repeat} "
        "run(s), median alongside.\n"
        "exit s: from start to the process's exit. on disk s: exit s plus the fsync of its files\n"
        "right after (the median): when the bytes are durable, which model-download waits for\n"
        "before it publishes a model and the others leave to the kernel."
    )
    print()
    header = (
        f"{'contender':<16}{'exit s':>8}{'median':>8}{'MB/s':>8}{'vs curl':>9}"
        f"{'on disk s':>11}{'vs curl':>9}{'RSS MB':>8}"
    )
    print(header)
    print("-" * len(header))
    curl = by_name["curl"]
    for c in contenders:
        print(
            f"{c.name:<16}{c.best:>8.2f}{c.median:>8.2f}{mb / c.best:>8.0f}"
            f"{curl.best / c.best:>9.2f}{_on_disk(c):>11.2f}{_on_disk(curl) / _on_disk(c):>9.2f}"
            f"{c.peak_rss:>8.1f}"
        )

    md, nosync, hf = by_name[MD], by_name[MD_NOSYNC], by_name["hf download"]
    targets = [
        (f"{MD} >= {TARGET_VS_CURL:g} x curl, bytes on disk", _on_disk(curl) / _on_disk(md)),
        (f"{MD_NOSYNC} >= {TARGET_VS_CURL:g} x curl, at exit", curl.best / nosync.best),
        (f"{MD} >= hf download, bytes on disk", _on_disk(hf) / _on_disk(md)),
        (f"{MD_NOSYNC} >= hf download, at exit", hf.best / nosync.best),
    ]
    print()
    print("targets:")
    for text, ratio in targets:
        floor = TARGET_VS_CURL if "curl" in text else 1.0
        print(f"  [{'met' if ratio >= floor else 'MISSED'}] {text}: {ratio:.2f} x")
    peak = max(md.peak_rss, nosync.peak_rss)
    print(
        f"  [{'met' if peak < TARGET_RSS_MB else 'MISSED'}] {MD} peak RSS < "
        f"{TARGET_RSS_MB:g} MB: {peak:.1f} MB"
    )
    print()
    print(
        "notes: the page cache is not dropped (that needs root and disturbs the machine); the\n"
        "served files sit in it for every contender alike. Written data is synced before each\n"
        "run, so no run pays for the previous one's writeback. model-download hashes each file\n"
        "as it streams (sha256, checked against the hub's); curl and hf download do not. The\n"
        "hub is a Python process sending with sendfile, sharing the CPUs with the client."
    )


def _on_disk(contender: Contender) -> float:
    return contender.best + contender.median_fsync


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
