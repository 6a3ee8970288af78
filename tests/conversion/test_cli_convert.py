"""`model-download pull --to openvino`, run as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models.tiny import build_tiny_bert, repo_files
from tests.servers.hf_hub import FakeHub
from tests.test_cli import run

pytest.importorskip("optimum.exporters.openvino")


def test_pull_convert_validate_and_show(hub: FakeHub, tmp_path: Path, isolated_env: Path) -> None:
    hub.commit("tiny/bert", repo_files(build_tiny_bert(tmp_path / "bert", seed=5)))

    pulled = run(
        "pull",
        "hf:tiny/bert",
        "--to",
        "openvino",
        "--precision",
        "int8",
        "--device",
        "GPU",
        "--quiet",
    )

    assert pulled.returncode == 0, pulled.stderr
    # --quiet keeps nncf's tables and progress bars out: only the result is printed.
    assert pulled.stdout.count("\n") == 1 and "->" in pulled.stdout, pulled.stdout
    assert str(isolated_env / "openvino-ir" / "huggingface" / "tiny" / "bert") in pulled.stdout
    assert "GPU is not present" in pulled.stderr  # said plainly, not a silent pass
    shown = run("show", "openvino-ir:huggingface/tiny/bert@int8")
    assert "validated on CPU (GPU not present on this machine): passed" in shown.stdout
    assert "to reference" in shown.stdout and "cosine" in shown.stdout
    source = run("show", "hf:tiny/bert")
    assert "int8-" in source.stdout and "yes" in source.stdout  # its validated conversion


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int8"], "--precision apply to a conversion: add --to openvino"),
        (["--dataset", "coco8"], "--dataset apply to a conversion: add --to openvino"),
        (
            ["--to", "openvino", "--precision", "fp16", "--dataset", "coco8"],
            "calibration data applies to int8 only",
        ),
        (["--to", "openvino", "--precision", "int3"], "unknown precision 'int3'"),
        (["--to", "openvino", "--device", "TPU"], "unknown device 'TPU'"),
        (["--to", "onnx"], "invalid conversion options (to:"),
        (["--to", "openvino", "--shape", "width=3"], "--shape 'width=3'"),
        (
            ["--to", "openvino", "--precision", "int8", "--group-size", "64"],
            "group_size applies to int4 only",
        ),
        # Values that are falsy are still given: refused, never replaced by a default.
        (
            ["--to", "openvino", "--precision", "int4", "--group-size", "0"],
            "group_size must be a positive number, or -1",
        ),
        (["--to", "openvino", "--precision", "int4", "--ratio", "0"], "ratio must be above 0"),
        (["--to", "openvino", "--precision", "fp16", "--asym"], "sym applies to int8 and int4"),
        (["--asym"], "--sym/--asym apply to a conversion: add --to openvino"),
        (["--min-cosine", "0.9"], "--min-cosine apply to a conversion"),
        (["--to", "openvino", "--precision", "int8", "--min-cosine", "1.5"], "min_cosine"),
    ],
)
def test_bad_conversion_options_write_nothing(
    hub: FakeHub, isolated_env: Path, args: list[str], message: str
) -> None:
    result = run("pull", "hf:tiny/bert", *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert not isolated_env.exists() and hub.requests == []


def test_a_too_strict_threshold_fails_and_leaves_nothing(
    hub: FakeHub, tmp_path: Path, isolated_env: Path
) -> None:
    hub.commit("tiny/bert", repo_files(build_tiny_bert(tmp_path / "bert", seed=6)))

    pulled = run(
        "pull", "hf:tiny/bert", "--to", "openvino", "--precision", "int8", "--min-cosine", "1"
    )

    assert pulled.returncode == 1
    assert "below the threshold 1.0 (min_cosine, --min-cosine)" in pulled.stderr
    assert "validated on CPU: failed" in pulled.stderr  # the report is shown before it goes
    # Neither the int8 conversion nor the fp32 base made for it stays behind.
    assert not (isolated_env / "openvino-ir").exists() or not any(
        (isolated_env / "openvino-ir").rglob(".model-download.json")
    )
    assert (isolated_env / "huggingface" / "tiny" / "bert").is_dir()  # the download stays


def test_a_broken_onnx_file_is_an_error_not_a_traceback(
    hub: FakeHub, tmp_path: Path, isolated_env: Path
) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    hub.commit("tiny/broken", {"model.onnx": broken})

    pulled = run("pull", "hf:tiny/broken", "--to", "openvino", "--precision", "fp32", "--quiet")

    assert pulled.returncode == 1
    assert "openvino cannot convert model.onnx of huggingface:tiny/broken" in pulled.stderr
    assert "Traceback" not in pulled.stderr
