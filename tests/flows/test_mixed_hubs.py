"""One pipeline run that mixes every hub, each served on loopback, completes."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.pipeline import PipelineSpec, pipeline
from model_download import runtime
from model_download.conversion import ConvertOptions
from tests.models.tiny import build_tiny_bert, repo_files
from tests.plugins.test_geti import GROUP, geti, ir  # noqa: F401  (fixtures)
from tests.plugins.test_ollama import proxy, push, registry  # noqa: F401  (fixtures)
from tests.plugins.test_ultralytics import assets, base_url, dataset, weights  # noqa: F401
from tests.servers.hf_hub import FakeHub

pytest.importorskip("optimum.exporters.openvino")
pytest.importorskip("ultralytics")


def test_one_batch_of_every_hub(
    prefect_server: None,
    hub: FakeHub,
    geti,  # noqa: F811
    registry,  # noqa: F811
    proxy,  # noqa: F811
    base_url: str,  # noqa: F811
    dataset: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub.commit("tiny/bert", repo_files(build_tiny_bert(tmp_path / "bert", seed=11)))
    hub.commit("OpenVINO/tiny-ir-ov", _tiny_ir(tmp_path))
    push(registry)
    monkeypatch.setenv("MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL", base_url)
    monkeypatch.setenv("MODEL_DOWNLOAD_ULTRALYTICS_DATASET", str(dataset))
    monkeypatch.setenv("MODEL_DOWNLOAD_ULTRALYTICS_IMGSZ", "64")
    runtime.reset()

    specs = [
        PipelineSpec(hub="huggingface", id="tiny/bert", convert=ConvertOptions(precision="int8")),
        PipelineSpec(hub="openvino", id="tiny-ir-ov", convert=ConvertOptions(precision="fp16")),
        PipelineSpec(hub="ollama", id="tiny", convert=None),
        PipelineSpec(hub="ultralytics", id="yolov8n", convert=ConvertOptions(precision="fp16")),
        PipelineSpec(hub="geti", id=GROUP, revision="optimized-FP16", convert=None),
    ]
    outcomes = pipeline(models=specs, download_concurrency=5)

    assert [o.status for o in outcomes] == ["done"] * 5, outcomes
    assert [o.validated for o in outcomes] == [True, True, None, True, None]
    assert all(Path(o.stored).is_dir() for o in outcomes)


def _tiny_ir(folder: Path) -> dict[str, Path]:
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    ov.save_model(ov.Model([ops.relu(x)], [x], "tiny"), folder / "openvino_model.xml")
    return {name: folder / name for name in ("openvino_model.xml", "openvino_model.bin")}
