"""Hugging Face transformers models to OpenVINO IR, with optimum-intel's exporter.

The output folder is what ``optimum-cli export openvino`` writes (model IR, configs, tokenizer
and detokenizer IR), so it loads in OpenVINO GenAI and OpenVINO Model Server the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions
from model_download.errors import (
    ConversionError,
    ModelDownloadError,
    RemoteCodeRefusedError,
    UnsupportedModelError,
)
from model_download.store.manifest import Manifest, tool_versions
from plugins.base import ConverterPlugin, require_packages

logger = logging.getLogger(__name__)

# transformers' own tables say which head a class is; each maps to the exporter's task name.
_TASK_TABLES = [
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "text-generation-with-past"),
    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "text2text-generation-with-past"),
    ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "text-classification"),
    ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token-classification"),
    ("MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES", "question-answering"),
    ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "fill-mask"),
    ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "image-classification"),
    ("MODEL_MAPPING_NAMES", "feature-extraction"),
]
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")


class OptimumOpenVINOConverter(ConverterPlugin):
    """transformers models (a config.json with weights) to IR via optimum-intel."""

    name = "optimum-openvino"
    priority = 10
    description = "transformers models to OpenVINO IR (optimum-intel, nncf)"

    def check(self) -> None:
        require_packages("nncf", "openvino", "openvino_tokenizers", "optimum.intel", "torch")

    def tool_versions(self) -> dict[str, str]:
        return tool_versions(
            "optimum-intel",
            "optimum",
            "transformers",
            "openvino",
            "nncf",
            "openvino-tokenizers",
            "torch",
        )

    def accepts(self, manifest: Manifest) -> bool:
        paths = {f.path for f in manifest.files}
        has_weights = any(p.endswith(_WEIGHTS) and "/" not in p for p in paths)
        return "config.json" in paths and has_weights

    def convert(
        self, source: Path, manifest: Manifest, options: ConvertOptions, staging: Path
    ) -> dict[str, Any]:
        name = f"{manifest.hub}:{manifest.id}"
        try:
            config = json.loads((source / "config.json").read_text())
        except ValueError as exc:
            raise UnsupportedModelError(
                f"the config.json of {name} is not valid JSON ({exc}): the repo is broken, or "
                "the download was cut; pull it again."
            ) from exc
        if config.get("auto_map") and not options.trust_remote_code:
            raise RemoteCodeRefusedError(
                f"{name} ships its own Python code (auto_map in config.json), which converting "
                "would run: allow it only if you trust the repo (--trust-remote-code)."
            )
        task = options.task or infer_task(config)
        if task is None:
            raise UnsupportedModelError(
                f"cannot tell the task of {name} from its config (architectures: "
                f"{config.get('architectures')}): give it with --task, e.g. feature-extraction "
                "or text-generation-with-past."
            )
        _export(source, staging, task, options.trust_remote_code, name)
        return {"task": task}


def infer_task(config: dict[str, Any]) -> str | None:
    """The exporter task for a model, from the architecture its config names."""
    from transformers.models.auto import modeling_auto

    architectures = config.get("architectures") or []
    for table_name, task in _TASK_TABLES:
        classes = set(getattr(modeling_auto, table_name, {}).values())
        if any(arch in classes for arch in architectures):
            return task
    return None


def _export(source: Path, staging: Path, task: str, trust_remote_code: bool, name: str) -> None:
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    try:
        main_export(
            model_name_or_path=str(source),
            output=str(staging),
            task=task,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
            convert_tokenizer=True,
            # fp32 on purpose: lower precisions derive from it, and it is validation's reference.
            ov_config=OVConfig(dtype="fp32"),
        )
    except (KeyError, ValueError, NotImplementedError) as exc:
        # What optimum and transformers raise for architectures or tasks they cannot export.
        raise UnsupportedModelError(
            f"optimum-intel cannot export {name} for task {task!r}: {exc}. Check the task "
            "(--task), or that this architecture is supported by optimum-intel."
        ) from exc
    except ModelDownloadError:
        raise
    except Exception as exc:  # torch, the tracer, OpenVINO: whatever the export runs raises
        raise ConversionError(
            f"optimum-intel failed to export {name} for task {task!r} "
            f"({type(exc).__name__}: {exc}). Check that its weights load with transformers "
            "and that the task is right (--task); if the model is large, free some memory."
        ) from exc
