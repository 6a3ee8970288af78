"""Validate a stored OpenVINO IR on its target device, and record the report in its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model_download.conversion import ConvertOptions
from model_download.convert import CONVERTED_HUB, is_ir
from model_download.store.store import ModelStore, StoredModel

logger = logging.getLogger(__name__)


def validate_stored(
    stored: StoredModel, options: ConvertOptions, *, store: ModelStore
) -> tuple[StoredModel, list[Any]]:
    """Validate every IR model in ``stored``; record the reports in its manifest.

    Compressed conversions (fp16, int8, int4) are compared with the fp32 conversion they were
    derived from. Returns the model with its updated manifest, and the reports.
    """
    from plugins.converters.compress import model_xmls
    from plugins.converters.validation import validate_ir

    reference = reference_of(stored, store)
    shapes = options.shapes()
    reports = []
    for xml in model_xmls(stored.path):
        ref_xml = reference.path / xml.relative_to(stored.path) if reference else None
        report = validate_ir(
            xml,
            device=options.device,
            reference_xml=ref_xml if ref_xml and ref_xml.is_file() else None,
            min_cosine=options.threshold,
            static_shapes=static_shapes(xml, shapes) if shapes else None,
        )
        if stored.manifest.hub != CONVERTED_HUB and is_ir(stored.manifest):
            report.warnings.append(
                "the model was published as OpenVINO IR: it was validated as published, "
                "without conversion, at the precision it was published at"
            )
        reports.append(report)
    record = {
        "device": options.device,
        "passed": all(r.passed for r in reports),
        "reports": [r.model_dump(mode="json") for r in reports],
    }
    if extra := _converter_checks(stored):
        record["checks"] = extra
        record["passed"] = record["passed"] and bool(extra.get("passed"))
    return store.annotate(stored, "validation", record), reports


def _converter_checks(stored: StoredModel) -> dict | None:
    # A converter may check its output further (a YOLO model against its PyTorch original).
    conversion = stored.manifest.extra.get("conversion", {})
    source = stored.manifest.extra.get("source", {}).get("path")
    if not conversion.get("converter") or not source:
        return None
    from model_download.runtime import get_registry

    converter = get_registry().converter(conversion["converter"])
    return converter.extra_checks(Path(source), stored.path, conversion)


def reference_of(stored: StoredModel, store: ModelStore) -> StoredModel | None:
    """The fp32 conversion a compressed conversion was derived from, if any."""
    base = stored.manifest.extra.get("conversion", {}).get("base")
    if stored.manifest.hub != CONVERTED_HUB or not base:
        return None
    return store.get(CONVERTED_HUB, stored.manifest.id, base)


def static_shapes(xml: Path, sizes: dict[str, int]) -> dict[str, list[int]]:
    """Per-input static shapes: the first dimension is the batch, other free ones the sequence."""
    import openvino as ov

    shapes = {}
    for port in ov.Core().read_model(xml).inputs:
        dims = []
        for index, dim in enumerate(port.get_partial_shape()):
            if dim.is_static:
                dims.append(dim.get_length())
            else:
                dims.append(sizes.get("batch", 1) if index == 0 else sizes.get("sequence", 128))
        shapes[port.get_any_name()] = dims
    return shapes
