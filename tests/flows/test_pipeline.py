"""The pipeline flow (download -> convert -> validate) on a real Prefect test server."""

from __future__ import annotations

import asyncio
import json
import shutil
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
