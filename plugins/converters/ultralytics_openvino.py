"""Ultralytics YOLO weights to OpenVINO IR with ultralytics' own exporter, at fp32, fp16 or int8.

Unlike the other converters, each precision is exported directly rather than derived from the
fp32 IR: ultralytics writes fp16 by compressing at save time, and its int8 is full post-training
quantization (weights and activations) calibrated on images, which weight compression of an fp32
IR cannot give. Only the precision asked for is exported.

ultralytics is made to stay offline: it is imported with ``YOLO_OFFLINE=1`` and
``YOLO_AUTOINSTALL=0``, it only ever sees local files, a calibration dataset is a local one
given by the user (never ``coco8``, which ultralytics would download), and the font lookup its
dataset check makes (a download when the font is missing) is turned off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions
from model_download.errors import ConversionError, InvalidReferenceError, ModelDownloadError
from model_download.store.manifest import Manifest, tool_versions
from plugins.base import ConverterPlugin, require_packages
from plugins.converters.ultralytics_dataset import safe_dataset_yaml

logger = logging.getLogger(__name__)

#: The hub whose models this converter takes.
SOURCE_HUB = "ultralytics"
#: The image every check runs on; ultralytics ships it inside the package.
CHECK_IMAGE = "bus.jpg"
# Inside staging while exporting, removed before the IR is adopted into the store.
_WORK = ".model-download-ultralytics"
_DATASET_HINT = (
    "name a dataset of the datasets folder (MODEL_DOWNLOAD_DATASETS_DIR: NAME.yaml, or NAME/ "
    "for -cls models) with config.quantize or --dataset, or set MODEL_DOWNLOAD_ULTRALYTICS_DATASET "
    "to a default: a YOLO dataset YAML whose 'val' (or 'train') images are on this machine, or "
    "for -cls models a folder of class folders. Nothing is downloaded: ultralytics' coco8 "
    "default is not used."
)


class UltralyticsOpenVINOConverter(ConverterPlugin):
    """YOLO ``.pt`` weights from the ultralytics hub to IR, via ``YOLO(...).export``."""

    name = "ultralytics-openvino"
    priority = 5
    description = "Ultralytics YOLO weights to OpenVINO IR (ultralytics exporter, nncf for int8)"
    precisions = frozenset({"fp32", "fp16", "int8"})
    #: Each precision comes from the exporter itself, not from compressing the fp32 IR.
    derives_precisions = False
    calibrates = True

    def check(self) -> None:
        require_packages("ultralytics", "openvino", "nncf", "torch", extra="ultralytics")

    def tool_versions(self) -> dict[str, str]:
        return tool_versions("ultralytics", "openvino", "nncf", "torch", "torchvision")

    def accepts(self, manifest: Manifest) -> bool:
        return manifest.hub == SOURCE_HUB and len(_weight_paths(manifest)) == 1

    def check_options(self, manifest: Manifest, options: ConvertOptions) -> None:
        if options.precision == "int4":
            raise InvalidReferenceError(
                f"{manifest.hub}:{manifest.id} converts to fp32, fp16 or int8, not int4: int4 "
                "weight compression is for large transformers; ask for int8 (quantized with "
                "calibration images) or fp16."
            )
        if options.task or options.trust_remote_code or options.sym is not None:
            raise InvalidReferenceError(
                "task, trust_remote_code and sym do not apply to Ultralytics models (the task "
                "is in the weights, and int8 is ultralytics' own quantization): drop them."
            )
        if options.min_cosine is not None:
            raise InvalidReferenceError(
                "min_cosine does not apply to Ultralytics models: their IR is checked against "
                "the PyTorch model's detections on a sample image, not against an fp32 IR."
            )
        super().check_options(manifest, options)
        if options.precision == "int8":
            self._dataset(options, manifest)

    def extra_checks(self, source: Path, converted: Path, record: dict[str, Any]) -> dict | None:
        """The IR against the PyTorch weights on an image the package ships."""
        return check_against_pytorch(source, converted, record["imgsz"])

    def cache_inputs(self, manifest: Manifest, options: ConvertOptions) -> dict[str, Any]:
        """What changes the IR besides the source, the options and the tools (part of the
        conversion key): the image size, and for int8 the calibration data and its hash."""
        inputs: dict[str, Any] = {"imgsz": self._imgsz(options)}
        if options.precision == "int8":
            dataset = self._dataset(options, manifest)
            inputs["calibration_data"] = str(dataset)
            if dataset.is_file():
                inputs["calibration_sha256"] = hashlib.sha256(dataset.read_bytes()).hexdigest()
        return inputs

    def convert(
        self, source: Path, manifest: Manifest, options: ConvertOptions, staging: Path
    ) -> dict[str, Any]:
        """Export ``options.precision`` IR of the model in ``source`` into ``staging``.

        Returns:
            What the manifest records: task, precision, imgsz and the calibration data used.
        """
        self.check_options(manifest, options)
        weights = source / _weight_paths(manifest)[0]
        work = staging / _WORK
        work.mkdir(parents=True)
        try:
            # The exporter writes next to the weights: a copy in staging keeps the store intact.
            local = work / weights.name
            shutil.copyfile(weights, local)
            model = load_yolo(local)
            record: dict[str, Any] = {"task": model.task, "precision": options.precision}
            arguments = _export_arguments(options.precision, self._imgsz(options))
            if options.precision == "int8":
                dataset = self._dataset(options, manifest)
                arguments["data"] = str(_calibration_data(dataset, model.task, work))
                record["calibration_data"] = str(dataset)
            exported = _export(model, arguments, f"{manifest.hub}:{manifest.id}")
            xml = _move_ir(exported, staging)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        record["imgsz"] = _input_size(xml)
        logger.info("exported %s to %s IR at %s", manifest.id, options.precision, record["imgsz"])
        return record

    def _imgsz(self, options: ConvertOptions) -> int | None:
        # None: the exporter's default, the size the weights were trained at.
        return self.settings.ultralytics_imgsz

    def _dataset(self, options: ConvertOptions, manifest: Manifest) -> Path:
        """The calibration dataset asked for, or the configured default; raise if none is."""
        name = f"{manifest.hub}:{manifest.id}"
        given = options.calibration_data or self.settings.ultralytics_dataset
        if not given:
            raise InvalidReferenceError(
                f"int8 export of {name} needs calibration images: {_DATASET_HINT}"
            )
        candidates = _dataset_candidates(str(given), self.settings.datasets)
        for path in candidates:
            if path.exists():
                return path
        looked = " or ".join(str(path) for path in candidates)
        raise InvalidReferenceError(
            f"the calibration dataset {given} for {name} is not there ({looked}): {_DATASET_HINT}"
        )


def _dataset_candidates(given: str, folder: Path) -> list[Path]:
    """Where a dataset may be: a bare name is one of the datasets folder, anything else a path."""
    if "/" in given or "\\" in given or given.startswith((".", "~")):
        return [Path(given).expanduser()]
    return [folder / f"{given}.yaml", folder / f"{given}.yml", folder / given]


def _weight_paths(manifest: Manifest) -> list[str]:
    return [f.path for f in manifest.files if f.path.endswith(".pt") and "/" not in f.path]


def load_yolo(weights: Path) -> Any:
    """``ultralytics.YOLO(weights)``, with ultralytics kept offline."""
    _import_offline()
    from ultralytics import YOLO

    try:
        return YOLO(str(weights))
    except Exception as exc:  # torch's unpickler and ultralytics raise what they meet
        raise ConversionError(
            f"cannot load {weights.name} as an Ultralytics YOLO checkpoint "
            f"({type(exc).__name__}: {exc}): the file is damaged or another kind of model; "
            "pull it again (model-download rm, then pull)."
        ) from exc


def _import_offline() -> None:
    """Import ultralytics so that it can neither download nor install anything."""
    # ultralytics reads both once, at import: offline stops its connectivity probe and its
    # analytics, and without auto-install it never runs pip inside the service.
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    import ultralytics.utils
    from ultralytics.data import utils as data_utils

    if ultralytics.utils.ONLINE:
        logger.warning("ultralytics was imported before YOLO_OFFLINE was set: it may go online")
    # Checking a dataset fetches a font for plots when it is missing; exports draw nothing.
    data_utils.check_font = _no_font


def _no_font(font: str = "") -> None:
    return None


def _export_arguments(precision: str, imgsz: int | None) -> dict[str, Any]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    arguments: dict[str, Any] = {"format": "openvino", "device": "cpu", "verbose": False}
    if imgsz:
        arguments["imgsz"] = imgsz
    # Later 8.4 releases replaced half= and int8= by quantize=; earlier ones know only those.
    if "quantize" in DEFAULT_CFG_DICT:
        arguments["quantize"] = {"fp16": 16, "int8": 8}.get(precision)
    else:
        arguments["half"] = precision == "fp16"
        arguments["int8"] = precision == "int8"
    return arguments


def _export(model: Any, arguments: dict[str, Any], name: str) -> Path:
    try:
        return Path(model.export(**arguments))
    except ModelDownloadError:
        raise
    except Exception as exc:  # ultralytics raises what its backends raise; name the model
        raise ConversionError(
            f"ultralytics could not export {name} to OpenVINO ({type(exc).__name__}: {exc}); "
            "check that the weights are an Ultralytics YOLO checkpoint and the calibration "
            "dataset (int8) is valid."
        ) from exc


def _move_ir(exported: Path, staging: Path) -> Path:
    """Move the exporter's folder's files into ``staging``; return the model's ``.xml``."""
    xmls = sorted(exported.glob("*.xml"))
    if len(xmls) != 1:
        raise ConversionError(f"the exporter wrote {len(xmls)} IR models in {exported}, not one.")
    for path in sorted(p for p in exported.rglob("*") if p.is_file()):
        target = staging / path.relative_to(exported)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
    return staging / xmls[0].name


def _input_size(xml: Path) -> list[int]:
    import openvino as ov

    shape = ov.Core().read_model(xml).inputs[0].get_partial_shape()
    return [dim.get_length() if dim.is_static else -1 for dim in list(shape)[2:]]


def _calibration_data(dataset: Path, task: str, work: Path) -> Path:
    """What to give the exporter as ``data=``: a folder as is, a YAML made safe to read.

    ultralytics downloads a dataset whose images are missing, and runs a YAML's ``download``
    entry as a script; the copy it reads has no such entry, and an absolute root.
    """
    if task == "classify":
        if not dataset.is_dir():
            raise InvalidReferenceError(
                f"-cls models calibrate on a folder of class folders, not {dataset}."
            )
        return dataset
    if dataset.suffix not in (".yaml", ".yml") or not dataset.is_file():
        raise InvalidReferenceError(f"{dataset} is not a dataset YAML: {_DATASET_HINT}")
    return safe_dataset_yaml(dataset, work, _DATASET_HINT)


def check_against_pytorch(
    stored_source_path: Path, ir_folder: Path, imgsz: int | Sequence[int]
) -> dict[str, Any]:
    """Run the PyTorch weights and the IR on the package's ``bus.jpg``; compare their outputs.

    Both get the same letterboxed image at ``imgsz``. The IR passes when it gives as many outputs
    as the PyTorch model, each of the same shape, all finite. The cosine similarity of the first
    output (the detections) is recorded too, for information: int8 IR differ from the weights
    by design.

    Args:
        stored_source_path: The stored model's folder (holding one ``.pt``), or the ``.pt``.
        ir_folder: The folder of the IR.
        imgsz: The size the IR was exported at: one number, or [height, width].

    Returns:
        The report, ready for the manifest: shapes on both sides, ``cosine`` and ``passed``.

    Raises:
        ConversionError: there is not exactly one ``.pt`` or one IR, or the IR does not run.
    """
    import numpy as np

    weights = _find_weights(Path(stored_source_path))
    model = load_yolo(weights)
    image = _check_input(imgsz)
    torch_outputs = _run_pytorch(model, image)
    ir_outputs = _run_ir(Path(ir_folder), image)

    torch_shapes = [list(out.shape) for out in torch_outputs]
    ir_shapes = [list(out.shape) for out in ir_outputs]
    finite = all(bool(np.isfinite(out).all()) for out in ir_outputs)
    report: dict[str, Any] = {
        "image": CHECK_IMAGE,
        "input_shape": list(image.shape),
        "pytorch_shapes": torch_shapes,
        "ir_shapes": ir_shapes,
        "shapes_match": torch_shapes == ir_shapes,
        "finite": finite,
        "cosine": None,
    }
    if report["shapes_match"] and torch_outputs:
        report["cosine"] = _cosine(torch_outputs[0], ir_outputs[0])
    report["passed"] = report["shapes_match"] and finite
    logger.info("checked %s against %s: passed=%s", ir_folder, weights.name, report["passed"])
    return report


def _find_weights(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("*.pt"))
    if len(found) != 1:
        raise ConversionError(f"{path} holds {len(found)} .pt files, not one: which to check?")
    return found[0]


def _check_input(imgsz: int | Sequence[int]) -> Any:
    """``bus.jpg`` letterboxed to ``imgsz``, as a 1x3xHxW float32 array in [0, 1]."""
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ASSETS

    size = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(int(s) for s in imgsz)
    picture = cv2.imread(str(ASSETS / CHECK_IMAGE))
    if picture is None:
        raise ConversionError(f"ultralytics ships no {CHECK_IMAGE} here ({ASSETS}).")
    boxed = LetterBox(size, auto=False)(image=picture)
    rgb = boxed[..., ::-1].transpose(2, 0, 1)  # OpenCV reads BGR; YOLO models take RGB
    return np.ascontiguousarray(rgb[None], dtype=np.float32) / 255.0


def _run_pytorch(model: Any, image: Any) -> list[Any]:
    import torch

    network = model.model.float().eval()
    with torch.no_grad():
        out = network(torch.from_numpy(image))
    # Evaluated, a YOLO network returns (what an export outputs, the raw head outputs);
    # exported, only the first: that is the part to compare.
    if isinstance(out, (list, tuple)):
        out = out[0]
    tensors = list(out) if isinstance(out, (list, tuple)) else [out]
    return [t.detach().numpy() for t in tensors]


def _run_ir(folder: Path, image: Any) -> list[Any]:
    import numpy as np
    import openvino as ov

    from plugins.converters.compress import model_xmls

    xmls = model_xmls(folder)
    if len(xmls) != 1:
        raise ConversionError(f"{folder} holds {len(xmls)} IR models, not one.")
    try:
        compiled = ov.Core().compile_model(xmls[0], "CPU")
        result = compiled(image)
    except RuntimeError as exc:
        raise ConversionError(f"{xmls[0]} does not run on {CHECK_IMAGE}: {exc}") from exc
    return [np.asarray(result[port]) for port in compiled.outputs]


def _cosine(a: Any, b: Any) -> float:
    import numpy as np

    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norms = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(np.dot(x, y) / norms) if norms else float(np.array_equal(x, y))
