"""The measuring half of ``convert_vs_cli.py``: each contender as a timed subprocess.

``optimum-cli export openvino`` runs as it is. model-download's contender is this module run as a
script (``python convert_runs.py SPEC``): it converts and validates as ``pull --to openvino``
does and prints what it measured of itself as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from timed_process import BenchError, RunStats, run_timed

REPO_ROOT = Path(__file__).resolve().parent.parent
# Not resolved: the venv's bin is where optimum-cli sits next to its python symlink.
VENV_BIN = Path(sys.executable).parent
REPO_ID = "bench/minilm"

CLI = "optimum-cli"
MD = "model-download convert"
# No tool may report home: CI=true silences OpenVINO's and nncf's telemetry.
QUIET_ENV = {"CI": "true", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


@dataclass
class Run:
    seconds: float  # what the ratio compares: wall time, less ours' validation step
    wall: float
    # CPU seconds (user + system, all threads), less ours' validation step: other work on the
    # machine stretches wall time far more than it does this.
    cpu: float
    rss_mb: float  # the whole process's peak, from wait4
    scratch: Path  # everything the run made
    output: Path
    step: dict[str, Any] = field(default_factory=dict)  # what our child measured itself


@dataclass
class Contender(RunStats):
    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def best_cpu(self) -> float:
        return min(r.cpu for r in self.runs)

    def steps(self, key: str) -> list[float]:
        return [r.step[key] for r in self.runs]


@dataclass
class Model:
    folder: Path
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    parameters: int
    weight_bytes: int


# -- measuring -----------------------------------------------------------------------------------


def _clean_env(hub_url: str, **extra: str) -> dict[str, str]:
    """Our environment without settings that would change what a contender does."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HF_", "HUGGINGFACE_", "MODEL_DOWNLOAD_", "OPENVINO_", "NNCF_"))
        and key not in ("MODELS_DIR", "PYTHONPATH")
        and not key.lower().endswith("_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # Neither should ask a hub for anything; if one does, it asks the fake one, not the internet.
    env["HF_ENDPOINT"] = hub_url
    return env | QUIET_ENV | extra


def measure(
    contenders: list[Contender],
    model: Model,
    hub_url: str,
    cli: str,
    runs_dir: Path,
    args: argparse.Namespace,
) -> None:
    by_name = {c.name: c for c in contenders}
    for rep in range(1, args.repeat + 1):
        # Interleaved, so a slow spell of the machine hits every contender rather than one.
        for contender in contenders:
            scratch = runs_dir / f"{contender.name.replace(' ', '-')}-{rep}"
            scratch.mkdir(parents=True)
            if contender.name == CLI:
                run = _run_cli(cli, model, hub_url, scratch, args)
            else:
                run = _run_md(model, hub_url, scratch, args)
            _drop_earlier(by_name[contender.name])
            contender.runs.append(run)
            extra = ""
            if run.step:
                extra = f"  (validation {run.step['validate_s']:.2f} s after it)"
            print(
                f"run {rep}/{args.repeat}  {contender.name:<24} {run.seconds:7.2f} s"
                f"  {run.rss_mb:7.1f} MB RSS{extra}",
                file=sys.stderr,
            )


def _drop_earlier(contender: Contender) -> None:
    # Only the last output is compared: the earlier ones would just fill the disk.
    for run in contender.runs:
        shutil.rmtree(run.scratch, ignore_errors=True)


def _run_cli(cli: str, model: Model, hub_url: str, scratch: Path, args: argparse.Namespace) -> Run:
    out = scratch / "out"
    cmd = [cli, "export", "openvino", "--model", str(model.folder)]
    cmd += ["--task", "feature-extraction", "--weight-format", args.precision]
    if args.group_size is not None:
        cmd += ["--group-size", str(args.group_size)]
    cmd.append(str(out))
    env = _clean_env(hub_url, HF_HUB_OFFLINE="1")
    # The previous run's writes would otherwise be written back on this one's time.
    os.sync()
    timed = run_timed(cmd, env, scratch, args.timeout)
    seconds, cpu, rss_mb = timed.seconds, timed.cpu, timed.rss_mb
    if not (out / "openvino_model.xml").is_file():
        raise BenchError(f"{CLI} exited 0 but wrote no openvino_model.xml into {out}")
    return Run(seconds, seconds, cpu, rss_mb, scratch, out)


def _run_md(model: Model, hub_url: str, scratch: Path, args: argparse.Namespace) -> Run:
    store_root = scratch / "store"
    source = _pull(store_root, hub_url)
    if (store_root / "openvino-ir").exists():
        raise BenchError(f"{store_root} already holds conversions: the run would convert nothing")
    spec = {
        "store": str(store_root),
        "source": str(source),
        "hub_url": hub_url,
        "precision": args.precision,
        "group_size": args.group_size,
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)]
    # Dirty pages of the pull would otherwise be written back on the conversion's time.
    os.sync()
    started = datetime.now(UTC)
    timed = run_timed(cmd, _clean_env(hub_url), scratch, args.timeout)
    wall, cpu, rss_mb, stdout = timed.seconds, timed.cpu, timed.rss_mb, timed.stdout
    step = _child_result(stdout)
    output = Path(step["output"])
    # A fresh store cannot hold the answer already, but a cache we do not know of could.
    if datetime.fromisoformat(step["created_at"]) < started:
        raise BenchError(f"{MD} returned a conversion made before the run: {output}")
    seconds, cpu = wall - step["validate_s"], cpu - step["validate_cpu_s"]
    return Run(seconds, wall, cpu, rss_mb, scratch, output, step)


def _pull(store_root: Path, hub_url: str) -> Path:
    """Put the model into a new store as the service does; the stored folder."""
    from model_download.pull import download_resolved, resolve_reference
    from model_download.refs import parse_reference
    from model_download.settings import Settings
    from model_download.store.store import ModelStore
    from plugins.registry import Registry

    settings = Settings(_env_file=None, models_dir=store_root, hf_endpoint=hub_url)
    registry = Registry(settings)
    resolved = resolve_reference(parse_reference(f"hf:{REPO_ID}"), registry)
    stored = download_resolved(resolved, store=ModelStore(store_root), registry=registry)
    return stored.path


def _child_result(stdout: str) -> dict[str, Any]:
    # Libraries may print before it (progress bars): the result is the last line.
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise BenchError(f"{MD} printed no result line:\n{stdout[-2000:]}") from exc


def child(spec: dict[str, Any]) -> int:
    """Convert and validate as ``pull --to openvino`` does; print the steps' numbers as JSON."""
    start = time.perf_counter()
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # this checkout, whatever the venv points at
    from model_download.conversion import ConvertOptions
    from model_download.convert import convert_stored
    from model_download.settings import Settings
    from model_download.store.manifest import read_manifest
    from model_download.store.store import ModelStore, StoredModel
    from model_download.validate import validate_stored
    from plugins.registry import Registry

    store_root, source_dir = Path(spec["store"]), Path(spec["source"])
    settings = Settings(_env_file=None, models_dir=store_root, hf_endpoint=spec["hub_url"])
    store = ModelStore(store_root)
    registry = Registry(settings)
    source = StoredModel(path=source_dir, manifest=read_manifest(source_dir))
    options = ConvertOptions(precision=spec["precision"], group_size=spec["group_size"])
    ready = time.perf_counter()

    converted = convert_stored(source, options, store=store, registry=registry, settings=settings)
    converted_at = time.perf_counter()
    # The same counters wait4 reads, before validation adds to them.
    before = resource.getrusage(resource.RUSAGE_SELF)
    convert_rss = before.ru_maxrss * 1024 / 1e6

    _, reports = validate_stored(converted, options, store=store)
    validated_at = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_SELF)
    validate_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    result = {
        "setup_s": ready - start,
        "convert_s": converted_at - ready,
        "validate_s": validated_at - converted_at,
        "validate_cpu_s": validate_cpu,
        "convert_rss_mb": convert_rss,
        "passed": all(r.passed for r in reports),
        "cosine_to_fp32": [r.similarity.cosine for r in reports if r.similarity is not None],
        "output": str(converted.path),
        "created_at": converted.manifest.created_at.isoformat(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(child(json.loads(sys.argv[1])))
