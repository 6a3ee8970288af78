"""Time model-download's convert step against ``optimum-cli export openvino`` on the same model.

A MiniLM-sized BERT (6 layers, hidden 384, random seeded weights, the trained tokenizer of
``tests.models.tiny``) is built offline. Each contender is a subprocess timed from start to exit,
its own peak RSS read with ``os.wait4``:

- ``optimum-cli``: ``optimum-cli export openvino --task feature-extraction --weight-format P``
  into a fresh folder.
- ``model-download convert``: the project's ``convert_stored`` on the model as the service
  stores it. Before each run the model is pulled from a fake hub on 127.0.0.1 into a new, empty
  store, so nothing is cached; the pull is not timed. The same process then validates the result
  (``validate_stored``); the child reports that step's time, which is taken off its wall time.

Both outputs are checked after the clock stops: the same file names, and IRs that load and agree
(cosine of the first outputs on the same inputs).

    .venv/bin/python benchmarks/convert_vs_cli.py                  # int8, best of 3
    .venv/bin/python benchmarks/convert_vs_cli.py --precision int4 --repeat 1

It reports and does not judge: the exit status is 0 even when a target is missed, and 1 only
when a contender failed or its output does not check out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Not resolved: the venv's bin is where optimum-cli sits next to its python symlink.
VENV_BIN = Path(sys.executable).parent
REPO_ID = "bench/minilm"
MANIFEST = ".model-download.json"

CLI = "optimum-cli"
MD = "model-download convert"
TARGET_RATIO = 1.0
MIN_COSINE = 0.99
DEFAULT_GROUP_SIZE = 128  # what both contenders use for int4 when none is given
HEAD_SIZE = 32  # MiniLM's: 384 wide, 12 heads
# No tool may report home: CI=true silences OpenVINO's and nncf's telemetry.
QUIET_ENV = {"CI": "true", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


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
class Contender:
    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def best_cpu(self) -> float:
        return min(r.cpu for r in self.runs)

    @property
    def peak_rss(self) -> float:
        return max(r.rss_mb for r in self.runs)

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


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))
    os.environ.update(QUIET_ENV)  # this process imports torch, OpenVINO and huggingface_hub too
    # Proxies must not carry the loopback traffic of our own pulls from the fake hub.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # tests.* is not installed, only the project
    cli = VENV_BIN / "optimum-cli"
    if not cli.exists():
        print(f"error: {cli} is missing; run `make setup` first", file=sys.stderr)
        return 1

    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="convert-bench-")) if owned else args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    made = [workdir / "model", workdir / "hub", workdir / "runs"]
    try:
        from tests.servers.hf_hub import FakeHub

        print("building the model...", file=sys.stderr)
        model = _build_model(workdir / "model", args.layers, args.hidden)
        with FakeHub(workdir / "hub") as hub:
            from tests.models.tiny import repo_files

            hub.commit(REPO_ID, repo_files(model.folder))
            contenders = [Contender(CLI), Contender(MD)]
            _measure(contenders, model, hub.url, str(cli), workdir / "runs", args)
        checks = _check_outputs(contenders, model)
        _report(contenders, model, checks, args)
        if failed := sum(not c.ok for c in checks):
            print(f"error: {failed} check(s) of the outputs failed; see above", file=sys.stderr)
            return 1
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
        description="Time model-download's convert step against optimum-cli export openvino.",
    )
    parser.add_argument("--layers", type=int, default=6, help="BERT layers (default 6)")
    parser.add_argument(
        "--hidden",
        type=int,
        default=384,
        help=f"hidden size, a multiple of {HEAD_SIZE}; the MLP is 4x wider (default 384)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8", "int4"),
        default="int8",
        help="weight format of both conversions (default int8)",
    )
    parser.add_argument(
        "--group-size",
        type=int,
        help=f"int4 only: weights per scale, -1 per row (default {DEFAULT_GROUP_SIZE})",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per contender; the best counts (default 3)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the model, stores and outputs go (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the data behind")
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds before a run is killed (default 900)"
    )
    # The timed process of model-download's contender: this file, so it imports what it needs.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    if args.layers < 1 or args.repeat < 1:
        parser.error("--layers and --repeat must be positive")
    if args.hidden < HEAD_SIZE or args.hidden % HEAD_SIZE:
        parser.error(f"--hidden must be a positive multiple of {HEAD_SIZE}")
    if args.group_size is not None:
        if args.precision != "int4":
            parser.error("--group-size applies to --precision int4 only")
        if args.group_size != -1 and args.group_size < 1:
            parser.error("--group-size must be positive, or -1 (per row)")
    group = args.group_size or DEFAULT_GROUP_SIZE
    if args.precision == "int4" and group != -1 and args.hidden % group:
        # nncf refuses a group size that does not divide the rows; say so before any run.
        parser.error(
            f"int4 with group size {group} needs --hidden to be a multiple of it: "
            f"give --group-size -1 or one that divides {args.hidden}"
        )
    return args


# -- the model -----------------------------------------------------------------------------------


def _build_model(folder: Path, layers: int, hidden: int) -> Model:
    """The tiny BERT's folder with its tokenizer, its model swapped for a MiniLM-sized one."""
    import torch
    from transformers import BertConfig, BertModel

    from tests.models.tiny import build_tiny_bert

    shutil.rmtree(folder, ignore_errors=True)
    build_tiny_bert(folder)
    config = BertConfig.from_pretrained(folder)
    # The vocabulary stays the tokenizer's: a bigger table would only hold ids it never makes.
    config.num_hidden_layers = layers
    config.hidden_size = hidden
    config.num_attention_heads = hidden // HEAD_SIZE
    config.intermediate_size = 4 * hidden
    config.max_position_embeddings = 512
    torch.manual_seed(0)
    model = BertModel(config).eval()
    for old in folder.glob("*.safetensors"):
        old.unlink()  # a shard of the tiny model must not sit next to the new weights
    model.save_pretrained(folder)
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return Model(
        folder=folder,
        layers=layers,
        hidden=hidden,
        heads=config.num_attention_heads,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
        parameters=sum(p.numel() for p in model.parameters()),
        weight_bytes=weights,
    )


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


def _measure(
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
    seconds, cpu, rss_mb, _ = _timed(cmd, env, scratch, args.timeout)
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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    # Dirty pages of the pull would otherwise be written back on the conversion's time.
    os.sync()
    started = datetime.now(UTC)
    wall, cpu, rss_mb, stdout = _timed(cmd, _clean_env(hub_url), scratch, args.timeout)
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


def _timed(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[float, float, float, str]:
    """Run ``cmd`` to its end: wall seconds, CPU seconds, its own peak RSS in MB, its stdout."""
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
        raise BenchError(f"{' '.join(cmd[:4])}... failed ({why}):\n{(out + err)[-3000:]}")
    # Linux reports ru_maxrss in KiB.
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss * 1024 / 1e6, out


def _child_result(stdout: str) -> dict[str, Any]:
    # Libraries may print before it (progress bars): the result is the last line.
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise BenchError(f"{MD} printed no result line:\n{stdout[-2000:]}") from exc


# -- the timed child of model-download's contender -------------------------------------------


def _child(spec: dict[str, Any]) -> int:
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


# -- checking ------------------------------------------------------------------------------------


@dataclass
class Check:
    ok: bool
    text: str


def _check_outputs(contenders: list[Contender], model: Model) -> list[Check]:
    """What the last run of each contender wrote: the same files, IRs that load and agree."""
    by_name = {c.name: c for c in contenders}
    cli_out, md_out = by_name[CLI].runs[-1].output, by_name[MD].runs[-1].output
    cli_files, md_files = _files(cli_out), _files(md_out) - {MANIFEST}
    if cli_files == md_files:
        checks = [Check(True, f"both outputs hold the same {len(cli_files)} file names")]
    else:
        sides = [
            f"only {name}: {sorted(only)}"
            for name, only in ((CLI, cli_files - md_files), (MD, md_files - cli_files))
            if only
        ]
        checks = [Check(False, f"the outputs hold different file names: {'; '.join(sides)}")]
    try:
        cosine = _cosine_of_outputs(model.folder, md_out / "openvino_model.xml", cli_out)
    except Exception as exc:  # OpenVINO raises plain RuntimeErrors; any of them fails the check
        checks.append(Check(False, f"the IRs do not both load and run: {exc}"))
    else:
        checks.append(
            Check(
                cosine > MIN_COSINE,
                f"both IRs load; first outputs on the same sentences: cosine {cosine:.6f} "
                f"(> {MIN_COSINE:g})",
            )
        )
    failed = [r for r in by_name[MD].runs if not r.step["passed"]]
    checks.append(
        Check(
            not failed,
            f"{MD}'s own validation passed in {len(by_name[MD].runs) - len(failed)} of "
            f"{len(by_name[MD].runs)} run(s)",
        )
    )
    return checks


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _cosine_of_outputs(model_dir: Path, ours_xml: Path, cli_out: Path) -> float:
    """Cosine between the first outputs of both IRs, given the same tokenized sentences."""
    import numpy as np
    import openvino as ov
    from transformers import AutoTokenizer

    from tests.models.tiny import SENTENCES

    encoded = AutoTokenizer.from_pretrained(model_dir)(SENTENCES, padding=True, return_tensors="np")
    core = ov.Core()
    firsts = []
    for xml in (ours_xml, cli_out / "openvino_model.xml"):
        # f32 on purpose: a CPU with native bf16 would otherwise add its own rounding to both.
        compiled = core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        feed = {p.get_any_name(): encoded[p.get_any_name()] for p in compiled.inputs}
        firsts.append(np.asarray(compiled(feed)[0], dtype=np.float64).ravel())
    a, b = firsts
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- reporting -----------------------------------------------------------------------------------


def _report(
    contenders: list[Contender], model: Model, checks: list[Check], args: argparse.Namespace
) -> None:
    by_name = {c.name: c for c in contenders}
    cli, md = by_name[CLI], by_name[MD]
    precision = args.precision
    if precision == "int4":
        precision += f", group size {args.group_size or DEFAULT_GROUP_SIZE}"
    print()
    print(
        f"BertModel: {model.layers} layers, hidden {model.hidden}, {model.heads} heads, "
        f"intermediate {model.intermediate}, 512 positions, vocab {model.vocab}:\n"
        f"{model.parameters / 1e6:.1f} M parameters, {model.weight_bytes / 1e6:.1f} MB of "
        f"safetensors. Converted to {precision}; best of {args.repeat} run(s), median alongside.\n"
        "Times run from process start to exit, imports included; model-download's leaves out\n"
        "the validation that follows the convert step in the same process. CPU s: user + system\n"
        "time of all threads (best), which other load on the machine changes less. Peak RSS:\n"
        "wait4's for optimum-cli; for model-download the same counter read as convert_stored\n"
        "returns."
    )
    print()
    header = (
        f"{'contender':<24}{'best s':>8}{'median s':>10}{'vs CLI':>8}"
        f"{'CPU s':>8}{'vs CLI':>8}{'peak RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    md_rss = max(md.steps("convert_rss_mb"))
    for c, rss in ((cli, cli.peak_rss), (md, md_rss)):
        print(
            f"{c.name:<24}{c.best:>8.2f}{c.median:>10.2f}{c.best / cli.best:>8.2f}"
            f"{c.best_cpu:>8.2f}{c.best_cpu / cli.best_cpu:>8.2f}{rss:>13.1f}"
        )
    validate = md.steps("validate_s")
    convert = md.steps("convert_s")
    setup = md.steps("setup_s")
    print()
    print(
        f"{MD}, inside its process: imports and set-up {min(setup):.2f} s before the call,\n"
        f"convert_stored {min(convert):.2f} s (median {statistics.median(convert):.2f}); then "
        f"validate_stored {min(validate):.2f} s (median {statistics.median(validate):.2f}),\n"
        f"which brings the process to {min(r.wall for r in md.runs):.2f} s and "
        f"{md.peak_rss:.1f} MB peak RSS."
    )

    ratio = md.best / cli.best
    print()
    print("targets:")
    print(
        f"  [{'met' if ratio <= TARGET_RATIO else 'MISSED'}] pipeline convert step <= "
        f"{TARGET_RATIO:.1f} x {CLI} time: {ratio:.2f} x"
    )
    print(f"  peak RSS: {CLI} {cli.peak_rss:.1f} MB")
    print(f"  peak RSS: {MD} {md_rss:.1f} MB, {md.peak_rss:.1f} MB with validation")
    print()
    print("checks (the last run of each):")
    for check in checks:
        print(f"  [{'ok' if check.ok else 'FAILED'}] {check.text}")
    print()
    print(
        f"notes: {CLI} exports the fp32 IR to a temporary folder, then reads it back and\n"
        "compresses it with nncf (int8, int4; fp16 is saved as fp16 by the export itself) and\n"
        "moves the result to its output; it keeps no fp32 copy. model-download exports fp32 into\n"
        "the store (hashing each file and linking it to the store's blobs), then for fp16, int8\n"
        "and int4 reads that IR back, compresses it with nncf into a second stored folder, and\n"
        "keeps the fp32 IR as validation's reference: two stored conversions per run. Each of\n"
        "its runs starts from a new store holding only the pulled model, so nothing is cached.\n"
        "Other work on the machine shows up as spread between runs: compare best and median."
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
