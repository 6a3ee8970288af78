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
        "pull", "hf:tiny/bert", "--to", "openvino", "--precision", "int8", "--device", "GPU"
    )

    assert pulled.returncode == 0, pulled.stderr
    assert str(isolated_env / "openvino-ir" / "huggingface" / "tiny" / "bert") in pulled.stdout
    assert "GPU is not present" in pulled.stderr  # said plainly, not a silent pass
    shown = run("show", "openvino-ir:huggingface/tiny/bert@int8")
    assert "validation on GPU: passed" in shown.stdout
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
    ],
)
def test_bad_conversion_options_write_nothing(
    hub: FakeHub, isolated_env: Path, args: list[str], message: str
) -> None:
    result = run("pull", "hf:tiny/bert", *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert not isolated_env.exists() and hub.requests == []
