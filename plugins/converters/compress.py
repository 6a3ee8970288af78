"""fp16, int8 and int4 IR derived from an fp32 IR: the same for every converter.

Weight compression is data-free (nncf's ``compress_weights``), so it runs offline and needs no
calibration set. Deriving from the stored fp32 IR rather than exporting again means a new
precision of a model costs seconds, and the fp32 IR is there as validation's reference.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions
from model_download.errors import ConversionError, PluginUnavailableError

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


def compress_ir(
    fp32: Path, options: ConvertOptions, staging: Path, *, model_id: str | None = None
) -> dict[str, Any]:
    """Write ``fp32``'s files into ``staging`` with every model's weights at the precision asked.

    Files other than the models (tokenizer IR, configs) are linked, not copied. int8 and int4
    are compressed with the parameters ``optimum-cli export openvino --weight-format`` uses, and
    leave the same rt_info and ``openvino_config.json``, so the folder loads in OpenVINO GenAI
    and Model Server as the CLI's does.

    Args:
        fp32: The fp32 IR folder.
        options: The precision and its compression options.
        staging: Where to write the result.
        model_id: The source model's id, recorded as optimum-cli records the ``--model`` given.

    Returns:
        What the manifest should record: the compression mode and its parameters.

    Raises:
        ConversionError: an IR cannot be read, compressed or written; the message says which.
    """
    models = model_xmls(fp32)
    if not models:
        raise ConversionError(f"{fp32} holds no IR model (an .xml with its .bin) to compress.")
    skip = {p for xml in models for p in (xml, xml.with_suffix(".bin"))}
    _link_tree(fp32, staging, skip)

    config = None
    if options.precision in ("int8", "int4"):
        has_tokenizer = (fp32 / "openvino_tokenizer.xml").is_file()
        config = weight_config(options, tokenizer=model_id if has_tokenizer else None)
    record: dict[str, Any] = {"precision": options.precision}
    for xml in models:
        target = staging / xml.relative_to(fp32)
        record.update(_compress_one(xml, target, options, config))
    if config is not None and (fp32 / "config.json").is_file():
        _write_openvino_config(staging, config)
    return record


def weight_config(options: ConvertOptions, tokenizer: str | None = None) -> Any:
    """optimum-intel's weight compression config for int8 or int4, as its CLI builds it."""
    try:
        from optimum.intel import OVWeightQuantizationConfig
    except ImportError as exc:
        raise PluginUnavailableError(
            f"int8 and int4 weight compression needs optimum-intel ({exc}): install the "
            "project's 'openvino' extra (pip install 'model-download[openvino]')."
        ) from exc

    int8 = options.precision == "int8"
    return OVWeightQuantizationConfig(
        bits=8 if int8 else 4,
        sym=bool(options.sym),
        group_size=-1 if int8 else (options.group_size or DEFAULT_GROUP_SIZE),
        ratio=1.0 if int8 or options.ratio is None else options.ratio,
        dtype=options.precision,
        quant_method="default",
        tokenizer=tokenizer,
    )


def _write_openvino_config(staging: Path, config: Any) -> None:
    # optimum-intel writes this beside weight-compressed models and reads it back to know how the
    # weights were compressed. Its exporter wraps the weight config in a pipeline config (one
    # default for every submodel) before saving; doing the same with its own classes gives the
    # CLI's file, key for key.
    from optimum.intel import OVConfig, OVPipelineQuantizationConfig

    pipeline = OVPipelineQuantizationConfig({}, default_config=config)
    OVConfig(quantization_config=pipeline).save_pretrained(str(staging))


def _compress_one(
    xml: Path, target: Path, options: ConvertOptions, config: Any | None
) -> dict[str, Any]:
    import openvino as ov

    try:
        model = ov.Core().read_model(xml)
    except RuntimeError as exc:
        raise ConversionError(
            f"cannot read the fp32 IR {xml} to derive {options.precision} from it ({exc}); "
            "remove that conversion (model-download rm) and convert again."
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    if options.precision == "fp16":
        _save(ov, model, target, compress_to_fp16=True)
        return {"mode": "fp16"}

    import nncf

    params = config.to_nncf_dict()
    params.pop("weight_only", None)
    try:
        compressed = nncf.compress_weights(model, dataset=None, **params)
    except Exception as exc:  # nncf raises plain errors; name the model and the options
        raise ConversionError(
            f"{options.precision} weight compression of {xml.name} failed ({exc}); for small "
            "models try --group-size -1 or a group size that divides the hidden size."
        ) from exc
    _as_optimum_leaves_it(compressed, nncf.__version__)
    _save(ov, compressed, target, compress_to_fp16=False)
    record: dict[str, Any] = {"mode": str(params["mode"])}
    if options.precision == "int4":
        record.update(group_size=params["group_size"], ratio=params["ratio"])
    return record


def _as_optimum_leaves_it(model: Any, nncf_version: str) -> None:
    # optimum-intel edits the rt_info after compressing (in private helpers of its quantization
    # module, so they are repeated here rather than imported): exporting marks fp32/fp16 models
    # with an f16 KV cache, which it drops once the weights are compressed, so that GenAI and
    # Model Server pick their default (compressed) KV cache; and it records the nncf version.
    if model.has_rt_info(["runtime_options", "KV_CACHE_PRECISION"]):
        runtime = model.get_rt_info("runtime_options").value
        if runtime["KV_CACHE_PRECISION"] == "f16":
            runtime.pop("KV_CACHE_PRECISION")
            model.set_rt_info(runtime, "runtime_options")
    model.set_rt_info(nncf_version, ["optimum", "nncf_version"])


def _save(ov: Any, model: Any, target: Path, *, compress_to_fp16: bool) -> None:
    try:
        ov.save_model(model, target, compress_to_fp16=compress_to_fp16)
    except (RuntimeError, OSError) as exc:
        raise ConversionError(f"cannot write {target.name} ({exc}): is the disk full?") from exc


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
