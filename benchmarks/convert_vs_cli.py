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
(cosine of the first outputs on the same inputs). The runs themselves are ``convert_runs.py``'s.

    .venv/bin/python benchmarks/convert_vs_cli.py                  # int8, best of 3
    .venv/bin/python benchmarks/convert_vs_cli.py --precision int4 --repeat 1

It reports and does not judge: the exit status is 0 even when a target is missed, and 1 only
when a contender failed or its output does not check out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Run as a script, this folder is on the path: its sibling module is importable as it is.
from convert_runs import (
    CLI,
    MD,
    QUIET_ENV,
    REPO_ID,
    REPO_ROOT,
    VENV_BIN,
    BenchError,
    Contender,
    Model,
    measure,
)

MANIFEST = ".model-download.json"
TARGET_RATIO = 1.0
MIN_COSINE = 0.99
DEFAULT_GROUP_SIZE = 128  # what both contenders use for int4 when none is given
HEAD_SIZE = 32  # MiniLM's: 384 wide, 12 heads


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
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
            measure(contenders, model, hub.url, str(cli), workdir / "runs", args)
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
    args = parser.parse_args(argv)
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
    md_rss = max(md.steps("convert_rss_mb"))
    _print_setting(model, args)
    _print_table(cli, md, md_rss)
    _print_inside(md)
    _print_targets(cli, md, md_rss)
    print()
    print("checks (the last run of each):")
    for check in checks:
        print(f"  [{'ok' if check.ok else 'FAILED'}] {check.text}")
    _print_notes()


def _print_setting(model: Model, args: argparse.Namespace) -> None:
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


def _print_table(cli: Contender, md: Contender, md_rss: float) -> None:
    print()
    header = (
        f"{'contender':<24}{'best s':>8}{'median s':>10}{'vs CLI':>8}"
        f"{'CPU s':>8}{'vs CLI':>8}{'peak RSS MB':>13}"
    )
    print(header)
    print("-" * len(header))
    for c, rss in ((cli, cli.peak_rss), (md, md_rss)):
        print(
            f"{c.name:<24}{c.best:>8.2f}{c.median:>10.2f}{c.best / cli.best:>8.2f}"
            f"{c.best_cpu:>8.2f}{c.best_cpu / cli.best_cpu:>8.2f}{rss:>13.1f}"
        )


def _print_inside(md: Contender) -> None:
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


def _print_targets(cli: Contender, md: Contender, md_rss: float) -> None:
    ratio = md.best / cli.best
    print()
    print("targets:")
    print(
        f"  [{'met' if ratio <= TARGET_RATIO else 'MISSED'}] pipeline convert step <= "
        f"{TARGET_RATIO:.1f} x {CLI} time: {ratio:.2f} x"
    )
    print(f"  peak RSS: {CLI} {cli.peak_rss:.1f} MB")
    print(f"  peak RSS: {MD} {md_rss:.1f} MB, {md.peak_rss:.1f} MB with validation")


def _print_notes() -> None:
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
