"""ONNX files to OpenVINO IR with ``openvino.convert_model``: fp32, or fp16 derived from it.

Repos often ship variants of one model next to it (``model_quantized.onnx``, ``model_fp16.onnx``,
``model_int8.onnx``...). Those are already at another precision, so only the main files are
converted: every ``.onnx`` whose name carries no such suffix (an encoder and a decoder are two
main files). A variant is converted only when no main file was downloaded, that is when the
pull's ``--include`` picked variants alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions
from model_download.errors import ConversionError, InvalidReferenceError
from model_download.store.manifest import Manifest, tool_versions
from plugins.base import ConverterPlugin, require_packages

# The suffixes exporters (optimum, onnxruntime's tools) give precision variants of a model.
_VARIANT = re.compile(
    r"_(quantized|quant|fp16|f16|bf16|int8|uint8|int4|uint4|q4|q4f16|q8|bnb4|o[1-4])$",
    re.IGNORECASE,
)


def onnx_files(manifest: Manifest) -> list[str]:
    """The ``.onnx`` files to convert: the main ones, or the variants if there are no others."""
    found = [f.path for f in manifest.files if f.path.endswith(".onnx")]
    main = [path for path in found if not _VARIANT.search(Path(path).stem)]
    return sorted(main or found)


class OnnxOpenVINOConverter(ConverterPlugin):
    """Models shipped as ONNX (one ``.onnx`` file, or several) to IR."""

    name = "onnx-openvino"
    priority = 50
    description = "ONNX files to OpenVINO IR (openvino.convert_model)"
    precisions = frozenset({"fp32", "fp16"})

    def check(self) -> None:
        require_packages("openvino")

    def tool_versions(self) -> dict[str, str]:
        return tool_versions("openvino")

    def accepts(self, manifest: Manifest) -> bool:
        return any(f.path.endswith(".onnx") for f in manifest.files)

    def check_options(self, manifest: Manifest, options: ConvertOptions) -> None:
        if options.task or options.trust_remote_code:
            raise InvalidReferenceError(
                "task and trust_remote_code apply to transformers models, not to ONNX files: "
                "drop them."
            )
        super().check_options(manifest, options)

    def cache_inputs(self, manifest: Manifest, options: ConvertOptions) -> dict[str, Any]:
        # Which files are converted is part of what the conversion is.
        return {"onnx_files": onnx_files(manifest)}

    def convert(
        self, source: Path, manifest: Manifest, options: ConvertOptions, staging: Path
    ) -> dict[str, Any]:
        import openvino as ov

        converted = []
        for path in onnx_files(manifest):
            try:
                model = ov.convert_model(source / path)
            except Exception as exc:  # ovc raises its own Error, and RuntimeError from the reader
                raise ConversionError(
                    f"openvino cannot convert {path} of {manifest.hub}:{manifest.id} "
                    f"({type(exc).__name__}: {_first_line(exc)}): the file is damaged or not "
                    "ONNX. Pull the model again (model-download rm, then pull), or check it "
                    "loads with onnx.checker."
                ) from exc
            target = staging / Path(path).with_suffix(".xml")
            target.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(model, target, compress_to_fp16=False)
            converted.append(path)
        return {"onnx_files": converted}


def _first_line(exc: BaseException) -> str:
    # ovc's messages run to pages of its own help; the first line says what went wrong.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else "no message"
