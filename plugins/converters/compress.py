"""fp16, int8 and int4 IR derived from an fp32 IR: the same for every converter.

Weight compression is data-free (nncf's ``compress_weights``), so it runs offline and needs no
calibration set. Deriving from the stored fp32 IR rather than exporting again means a new
precision of a model costs seconds, and the fp32 IR is there as validation's reference.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions
from model_download.errors import ConversionError

logger = logging.getLogger(__name__)

#: int4 weights per quantization scale when the request gives none (as optimum-cli).
DEFAULT_GROUP_SIZE = 128


def model_xmls(folder: Path) -> list[Path]:
    """The IR models in ``folder``: every ``.xml`` with its ``.bin``, tokenizers left out."""
    found = []
    for xml in sorted(folder.rglob("*.xml")):
        if "tokenizer" in xml.name or not xml.with_suffix(".bin").is_file():
            continue
        found.append(xml)
    return found


def compress_ir(fp32: Path, options: ConvertOptions, staging: Path) -> dict[str, Any]:
    """Write ``fp32``'s files into ``staging`` with every model's weights at the precision asked.

    Files other than the models (tokenizer IR, configs) are linked, not copied.

    Returns:
        What the manifest should record: the compression mode and its parameters.
    """
    models = model_xmls(fp32)
    if not models:
        raise ConversionError(f"{fp32} holds no IR model (an .xml with its .bin) to compress.")
    skip = {p for xml in models for p in (xml, xml.with_suffix(".bin"))}
    _link_tree(fp32, staging, skip)

    record: dict[str, Any] = {"precision": options.precision}
    for xml in models:
        target = staging / xml.relative_to(fp32)
        record.update(_compress_one(xml, target, options))
    if options.precision in ("int8", "int4") and (fp32 / "config.json").is_file():
        _write_openvino_config(staging, options)
    return record


def _write_openvino_config(staging: Path, options: ConvertOptions) -> None:
    # optimum-cli leaves this beside weight-compressed models, and optimum-intel reads it back
    # to know how the weights were compressed; keep the folder the same as the CLI's.
    params = _nncf_params(options)
    config = {
        "dtype": options.precision,
        "quantization_config": {
            "bits": 8 if options.precision == "int8" else 4,
            "sym": bool(options.sym),
            "group_size": params.get("group_size", -1),
            "ratio": params.get("ratio", 1.0),
        },
    }
    (staging / "openvino_config.json").write_text(json.dumps(config, indent=2))


def _compress_one(xml: Path, target: Path, options: ConvertOptions) -> dict[str, Any]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(xml)
    target.parent.mkdir(parents=True, exist_ok=True)
    if options.precision == "fp16":
        ov.save_model(model, target, compress_to_fp16=True)
        return {"mode": "fp16"}

    import nncf

    params = _nncf_params(options)
    try:
        compressed = nncf.compress_weights(model, **params)
    except Exception as exc:  # nncf raises plain errors; name the model and the options
        raise ConversionError(
            f"{options.precision} weight compression of {xml.name} failed ({exc}); for small "
            "models try --group-size -1 or a group size that divides the hidden size."
        ) from exc
    ov.save_model(compressed, target, compress_to_fp16=False)
    return {key: str(value) if key == "mode" else value for key, value in params.items()}


def _nncf_params(options: ConvertOptions) -> dict[str, Any]:
    from nncf import CompressWeightsMode

    if options.precision == "int8":
        mode = CompressWeightsMode.INT8_SYM if options.sym else CompressWeightsMode.INT8_ASYM
        return {"mode": mode}
    mode = CompressWeightsMode.INT4_SYM if options.sym else CompressWeightsMode.INT4_ASYM
    return {
        "mode": mode,
        "group_size": options.group_size or DEFAULT_GROUP_SIZE,
        "ratio": options.ratio if options.ratio is not None else 1.0,
    }


def _link_tree(source: Path, dest: Path, skip: set[Path]) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_dir() or path in skip or path.name.startswith(".model-download"):
            continue
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
