"""ONNX files to OpenVINO IR with ``openvino.convert_model``: fp32, or fp16 derived from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions
from model_download.errors import InvalidReferenceError
from model_download.store.manifest import Manifest, tool_versions
from plugins.base import ConverterPlugin, require_packages


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

    def convert(
        self, source: Path, manifest: Manifest, options: ConvertOptions, staging: Path
    ) -> dict[str, Any]:
        import openvino as ov

        converted = []
        for file in manifest.files:
            if not file.path.endswith(".onnx"):
                continue
            model = ov.convert_model(source / file.path)
            target = staging / Path(file.path).with_suffix(".xml")
            target.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(model, target, compress_to_fp16=False)
            converted.append(file.path)
        return {"onnx_files": converted}
