"""A v1 model request, as the reference service words it, turned into a pipeline spec.

The reference's fields mean different things per hub: ``config.precision`` is a conversion for
Hugging Face and Ultralytics models but picks an existing export on Geti; ``hub: openvino`` names
either a model published in IR or a Hugging Face model to convert. This module holds those
readings, and refuses a field that would otherwise be silently ignored.
"""

from __future__ import annotations

import re

from api.schemas import GetiConfig, ModelConfig, ModelRequest
from flows.pipeline import PipelineSpec
from model_download.conversion import ConvertOptions
from model_download.errors import InvalidReferenceError, UnknownPluginError
from model_download.ovms import ServableOptions
from plugins.hubs.openvino import DEFAULT_ORG as OPENVINO_ORG

#: Tasks the exporter knows for each model type of the v1 API.
TASKS = {
    "llm": "text-generation-with-past",
    "vlm": "image-text-to-text",
    "embeddings": "feature-extraction",
    "rerank": "text-classification",
    "vision": "image-classification",
}
#: Geti exports optimized models at these precisions only.
_GETI_PRECISIONS = ("fp32", "fp16", "int8")
# A dataset of the service's datasets folder: a name, never a path a client could aim anywhere.
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def to_spec(model: ModelRequest, known_hubs: list[str]) -> PipelineSpec:
    """The pipeline's view of one model of a v1 request.

    Raises:
        UnknownPluginError: the hub is not one this service runs.
        InvalidReferenceError: a name, revision or option that is malformed or does not apply.
    """
    if model.hub not in known_hubs:
        raise UnknownPluginError(
            f"unknown hub {model.hub!r}: this service supports {', '.join(known_hubs)}."
        )
    config = model.config or ModelConfig()
    if config.geti is not None and model.hub != "geti":
        raise InvalidReferenceError(
            f"config.geti applies to hub 'geti', not {model.hub!r}: drop it for {model.name!r}."
        )
    if config.quantize is not None and model.hub != "ultralytics":
        raise InvalidReferenceError(
            f"config.quantize (int8 calibration data) applies to ultralytics models, whose int8 "
            f"is calibrated; {model.hub} models are compressed without data: drop it for "
            f"{model.name!r}."
        )
    if model.hub == "geti":
        spec = _geti(model, config)
    elif model.hub == "ollama":
        spec = _ollama(model, config)
    else:
        spec = _converted(model, config)
    spec.reference()  # raises InvalidReferenceError for a bad name or revision
    return spec


def _converted(model: ModelRequest, config: ModelConfig) -> PipelineSpec:
    hub = model.hub
    if hub == "openvino" and not _published_in_ir(model.name):
        hub = "huggingface"  # a model to convert, as the reference service does
    convert = None
    if model.hub == "openvino" or config.precision or config.quantize:
        ov = config.openvino_config
        convert = ConvertOptions.checked(
            precision=config.precision or "int8",
            device=config.device or "CPU",
            task=(ov.task if ov else None) or _task(model),
            group_size=ov.group_size if ov else None,
            ratio=ov.ratio if ov else None,
            sym=ov.sym if ov else None,
            trust_remote_code=ov.trust_remote_code if ov else False,
            calibration_data=_dataset_name(config.quantize, model.name),
        )
    ovms = None
    if model.is_ovms:
        if convert is None or model.type not in ("llm", "embeddings"):
            raise InvalidReferenceError(
                f"is_ovms prepares a converted model of type llm or embeddings: use hub "
                f"'openvino' and one of those types for {model.name!r}."
            )
        ovms = ServableOptions(name=model.name, cache_size=config.cache_size or 10)
    return PipelineSpec(hub=hub, id=model.name, revision=model.revision, convert=convert, ovms=ovms)


def _task(model: ModelRequest) -> str | None:
    # A transformers export needs the task; a YOLO model's is in its weights (type is then
    # only a description of it).
    return None if model.hub == "ultralytics" else TASKS.get(model.type or "")


def _ollama(model: ModelRequest, config: ModelConfig) -> PipelineSpec:
    _no_conversion(model, config, "Ollama serves its models as they are published")
    name, revision = model.name, model.revision
    if ":" in name.rsplit("/", 1)[-1] and revision is None:
        name, revision = name.rsplit(":", 1)  # Ollama's own name:tag
    return PipelineSpec(hub="ollama", id=name, revision=revision, convert=None)


def _geti(model: ModelRequest, config: ModelConfig) -> PipelineSpec:
    """``name`` is the project; ``config.geti`` or our own revision syntax picks the export."""
    _no_conversion(
        model,
        config,
        "Geti exports its models in OpenVINO IR already",
        allowed=("config.precision", "config.device"),
    )
    # config.device: the export is validated there (compiled and run), as published.
    check = ConvertOptions.checked(device=config.device) if config.device else None
    if config.geti is None:
        revision = model.revision
        if revision is None and config.precision:
            revision = f"optimized-{_geti_precision(config.precision, model.name)}"
        return PipelineSpec(hub="geti", id=model.name, revision=revision, convert=check)
    if model.revision is not None:
        raise InvalidReferenceError(
            f"give either revision or config.geti for {model.name!r}, not both: config.geti "
            "already says which export."
        )
    return PipelineSpec(
        hub="geti",
        id=f"{model.name}/{config.geti.model_group_id}",
        revision=_geti_revision(config.geti, config.precision, config.device, model.name),
        convert=check,
    )


def _geti_revision(geti: GetiConfig, precision: str | None, device: str | None, name: str) -> str:
    # In the revision syntax of plugins.hubs.geti_select.
    if geti.export_type == "base":
        if geti.optimized_model_id or precision or device:
            raise InvalidReferenceError(
                f"a base export of {name!r} is the training framework's weights, with no "
                "precision, optimized model or device to run on: drop those, or ask for "
                "export_type 'optimized'."
            )
        tokens = ["latest", "base"]
    elif geti.optimized_model_id:
        tokens = ["latest", geti.optimized_model_id]
    else:
        tokens = ["optimized", "openvino", _geti_precision(precision or "fp32", name)]
    return "-".join(tokens + ([] if geti.model_only else ["code"]))


def _geti_precision(precision: str, name: str) -> str:
    if precision not in _GETI_PRECISIONS:
        raise InvalidReferenceError(
            f"Geti optimizes models to {', '.join(_GETI_PRECISIONS)}, not {precision}: pick "
            f"one of those for {name!r}."
        )
    return precision


def _no_conversion(
    model: ModelRequest, config: ModelConfig, why: str, *, allowed: tuple[str, ...] = ()
) -> None:
    # ``allowed``: fields that mean something else on this hub (Geti: which export, and where
    # to validate it).
    given = {
        "config.precision": config.precision is not None,
        "config.device": config.device is not None,
        "config.openvino_config": config.openvino_config is not None,
        "config.cache_size": config.cache_size is not None,
        "is_ovms": model.is_ovms,
    }
    fields = [name for name, present in given.items() if present and name not in allowed]
    if fields:
        raise InvalidReferenceError(
            f"{', '.join(fields)} do not apply to {model.hub} model {model.name!r}: {why}, "
            "nothing is converted. Drop them."
        )


def _dataset_name(quantize: str | None, name: str) -> str | None:
    if quantize is not None and (not _DATASET_NAME.match(quantize) or ".." in quantize):
        raise InvalidReferenceError(
            f"config.quantize for {name!r} names a dataset of the service's datasets folder "
            f"(letters, digits, '.', '_' and '-'), not {quantize!r}: put the dataset there and "
            "give its name."
        )
    return quantize


def _published_in_ir(name: str) -> bool:
    # A bare name, or one of the OpenVINO organisation, names a model already in IR.
    return "/" not in name or name.split("/")[0] == OPENVINO_ORG
