"""How each field of a v1 model request reaches the pipeline, hub by hub; none is dropped."""

from __future__ import annotations

import pytest

from api.requests import to_spec
from api.schemas import ModelRequest
from model_download.errors import InvalidReferenceError, UnknownPluginError

HUBS = ["huggingface", "openvino", "ollama", "ultralytics", "geti"]
OPTIMIZED = "66a1f00d0123456789abcdef"


def spec(**request):
    return to_spec(ModelRequest.model_validate(request), HUBS)


def test_quantize_names_the_calibration_dataset_of_an_int8_export() -> None:
    given = spec(
        name="yolov8n", hub="ultralytics", config={"precision": "int8", "quantize": "coco8"}
    )
    assert given.convert.precision == "int8"
    assert given.convert.calibration_data == "coco8"
    # quantize alone asks for the calibrated int8 export
    alone = spec(name="yolov8n", hub="ultralytics", config={"quantize": "coco8"})
    assert (alone.convert.precision, alone.convert.calibration_data) == ("int8", "coco8")
    plain = spec(name="yolov8n", hub="ultralytics", config={"precision": "fp16"})
    assert plain.convert.calibration_data is None


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"name": "yolov8n", "hub": "ultralytics", "config": {"quantize": "../../etc"}},
            "names a dataset of the service's datasets folder",
        ),
        (
            {"name": "yolov8n", "hub": "ultralytics", "config": {"quantize": "/data/coco.yaml"}},
            "not '/data/coco.yaml'",
        ),
        (
            {
                "name": "yolov8n",
                "hub": "ultralytics",
                "config": {"precision": "fp16", "quantize": "c"},
            },
            "calibration data applies to int8 only",
        ),
        (
            {"name": "org/bert", "hub": "huggingface", "config": {"quantize": "coco8"}},
            "config.quantize .* applies to ultralytics models",
        ),
        (
            {"name": "org/bert", "hub": "huggingface", "config": {"geti": {"model_group_id": "g"}}},
            "config.geti applies to hub 'geti'",
        ),
        (
            {
                "name": "org/bert",
                "hub": "openvino",
                "config": {"precision": "int8", "openvino_config": {"group_size": 64}},
            },
            "group_size applies to int4 only",
        ),
        (
            {"name": "llama3", "hub": "ollama", "config": {"precision": "int4"}},
            "config.precision do not apply to ollama model 'llama3'",
        ),
        (
            {"name": "proj", "hub": "geti", "config": {"openvino_config": {"task": "x"}}},
            "config.openvino_config do not apply to geti",
        ),
        (
            {
                "name": "proj",
                "hub": "geti",
                "config": {"precision": "int4", "geti": {"model_group_id": "g"}},
            },
            "Geti optimizes models to fp32, fp16, int8, not int4",
        ),
        (
            {
                "name": "proj",
                "hub": "geti",
                "config": {"device": "CPU", "geti": {"model_group_id": "g", "export_type": "base"}},
            },
            "a base export of 'proj' is the training framework's weights",
        ),
        (
            {
                "name": "proj",
                "hub": "geti",
                "revision": "latest-base",
                "config": {"geti": {"model_group_id": "g"}},
            },
            "either revision or config.geti",
        ),
    ],
)
def test_a_field_that_does_not_apply_is_refused_not_dropped(request_: dict, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message):
        spec(**request_)


def test_an_unknown_hub_names_the_supported_ones() -> None:
    with pytest.raises(UnknownPluginError, match="supports huggingface, openvino, ollama"):
        spec(name="x", hub="hls")


@pytest.mark.parametrize(
    ("geti", "precision", "revision"),
    [
        ({"model_group_id": "ATSS"}, None, "optimized-openvino-fp32"),
        ({"model_group_id": "ATSS"}, "fp16", "optimized-openvino-fp16"),
        ({"model_group_id": "ATSS", "export_type": "base"}, None, "latest-base"),
        ({"model_group_id": "ATSS", "optimized_model_id": OPTIMIZED}, None, f"latest-{OPTIMIZED}"),
        ({"model_group_id": "ATSS", "model_only": False}, "int8", "optimized-openvino-int8-code"),
    ],
)
def test_config_geti_picks_the_export(geti: dict, precision: str | None, revision: str) -> None:
    config = {"geti": geti} | ({"precision": precision} if precision else {})
    given = spec(name="card-detection", hub="geti", config=config)
    assert (given.hub, given.id) == ("geti", "card-detection/ATSS")
    assert given.revision == revision
    assert given.convert is None  # Geti's exports are IR already


def test_geti_precision_without_config_geti_and_device_validation() -> None:
    given = spec(
        name="card-detection/ATSS", hub="geti", config={"precision": "fp16", "device": "CPU"}
    )
    assert given.revision == "optimized-fp16"
    assert given.convert is not None and given.convert.device == "CPU"  # validated there


def test_ollama_name_tag_and_hf_conversion() -> None:
    ollama = spec(name="library/llama3:8b", hub="ollama")
    assert (ollama.id, ollama.revision, ollama.convert) == ("library/llama3", "8b", None)
    hf = spec(name="org/llm", hub="openvino", type="llm", config={"precision": "int4"})
    assert hf.hub == "huggingface" and hf.convert.task == "text-generation-with-past"
    published = spec(name="tiny-ir-ov", hub="openvino")
    assert published.hub == "openvino" and published.convert.precision == "int8"
