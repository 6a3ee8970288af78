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
            "config.precision does not apply to ollama model 'llama3'",
        ),
        (
            {"name": "proj", "hub": "geti", "config": {"openvino_config": {"task": "x"}}},
            "config.openvino_config.task does not apply to geti",
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
    published = spec(name="tiny-ir-ov", hub="openvino", config={"device": "GPU"})
    assert published.hub == "openvino" and published.convert.device == "GPU"  # validated there


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        # A huggingface model without a precision is downloaded only: conversion options drop.
        (
            {"name": "org/m", "hub": "huggingface", "config": {"device": "GPU"}},
            r"config.device does not apply to huggingface model 'org/m': no config.precision",
        ),
        (
            {"name": "org/m", "hub": "huggingface", "config": {"openvino_config": {"sym": True}}},
            "config.openvino_config.sym does not apply",
        ),
        (
            {"name": "org/m", "hub": "huggingface", "config": {"cache_size": 4}},
            "config.cache_size does not apply",
        ),
        # cache_size shapes the servable: without is_ovms it would be dropped.
        (
            {"name": "org/m", "hub": "openvino", "type": "llm", "config": {"cache_size": 4}},
            "config.cache_size does not apply .* is_ovms: true",
        ),
        (
            {
                "name": "org/m",
                "hub": "openvino",
                "type": "embeddings",
                "is_ovms": True,
                "config": {"cache_size": 4},
            },
            "another kind of servable than a embeddings one",
        ),
        # A model published in IR is not converted: export options would be dropped.
        (
            {"name": "tiny-ir-ov", "hub": "openvino", "config": {"precision": "int4"}},
            "config.precision does not apply to openvino model 'tiny-ir-ov': it is published",
        ),
        (
            {
                "name": "OpenVINO/tiny-ir-ov",
                "hub": "openvino",
                "config": {"openvino_config": {"group_size": 64, "task": "x"}},
            },
            "config.openvino_config.task, config.openvino_config.group_size do not apply",
        ),
        # ultralytics exports fp32/fp16/int8: int4 is refused now, not by a failed run later.
        (
            {"name": "yolov8n", "hub": "ultralytics", "config": {"precision": "int4"}},
            "exports to fp32, fp16, int8, not int4",
        ),
        (
            {
                "name": "yolov8n",
                "hub": "ultralytics",
                "config": {"precision": "fp16", "openvino_config": {"task": "detect"}},
            },
            "config.openvino_config.task does not apply to ultralytics",
        ),
        (
            {"name": "o/m", "hub": "openvino", "config": {"openvino_config": {"pooling": "CLS"}}},
            "config.openvino_config.pooling is not supported by this service",
        ),
        (
            {
                "name": "o/m",
                "hub": "openvino",
                "config": {"openvino_config": {"extra_quantization_params": "--awq"}},
            },
            "'--awq' is not supported",
        ),
        (
            {
                "name": "proj",
                "hub": "geti",
                "config": {"model_group_id": "g", "geti": {"model_group_id": "g"}},
            },
            "not both",
        ),
    ],
)
def test_an_option_that_would_be_dropped_is_refused(request_: dict, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message):
        spec(**request_)


def test_unknown_field_names_are_refused_by_the_schema() -> None:
    from pydantic import ValidationError

    for body in (
        {"name": "a/b", "hub": "huggingface", "config": {"precison": "int8"}},
        {"name": "a/b", "hub": "huggingface", "config": {"openvino_config": {"grup_size": 1}}},
        {"name": "a/b", "hub": "huggingface", "is_ovm": True},
    ):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            ModelRequest.model_validate(body)


def test_the_references_fields_are_honoured_where_they_apply() -> None:
    # openvino_config's precision/device/cache_size override config's, as in the reference.
    llm = spec(
        name="org/llm",
        hub="openvino",
        type="llm",
        is_ovms=True,
        config={
            "precision": "int8",
            "openvino_config": {
                "precision": "int4",
                "device": "gpu",
                "cache_size": 3,
                "extra_quantization_params": "--sym --group-size 64 --ratio 0.8",
                "enable_prefix_caching": True,
                "max_num_seqs": 8,
                "kv_cache_precision": "u8",
            },
        },
    )
    assert (llm.convert.precision, llm.convert.device) == ("int4", "GPU")
    assert (llm.convert.sym, llm.convert.group_size, llm.convert.ratio) == (True, 64, 0.8)
    assert llm.ovms.cache_size == 3 and llm.ovms.enable_prefix_caching is True
    assert (llm.ovms.max_num_seqs, llm.ovms.kv_cache_precision) == (8, "u8")
    embed = spec(
        name="org/e",
        hub="openvino",
        type="embeddings",
        is_ovms=True,
        config={"openvino_config": {"num_streams": 2, "normalize": False}},
    )
    assert (embed.ovms.num_streams, embed.ovms.normalize) == (2, False)
    # The reference's flat Geti fields are config.geti's.
    geti = spec(
        name="card-detection",
        hub="geti",
        config={"model_group_id": "ATSS", "export_type": "base", "model_only": False},
    )
    assert (geti.id, geti.revision) == ("card-detection/ATSS", "latest-base-code")
    assert ModelRequest.model_validate({"name": "x", "hub": "GETI"}).hub == "geti"


def test_is_ovms_on_a_published_ir_model_serves_it_as_published() -> None:
    given = spec(name="tiny-ir-ov", hub="openvino", type="llm", is_ovms=True)
    assert given.hub == "openvino" and given.ovms.task == "text-generation-with-past"
    with pytest.raises(InvalidReferenceError, match="type llm or embeddings"):
        spec(name="tiny-ir-ov", hub="openvino", type="vision", is_ovms=True)


def test_an_unavailable_hub_says_why() -> None:
    from model_download.errors import PluginUnavailableError

    with pytest.raises(PluginUnavailableError, match="'geti' is installed but unavailable here"):
        to_spec(ModelRequest(name="p/g", hub="geti"), ["huggingface"], {"geti": "no GETI_HOST set"})


def test_the_schema_shows_the_hub_enum() -> None:
    schema = ModelRequest.model_json_schema()
    assert "ollama" in schema["properties"]["hub"]["enum"]
    # ... while an unknown one still reaches to_spec, for its 400 naming the supported hubs.
    assert ModelRequest.model_validate({"name": "x", "hub": "nohub"}).hub == "nohub"
