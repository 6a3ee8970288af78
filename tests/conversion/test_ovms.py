"""OpenVINO Model Server servables laid out from converted models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_download.errors import InvalidReferenceError
from model_download.ovms import ServableOptions, graph, write_servable
from tests.conversion.conftest import Service

pytest.importorskip("optimum.exporters.openvino")


def test_graphs_for_text_generation_and_embeddings() -> None:
    llm = graph("text-generation-with-past", "GPU", 4)
    assert "HttpLLMCalculator" in llm and "cache_size: 4" in llm and 'device: "GPU"' in llm
    embeddings = graph("feature-extraction", "CPU", 10)
    assert "EmbeddingsCalculatorOV" in embeddings and 'target_device: "CPU"' in embeddings
    with pytest.raises(InvalidReferenceError, match="not for task 'image-classification'"):
        graph("image-classification", "CPU", 10)


def test_a_repository_of_two_servables(service: Service) -> None:
    llm = service.convert(service.pull("hf:tiny/gpt2"), precision="int8")
    encoder = service.convert(service.pull("hf:tiny/bert"), precision="fp16")
    root = service.store.root

    first = write_servable(llm, ServableOptions(name="tiny/chat", cache_size=2), "CPU", root)
    second = write_servable(encoder, ServableOptions(name="tiny/embed"), "CPU", root)
    again = write_servable(llm, ServableOptions(name="tiny/chat", cache_size=3), "CPU", root)

    assert again == first and "cache_size: 3" in (first / "graph.pbtxt").read_text()
    assert "EmbeddingsCalculatorOV" in (second / "graph.pbtxt").read_text()
    for folder, model in ((first, llm), (second, encoder)):
        for file in model.manifest.files:
            assert (folder / file.path).stat().st_ino == (model.path / file.path).stat().st_ino
    config = json.loads((root / "ovms" / "config.json").read_text())
    assert config["mediapipe_config_list"] == [
        {"name": "tiny/chat", "base_path": "tiny/chat"},
        {"name": "tiny/embed", "base_path": "tiny/embed"},
    ]
    assert not list((root / "ovms" / ".staging").glob("*"))


def test_a_servable_name_may_not_escape(service: Service) -> None:
    llm = service.convert(service.pull("hf:tiny/gpt2"), precision="int8")
    with pytest.raises(InvalidReferenceError, match="'..'"):
        write_servable(llm, ServableOptions(name="../evil"), "CPU", service.store.root)
    assert not Path(service.store.root.parent / "evil").exists()
