"""A v1 model request, as the reference service words it, turned into a pipeline spec.

The reference's fields mean different things per hub: ``config.precision`` is a conversion for
Hugging Face and Ultralytics models but picks an existing export on Geti; ``hub: openvino`` names
either a model published in IR or a Hugging Face model to convert. This module holds those
readings, and refuses a field that would otherwise be silently ignored (see api.request_options).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from api.request_options import (
    EXPORT_FIELDS,
    TASKS,
    effective,
    export_fields,
    given,
    refuse,
    refuse_unsupported,
    servable,
)
from api.schemas import GetiConfig, ModelConfig, ModelRequest, OpenVINOConfig
from flows.pipeline import PipelineSpec
from model_download.conversion import ConvertOptions
from model_download.errors import InvalidReferenceError, PluginUnavailableError, UnknownPluginError
from model_download.refs import ollama_id
from plugins.hubs.openvino import DEFAULT_ORG as OPENVINO_ORG

#: Geti exports optimized models at these precisions only.
_GETI_PRECISIONS = ("fp32", "fp16", "int8")
#: The ultralytics exporter's precisions.
_ULTRALYTICS_PRECISIONS = ("fp32", "fp16", "int8")
# A dataset of the service's datasets folder: a name, never a path a client could aim anywhere.
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GETI_FLAT = ("model_group_id", "export_type", "optimized_model_id", "model_only")


def to_spec(
    model: ModelRequest, known_hubs: Sequence[str], unavailable: Mapping[str, str] | None = None
) -> PipelineSpec:
    """The pipeline's view of one model of a v1 request.

    Args:
        model: the request's model.
        known_hubs: the hubs that can run here.
        unavailable: hubs installed but unavailable here, with the reason.

    Raises:
        UnknownPluginError: the hub is not one this service runs.
        PluginUnavailableError: the hub is installed but cannot run here, and why.
        InvalidReferenceError: a name, revision or option that is malformed or does not apply.
    """
    if model.hub not in known_hubs:
        if unavailable and model.hub in unavailable:
            raise PluginUnavailableError(
                f"hub {model.hub!r} is installed but unavailable here: {unavailable[model.hub]}"
            )
        raise UnknownPluginError(
            f"unknown hub {model.hub!r}: this service supports {', '.join(known_hubs)}."
        )
    config = model.config or ModelConfig()
    refuse_unsupported(config.openvino_config or OpenVINOConfig(), model)
    geti = _geti_config(config, model)
    if geti is not None and model.hub != "geti":
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
        spec = _geti(model, config, geti)
    elif model.hub == "ollama":
        refuse(
            [*given(config), *(["is_ovms"] if model.is_ovms else [])],
            model,
            "Ollama serves its models as they are published, nothing is converted",
        )
        spec = _ollama(model)
    elif model.hub == "openvino" and _published_in_ir(model.name):
        spec = _published(model, config)
    else:
        spec = _converted(model, config)
    spec.reference()  # raises InvalidReferenceError for a bad name or revision
    return spec


def _converted(model: ModelRequest, config: ModelConfig) -> PipelineSpec:
    """Hugging Face, Ultralytics, or ``openvino`` naming a model to convert."""
    hub = "huggingface" if model.hub == "openvino" else model.hub
    precision = effective(config, "precision")
    if model.hub != "openvino" and precision is None and config.quantize is None:
        # Nothing to convert: every option of a conversion or a servable would be dropped.
        refuse(
            [*given(config), *(["is_ovms"] if model.is_ovms else [])],
            model,
            "no config.precision was given, so nothing is converted (add one to convert)",
        )
        return PipelineSpec(hub=hub, id=model.name, revision=model.revision, convert=None)
    fields = export_fields(config, model)
    if hub == "ultralytics":
        _check_ultralytics(model, precision, fields)
    convert = ConvertOptions.checked(
        # openvino's default, and ultralytics' when config.quantize alone asks for int8.
        precision=precision or "int8",
        device=effective(config, "device") or "CPU",
        task=fields.pop("task") or _task(model),
        calibration_data=_dataset_name(config.quantize, model.name),
        **fields,
    )
    ovms = servable(model, config, convert.task)
    return PipelineSpec(hub=hub, id=model.name, revision=model.revision, convert=convert, ovms=ovms)


def _published(model: ModelRequest, config: ModelConfig) -> PipelineSpec:
    """An OpenVINO-organisation model published in IR: validated as published, maybe served."""
    export = [f"config.{f}" for f in ("precision",) if config.precision is not None]
    ov = config.openvino_config or OpenVINOConfig()
    export += [
        f"config.openvino_config.{f}" for f in EXPORT_FIELDS if getattr(ov, f) not in (None, False)
    ]
    refuse(
        export,
        model,
        "it is published in OpenVINO IR at its own precision and is not converted (name a "
        "Hugging Face model to convert instead)",
    )
    check = ConvertOptions.checked(device=effective(config, "device") or "CPU")
    ovms = servable(model, config, None)
    return PipelineSpec(
        hub="openvino", id=model.name, revision=model.revision, convert=check, ovms=ovms
    )


def _check_ultralytics(model: ModelRequest, precision: str | None, fields: dict) -> None:
    if precision is not None and precision not in _ULTRALYTICS_PRECISIONS:
        raise InvalidReferenceError(
            f"ultralytics model {model.name!r} exports to {', '.join(_ULTRALYTICS_PRECISIONS)}, "
            f"not {precision}: int4 weight compression is for large transformers; ask for int8 "
            "(calibrated with config.quantize) or fp16."
        )
    named = [f"config.openvino_config.{k}" for k, v in fields.items() if v not in (None, False)]
    refuse(
        named,
        model,
        "the task is in the YOLO weights and int8 is ultralytics' own calibrated quantization",
    )
    if model.is_ovms:
        refuse(["is_ovms"], model, "OpenVINO Model Server servables are made for llm/embeddings")


def _task(model: ModelRequest) -> str | None:
    # A transformers export needs the task; a YOLO model's is in its weights (type is then
    # only a description of it).
    return None if model.hub == "ultralytics" else TASKS.get(model.type or "")


def _ollama(model: ModelRequest) -> PipelineSpec:
    name, revision = ollama_id(model.name, model.revision)  # Ollama's own name:tag
    return PipelineSpec(hub="ollama", id=name, revision=revision, convert=None)


def _geti_config(config: ModelConfig, model: ModelRequest) -> GetiConfig | None:
    """``config.geti``, or the reference's same fields flat in ``config``."""
    flat = {f: getattr(config, f) for f in _GETI_FLAT if getattr(config, f) is not None}
    if flat and config.geti is not None:
        raise InvalidReferenceError(
            f"give config.geti or config.{', config.'.join(flat)} for {model.name!r}, not both: "
            "they say the same."
        )
    if not flat:
        return config.geti
    if "model_group_id" not in flat:
        raise InvalidReferenceError(
            f"config.{', config.'.join(flat)} for {model.name!r} need config.model_group_id: "
            "name the Geti model group."
        )
    return GetiConfig(**flat)


def _geti(model: ModelRequest, config: ModelConfig, geti: GetiConfig | None) -> PipelineSpec:
    """``name`` is the project; ``config.geti`` or our own revision syntax picks the export."""
    allowed = {"config.precision", "config.device", "config.geti"}
    allowed.update(f"config.{f}" for f in _GETI_FLAT)
    fields = [f for f in given(config) if f not in allowed]
    refuse(
        [*fields, *(["is_ovms"] if model.is_ovms else [])],
        model,
        "Geti exports its models in OpenVINO IR already, nothing is converted",
    )
    # config.device: the export is validated there (compiled and run), as published.
    check = ConvertOptions.checked(device=config.device) if config.device else None
    if geti is None:
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
        id=f"{model.name}/{geti.model_group_id}",
        revision=_geti_revision(geti, config.precision, config.device, model.name),
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
