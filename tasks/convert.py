"""Prefect tasks that convert a stored model to OpenVINO IR and validate the result."""

from __future__ import annotations

import hashlib
import json

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from model_download.conversion import ConvertOptions, conversion_key, source_digest
from model_download.convert import choose_converter, convert_stored, is_ir
from model_download.errors import ModelDownloadError, ValidationFailed
from model_download.runtime import get_registry, get_settings, get_store
from model_download.store.manifest import MANIFEST_NAME
from model_download.store.store import StoredModel
from model_download.validate import failure_reasons, headline, validate_stored


def _convert_key(context, parameters) -> str | None:
    # Source content, converter, options and tool versions, and the store: the same inputs
    # give the same IR. The device and validation options are not part of it.
    source: StoredModel = parameters["source"]
    options: ConvertOptions = parameters["options"]
    where = hashlib.sha256(str(get_store().root).encode()).hexdigest()[:16]
    if is_ir(source.manifest):
        # The options are part of it too: one that cannot apply to published IR must reach
        # convert_stored, which refuses it, rather than meet an earlier run's result.
        asked = json.dumps(options.conversion_fields(), sort_keys=True)
        digest = hashlib.sha256(f"{source_digest(source.manifest)}{asked}".encode()).hexdigest()
        return f"convert-model-{where}-as-published-{digest}"
    try:
        converter = choose_converter(get_registry(), source.manifest, options)
    except ModelDownloadError:
        return None  # no caching: the task itself raises the error with its message
    key = conversion_key(
        source.manifest,
        converter.name,
        options,
        converter.tool_versions(),
        converter.cache_inputs(source.manifest, options),
    )
    return f"convert-model-{where}-{key}"


@task(
    name="convert_model",
    task_run_name="convert {source.name} to {options.precision}",
    cache_key_fn=_convert_key,
    persist_result=True,
)
def convert_model(source: StoredModel, options: ConvertOptions) -> StoredModel:
    """Convert a stored model to OpenVINO IR at the precision asked (a cache hit on repeats)."""
    converted = convert_stored(
        source, options, store=get_store(), registry=get_registry(), settings=get_settings()
    )
    get_run_logger().info("%s is stored at %s", converted.name, converted.path)
    return converted


def convert_fresh(source: StoredModel, options: ConvertOptions) -> StoredModel:
    """Run :func:`convert_model`; convert again if a cached result's folder is gone."""
    converted = convert_model(source, options)
    if not (converted.path / MANIFEST_NAME).is_file():
        get_run_logger().info(
            "%s was removed from the store since; converting again", converted.name
        )
        converted = convert_model.with_options(refresh_cache=True)(source, options)
    return converted


@task(
    name="validate_model",
    task_run_name="validate {stored.name} on {options.device}",
    cache_policy=NO_CACHE,
)
def validate_model(stored: StoredModel, options: ConvertOptions) -> StoredModel:
    """Load, compile and run the IR on the target device; compare it with fp32; report."""
    logger = get_run_logger()
    validated, reports = validate_stored(stored, options, store=get_store())
    record = validated.manifest.extra["validation"]
    rows = [{"model": r.model, **row} for r in reports for row in r.rows()]
    create_table_artifact(
        table=rows, description=f"Validation of {stored.name}: {headline(record)}"
    )
    for report in reports:
        for warning in report.warnings:
            logger.warning("%s: %s", report.model, warning)
    if not record["passed"]:
        raise ValidationFailed(
            f"{stored.name} failed validation ({headline(record)}): {failure_reasons(record)}. "
            "The report is in this run's validation artifact."
        )
    return validated
