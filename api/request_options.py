"""The options of a v1 request: which apply to the model asked, and what each becomes.

A field that does not apply is refused with a sentence naming it and why; none is dropped.
``config.openvino_config`` holds export options (a conversion's) and serving options (the
OpenVINO Model Server graph of ``is_ovms``); its ``precision``, ``device`` and ``cache_size``
override the fields of ``config`` of the same name, as in the reference service.
"""

from __future__ import annotations

import shlex
from typing import Any

from api.schemas import ModelConfig, ModelRequest, OpenVINOConfig
from model_download.errors import InvalidReferenceError
from model_download.ovms import ServableOptions

#: Export options of openvino_config: what changes the converted files.
EXPORT_FIELDS = (
    "precision",
    "task",
    "group_size",
    "ratio",
    "sym",
    "trust_remote_code",
    "extra_quantization_params",
)
#: Serving options of openvino_config, by the kind of servable they shape.
LLM_SERVING = (
    "cache_size",
    "enable_prefix_caching",
    "max_num_seqs",
    "max_num_batched_tokens",
    "dynamic_split_fuse",
    "kv_cache_precision",
)
EMBEDDINGS_SERVING = ("num_streams", "normalize")
#: Options the reference passes to its export script that this service does not implement.
UNSUPPORTED = {
    "ov_cache_dir": "the compile cache is the model server's own setting (its --cache_dir)",
    "pipeline_type": "the servable's pipeline follows from type (llm, embeddings)",
    "draft_source_model": "speculative decoding is not prepared by this service",
    "prompt_lookup_decoding": "speculative decoding is not prepared by this service",
    "max_prompt_len": "NPU text-generation servables are not prepared by this service",
    "pooling": "the embeddings servable uses the model's own pooling",
    "truncate": "the embeddings servable does not truncate prompts",
    "max_doc_length": "rerank servables are not prepared by this service",
}
TASKS = {
    "llm": "text-generation-with-past",
    "vlm": "image-text-to-text",
    "embeddings": "feature-extraction",
    "rerank": "text-classification",
    "vision": "image-classification",
}
_SERVABLE_TYPES = ("llm", "embeddings")


def given(config: ModelConfig) -> dict[str, Any]:
    """The fields a request set, by their dotted names (``config.openvino_config.sym``)."""
    found: dict[str, Any] = {}
    data = config.model_dump(exclude_none=True, exclude_defaults=True)
    for name, value in data.items():
        if isinstance(value, dict) and name == "openvino_config":
            found.update({f"config.openvino_config.{k}": v for k, v in value.items()})
        else:
            found[f"config.{name}"] = value
    return found


def refuse(fields: list[str], model: ModelRequest, why: str) -> None:
    """Raise naming ``fields`` (if any) and ``why`` they do not apply to ``model``."""
    if fields:
        verb, them = ("does", "it") if len(fields) == 1 else ("do", "them")
        raise InvalidReferenceError(
            f"{', '.join(fields)} {verb} not apply to {model.hub} model {model.name!r}: {why}. "
            f"Drop {them}."
        )


def refuse_unsupported(ov: OpenVINOConfig, model: ModelRequest) -> None:
    """Refuse the reference's export-script options that this service has no equivalent of."""
    for name, why in UNSUPPORTED.items():
        if getattr(ov, name) is not None:
            raise InvalidReferenceError(
                f"config.openvino_config.{name} is not supported by this service ({why}): "
                f"drop it for {model.name!r}."
            )
    if ov.overwrite_models is False:
        raise InvalidReferenceError(
            "config.openvino_config.overwrite_models false is not supported: a servable always "
            f"replaces the earlier one of its name. Drop it for {model.name!r}."
        )


def effective(config: ModelConfig, name: str) -> Any:
    """``openvino_config``'s value of ``name`` if set, else ``config``'s."""
    ov = config.openvino_config
    value = getattr(ov, name, None) if ov is not None else None
    return value if value is not None else getattr(config, name, None)


def export_fields(config: ModelConfig, model: ModelRequest) -> dict[str, Any]:
    """The conversion options of ``openvino_config`` (flags of extra_quantization_params too)."""
    ov = config.openvino_config or OpenVINOConfig()
    fields = {
        "task": ov.task,
        "group_size": ov.group_size,
        "ratio": ov.ratio,
        "sym": ov.sym,
        "trust_remote_code": ov.trust_remote_code,
    }
    for key, value in _quantization_flags(ov.extra_quantization_params, model).items():
        if fields[key] is not None and fields[key] != value:
            raise InvalidReferenceError(
                f"config.openvino_config.{key} and extra_quantization_params disagree for "
                f"{model.name!r}: give it once."
            )
        fields[key] = value
    return fields


def _quantization_flags(text: str | None, model: ModelRequest) -> dict[str, Any]:
    # The reference's free-form flags, for the ones this service's compression has.
    found: dict[str, Any] = {}
    words = shlex.split(text or "")
    while words:
        word = words.pop(0)
        flag, _, inline = word.partition("=")
        if flag == "--sym" and not inline:
            found["sym"] = True
            continue
        if flag in ("--group-size", "--ratio") and (inline or words):
            value = inline or words.pop(0)
            try:
                number = int(value) if flag == "--group-size" else float(value)
            except ValueError:
                raise InvalidReferenceError(
                    f"extra_quantization_params for {model.name!r}: {flag} takes a number, "
                    f"not {value!r}."
                ) from None
            found["group_size" if flag == "--group-size" else "ratio"] = number
            continue
        raise InvalidReferenceError(
            f"extra_quantization_params for {model.name!r}: {word!r} is not supported; this "
            "service applies --sym, --group-size N and --ratio R."
        )
    return found


def servable(model: ModelRequest, config: ModelConfig, task: str | None) -> ServableOptions | None:
    """The OpenVINO Model Server options of ``is_ovms``, or a refusal of serving options.

    Raises:
        InvalidReferenceError: a serving option without ``is_ovms``, or one of another kind
            of servable than ``type`` makes.
    """
    ov = config.openvino_config or OpenVINOConfig()
    serving = [f for f in (*LLM_SERVING, *EMBEDDINGS_SERVING) if effective(config, f) is not None]
    if not model.is_ovms:
        named = [_where(config, f) for f in serving]
        refuse(named, model, "they shape the OpenVINO Model Server servable of is_ovms: true")
        return None
    if model.type not in _SERVABLE_TYPES:
        raise InvalidReferenceError(
            f"is_ovms prepares a model of type llm or embeddings for OpenVINO Model Server: "
            f"give one of those types for {model.name!r} (not {model.type!r})."
        )
    other = EMBEDDINGS_SERVING if model.type == "llm" else LLM_SERVING
    refuse(
        [_where(config, f) for f in serving if f in other],
        model,
        f"they shape another kind of servable than a {model.type} one",
    )
    options = {f: getattr(ov, f) for f in (*LLM_SERVING, *EMBEDDINGS_SERVING)}
    options["cache_size"] = effective(config, "cache_size")
    return ServableOptions(
        name=model.name,
        task=task or TASKS[model.type],
        **{k: v for k, v in options.items() if v is not None},
    )


def _where(config: ModelConfig, name: str) -> str:
    ov = config.openvino_config
    inner = ov is not None and getattr(ov, name, None) is not None
    return f"config.openvino_config.{name}" if inner else f"config.{name}"
