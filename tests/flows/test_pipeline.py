"""The pipeline flow (download -> convert -> validate) on a real Prefect test server."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest

from flows.pipeline import PipelineSpec, pipeline
from model_download.conversion import ConvertOptions
from model_download.convert import CONVERTED_HUB
from model_download.runtime import get_store
from tests.flows.test_download_flow import _artifacts, _task_runs
from tests.models.tiny import build_tiny_bert, build_tiny_onnx, repo_files
from tests.servers.hf_hub import FakeHub

pytest.importorskip("optimum.exporters.openvino")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    bert = build_tiny_bert(root / "bert", seed=3)
    remote = root / "remote"
    shutil.copytree(bert, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_x.XModel"}
    (remote / "config.json").write_text(json.dumps(config))
    return {"bert": bert, "onnx": build_tiny_onnx(root / "onnx", seed=3).parent, "remote": remote}


def _spec(model_id: str, **options) -> PipelineSpec:
    return PipelineSpec(id=model_id, convert=ConvertOptions(**options))


def test_a_batch_converts_and_validates_and_failures_stay_alone(
    prefect_server: None, hub: FakeHub, tiny: dict[str, Path]
) -> None:
    for name, folder in tiny.items():
        hub.commit(f"tiny/{name}", repo_files(folder))
    specs = [
        _spec("tiny/bert", precision="int8"),
        _spec("tiny/onnx", precision="fp16"),
        _spec("tiny/remote", precision="fp16"),
        _spec("tiny/absent"),
    ]

    state = pipeline(models=specs, download_concurrency=2, return_state=True)

    assert state.is_failed()
    assert "2 of 4 models failed" in state.message
    assert "tiny/remote at convert" in state.message and "--trust-remote-code" in state.message
    assert "tiny/absent at download" in state.message
    int8 = get_store().find(CONVERTED_HUB, "huggingface/tiny/bert", "int8")[0]
    assert int8.manifest.extra["validation"]["passed"] is True

    artifacts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    tables = [str(a.data) for a in artifacts if a.type == "table"]
    assert any("to reference" in t and "cosine" in t for t in tables)  # a validation report
    summary = next(t for t in tables if "tiny/absent" in t)
    assert '"stage": "download"' in summary and '"stage": "convert"' in summary


def test_a_repeat_is_a_cached_conversion_and_a_new_option_is_not(
    prefect_server: None, hub: FakeHub, tiny: dict[str, Path]
) -> None:
    hub.commit("tiny/bert", repo_files(tiny["bert"]))
    pipeline(models=[_spec("tiny/bert", precision="int8")])

    again = pipeline(models=[_spec("tiny/bert", precision="int8")], return_state=True)
    changed = pipeline(models=[_spec("tiny/bert", precision="int8", sym=True)], return_state=True)

    def convert_states(state) -> list[str]:
        runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
        return [r.state.name for r in runs if r.name.startswith("convert ")]

    assert convert_states(again) == ["Cached"]
    assert convert_states(changed) == ["Completed"]
    assert again.result()[0].validated and changed.result()[0].validated


def test_any_error_is_that_models_failure_and_the_others_complete(
    prefect_server: None,
    hub: FakeHub,
    tiny: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugins.converters.onnx_openvino import OnnxOpenVINOConverter

    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    hub.commit("tiny/bert", repo_files(tiny["bert"]))
    hub.commit("tiny/broken", {"model.onnx": broken})
    hub.commit("tiny/buggy", repo_files(tiny["onnx"]))
    # An error of no known kind (a bug, a library raising what it never said it would) cannot
    # be made to happen on purpose with real files: raise one from the converter of one model.
    real = OnnxOpenVINOConverter.convert

    def convert(self, source, manifest, options, staging):
        if manifest.id == "tiny/buggy":
            raise KeyError("no such layer")
        return real(self, source, manifest, options, staging)

    monkeypatch.setattr(OnnxOpenVINOConverter, "convert", convert)
    ir = _tiny_ir(tmp_path / "ir")
    hub.commit("OpenVINO/tiny-ir-ov", {p.name: p for p in ir})
    specs = [
        _spec("tiny/broken", precision="fp32"),
        _spec("tiny/bert", precision="fp16"),
        _spec("tiny/buggy", precision="fp16"),
        PipelineSpec(hub="openvino", id="tiny-ir-ov", convert=ConvertOptions(precision="int8")),
    ]

    state = pipeline(models=specs, download_concurrency=3, return_state=True)

    assert state.is_failed() and "2 of 4 models failed" in state.message
    assert "tiny/broken at convert: openvino cannot convert model.onnx" in state.message
    assert "tiny/buggy at convert: unexpected KeyError: 'no such layer'" in state.message
    artifacts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    summary = next(a for a in artifacts if a.key == "pipeline")
    rows = {row["model"]: row for row in json.loads(summary.data)}
    done = rows["huggingface:tiny/bert"]
    assert (done["status"], done["precision"], done["validated"]) == ("done", "fp16", True)
    assert done["validation"] == "validated on CPU: passed"
    assert rows["huggingface:tiny/broken"]["stage"] == "convert"
    published = rows["openvino:tiny-ir-ov"]
    assert (published["status"], published["precision"]) == ("done", "fp32")  # not int8
    # Nothing of the failed ones is left in the store.
    assert get_store().find(CONVERTED_HUB, "huggingface/tiny/buggy") == []
    assert get_store().find(CONVERTED_HUB, "huggingface/tiny/broken") == []


def test_conversions_take_turns_while_downloads_go_on(
    prefect_server: None, hub: FakeHub, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.pipeline
    import tasks.convert

    hub.commit("tiny/bert", repo_files(tiny["bert"]))
    hub.commit("tiny/onnx", repo_files(tiny["onnx"]))
    # Spies: the real steps run, and say when.
    downloaded, converting = {}, []
    real_pull, real_convert = flows.pipeline.pull_model, tasks.convert.convert_stored

    def pull(reference):
        stored = real_pull(reference)
        downloaded[reference.id] = time.monotonic()
        return stored

    def convert(source, options, **kwargs):
        start = time.monotonic()
        try:
            return real_convert(source, options, **kwargs)
        finally:
            converting.append((source.manifest.id, start, time.monotonic()))

    monkeypatch.setattr(flows.pipeline, "pull_model", pull)
    monkeypatch.setattr(tasks.convert, "convert_stored", convert)

    outcomes = pipeline(
        models=[_spec("tiny/bert", precision="fp16"), _spec("tiny/onnx", precision="fp16")],
        download_concurrency=1,
        convert_concurrency=1,
    )

    assert [o.status for o in outcomes] == ["done", "done"]
    [(first, _, first_end), (second, second_start, _)] = sorted(converting, key=lambda c: c[1])
    assert (first, second) == ("tiny/bert", "tiny/onnx")
    assert second_start >= first_end  # never two conversions at once
    # With one download slot, the second model was fetched while the first converted.
    assert downloaded["tiny/onnx"] < first_end


def _tiny_ir(folder: Path) -> list[Path]:
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    folder.mkdir(parents=True)
    ov.save_model(ov.Model([ops.relu(x)], [x], "tiny"), folder / "openvino_model.xml")
    return [folder / "openvino_model.xml", folder / "openvino_model.bin"]
