"""Validate a stored OpenVINO IR on its target device, and record the report in its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from model_download.conversion import ConvertOptions
from model_download.convert import CONVERTED_HUB, is_ir
from model_download.errors import ValidationFailed
from model_download.store.store import ModelStore, StoredModel

logger = logging.getLogger(__name__)


def validate_stored(
    stored: StoredModel, options: ConvertOptions, *, store: ModelStore
) -> tuple[StoredModel, list[Any]]:
    """Validate every IR model in ``stored``; record the reports in its manifest if it passed.

    Compressed conversions (fp16, int8, int4) are compared with the fp32 conversion they were
    derived from. A conversion that passes becomes its precision's ``@<precision>`` in the
    store. A failure leaves the store as it was. Returns the model with the validation record
    in its manifest (on disk only if it passed), and the reports.

    Raises:
        ValidationFailed: ``stored`` holds no IR, or an IR cannot be read, compiled or run.
    """
    from plugins.converters.compress import model_xmls
    from plugins.converters.validation import validate_ir

    xmls = model_xmls(stored.path)
    if not xmls:
        raise ValidationFailed(
            f"no OpenVINO IR found in {stored.name} ({stored.path}): there is no .xml with its "
            ".bin to validate. Pull the model with its IR files (check --include/--exclude), "
            "or convert it with --to openvino."
        )
    reference = reference_of(stored, store)
    shapes = options.shapes()
    reports = []
    for xml in xmls:
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
    record = _record(stored, options, reports, xmls)
    man = stored.manifest
    if not record["passed"]:
        # A failure changes nothing stored (a report that passed before stays); the caller
        # gets the record to show, and removes what it converted for this request.
        failed = man.model_copy(update={"extra": {**man.extra, "validation": record}})
        return stored.model_copy(update={"manifest": failed}), reports
    validated = store.annotate(stored, "validation", record)
    if man.hub == CONVERTED_HUB:
        # Only now does @<precision> move: it never names a conversion that failed.
        store.set_ref(CONVERTED_HUB, man.id, record["precision"], man.revision)
    return validated, reports


def _record(
    stored: StoredModel, options: ConvertOptions, reports: list[Any], xmls: list[Path]
) -> dict[str, Any]:
    used = sorted({r.device_used for r in reports})
    record = {
        "device": options.device,
        "device_used": ",".join(used),
        "device_present": all(r.device_present for r in reports),
        "precision": precision_of(stored, xmls),
        "passed": all(r.passed for r in reports),
        "reports": [r.model_dump(mode="json") for r in reports],
    }
    if extra := _converter_checks(stored):
        record["checks"] = extra
        record["passed"] = record["passed"] and bool(extra.get("passed"))
    return record


def headline(record: dict[str, Any]) -> str:
    """One line for a validation record: where it ran (and what was asked), and the verdict."""
    asked = record["device"]
    used = record.get("device_used") or asked
    if record.get("device_present") is False:
        where = f"validated on {used} ({asked} not present on this machine)"
    elif used != asked:
        where = f"validated on {used} ({asked} chose it)"
    else:
        where = f"validated on {used}"
    return f"{where}: {'passed' if record['passed'] else 'failed'}"


def failure_reasons(record: dict[str, Any]) -> str:
    """Why a validation record did not pass, one clause per failed check."""
    from plugins.converters.validation import ValidationReport

    reasons = []
    for data in record["reports"]:
        report = ValidationReport.model_validate(data)
        if report.passed:
            continue
        sim = report.similarity
        if not all(o.finite for o in report.outputs):
            reasons.append(f"{report.model} gives non-finite outputs")
        elif sim is not None and not sim.passed:
            reasons.append(
                f"{report.model} agrees with fp32 at cosine {sim.cosine:.6f}, below the "
                f"threshold {sim.threshold} (min_cosine, --min-cosine)"
            )
        else:
            reasons.append(f"{report.model} did not pass")
    checks = record.get("checks")
    if checks is not None and not checks.get("passed"):
        reasons.append("the check against the original model failed")
    return "; ".join(reasons) or "it did not pass"


#: IR element types of weights, narrowest first, and the precision each means.
_WEIGHT_TYPES = [
    ({"u4", "i4", "nf4", "f4e2m1"}, "int4"),
    ({"u8", "i8"}, "int8"),
    ({"f16", "bf16"}, "fp16"),
]


def precision_of(stored: StoredModel, xmls: list[Path]) -> str:
    """The precision of a stored IR: the one it was converted at, or, for IR published as it
    is, the narrowest weight type its constants hold."""
    asked = stored.manifest.extra.get("conversion", {}).get("options", {}).get("precision")
    if asked:
        return asked
    found: set[str] = set()
    for xml in xmls:
        for layer in ElementTree.parse(xml).getroot().iter("layer"):
            data = layer.find("data")
            if layer.get("type") == "Const" and data is not None:
                found.add(data.get("element_type", ""))
    for types, precision in _WEIGHT_TYPES:
        if found & types:
            return precision
    return "fp32"


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
