"""The pipeline flow: download -> convert -> validate, for many models at once.

Downloads run in parallel; conversions, heavy on CPU and memory, take turns under their own
limit, and a model waiting for its turn holds no download slot. A model's failure, whatever
raised it, is reported for that model, and the others go on.
"""

# No `from __future__ import annotations`: a served run gets this flow's function pickled by
# value, away from this module's globals, and Prefect validates the run's parameters against
# its annotations, which must therefore be the types themselves, not names to look up here.

import threading
import time
from functools import cache
from typing import Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.download import Concurrency, ModelSpec
from flows.naming import models_run_name
from model_download.conversion import ConvertOptions
from model_download.convert import discard_new_conversions, stored_conversions
from model_download.errors import ModelDownloadError
from model_download.ovms import ServableOptions, write_servable
from model_download.runtime import get_registry, get_settings, get_store
from model_download.store.store import StoredModel, check_export_path
from model_download.validate import headline
from tasks.convert import convert_fresh, validate_model
from tasks.download import pull_model

#: The key of each run's table of outcomes (the API reads a job's result paths from it).
PIPELINE_TABLE = "pipeline"


class PipelineSpec(ModelSpec):
    """A model to download and, unless ``convert`` is null, convert and validate."""

    convert: ConvertOptions | None = Field(
        default_factory=ConvertOptions, description="Conversion asked; null: download only."
    )
    ovms: ServableOptions | None = Field(
        None, description="Also lay the result out for OpenVINO Model Server."
    )


class PipelineOutcome(BaseModel):
    """What happened to one model of a pipeline run."""

    model: str
    status: Literal["done", "failed"]
    stage: Literal["download", "convert", "validate", "serve", "done"]
    stored: str | None = None
    size: int | None = Field(None, description="Bytes downloaded (the stored model's files).")
    converted: str | None = None
    converted_size: int | None = Field(None, description="Bytes of the converted model.")
    precision: str | None = Field(None, description="What was validated (published IR: its own).")
    device: str | None = Field(None, description="The device asked for.")
    device_used: str | None = Field(None, description="Where validation ran.")
    validated: bool | None = None
    validation: str | None = Field(None, description="Where it was validated, and the verdict.")
    exported: str | None = None
    ovms: str | None = None
    error: str | None = None


@cache
def _slots(limit: int) -> threading.Semaphore:
    # One gate per limit in this process: runs with the same limit share it, so concurrent
    # runs of a served deployment do not convert more models at once than the limit.
    return threading.Semaphore(limit)


def _export(stored: StoredModel, export_to: str | None) -> str | None:
    if export_to is None:
        return None
    return str(get_store().export(stored, export_to))


def wait_for_run(flow_run_id: str, poll: float = 1.0) -> None:
    """Block until another flow run has ended (requests whose models go in turn)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(UUID(flow_run_id)).state
            if state is None or state.is_final():
                return
            time.sleep(poll)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ModelDownloadError):
        return str(exc)
    # Not one of ours: a library's error or a bug. Still this model's failure alone.
    get_run_logger().error("unexpected error", exc_info=exc)
    return f"unexpected {type(exc).__name__}: {exc} (the run's log has the traceback)"


@task(name="download_stage", task_run_name="download {spec.id}", cache_policy=NO_CACHE)
def download_stage(
    spec: PipelineSpec, export_to: str | None = None
) -> tuple[PipelineOutcome, StoredModel | None]:
    """Download one model (and export it when nothing is to be converted)."""
    outcome = PipelineOutcome(model=str(spec.reference()), status="failed", stage="download")
    try:
        stored: StoredModel = pull_model(spec.reference())
        outcome.stored, outcome.size = str(stored.path), stored.manifest.total_size
        if spec.convert is None:
            outcome.exported = _export(stored, export_to)
            outcome.status, outcome.stage = "done", "done"
    except Exception as exc:  # any failure is this model's, and the others go on
        outcome.error = _error_text(exc)
        return outcome, None
    return outcome, stored


@task(name="convert_stage", task_run_name="process {spec.id}", cache_policy=NO_CACHE)
def convert_stage(
    spec: PipelineSpec,
    options: ConvertOptions,
    stored: StoredModel,
    outcome: PipelineOutcome,
    convert_limit: int,
    export_to: str | None = None,
) -> PipelineOutcome:
    """Convert and validate one downloaded model; a failure leaves the store as it was."""
    outcome = outcome.model_copy(update={"stage": "convert"})
    outcome.precision, outcome.device = options.precision, options.device
    store, registry = get_store(), get_registry()
    before = stored_conversions(stored, options, store=store, registry=registry)
    try:
        with _slots(convert_limit):
            converted = convert_fresh(stored, options)
        outcome.converted = str(converted.path)
        outcome.converted_size = converted.manifest.total_size
        outcome.stage = "validate"
        record = validate_model(converted, options).manifest.extra["validation"]
    except Exception as exc:
        outcome.error = _error_text(exc)
        outcome.validated = False if outcome.stage == "validate" else None
        discard_new_conversions(stored, options, before, store=store, registry=registry)
        return outcome
    outcome.validated = True
    outcome.precision, outcome.device_used = record["precision"], record["device_used"]
    outcome.validation = headline(record)
    try:
        outcome.exported = _export(converted, export_to)
        if spec.ovms is not None:
            outcome.stage = "serve"
            outcome.ovms = str(write_servable(converted, spec.ovms, options.device, store.root))
    except Exception as exc:  # the conversion stays: it is valid, only serving it failed
        outcome.error = _error_text(exc)
        return outcome
    outcome.status, outcome.stage = "done", "done"
    return outcome


def _fetched(future, spec: PipelineSpec) -> tuple[PipelineOutcome, StoredModel | None]:
    # A stage catches its own failures; this is for one that escapes it (a crashed task).
    try:
        return future.result()
    except Exception as exc:
        return _crashed(spec, "download", exc), None


def _converted(future, spec: PipelineSpec) -> PipelineOutcome:
    try:
        return future.result()
    except Exception as exc:
        return _crashed(spec, "convert", exc)


def _crashed(spec: PipelineSpec, stage: str, exc: BaseException) -> PipelineOutcome:
    model = str(spec.reference())
    return PipelineOutcome(model=model, status="failed", stage=stage, error=_error_text(exc))


@flow(name="pipeline", flow_run_name=models_run_name("pipeline"))
def pipeline(
    models: list[PipelineSpec],
    download_concurrency: Concurrency | None = None,
    convert_concurrency: Concurrency | None = None,
    export_to: str | None = None,
    after: str | None = None,
) -> list[PipelineOutcome]:
    """Download, convert to OpenVINO IR and validate models; one failure spares the others.

    Args:
        models: the models, each with the conversion asked (precision, device, ...).
        download_concurrency: models processed at once, 1 to 64 (default: the service's
            setting).
        convert_concurrency: conversions at once, 1 to 64 (default: the service's setting, 1).
        export_to: also place each result under this folder of the store, by hub and id.
        after: the id of a flow run to wait for first (requests processed in turn).
    """
    settings = get_settings()
    workers = download_concurrency or settings.download_concurrency  # None: the setting
    convert_limit = convert_concurrency or settings.convert_concurrency
    for spec in models:
        spec.reference()  # bad input fails the run before anything starts
    if export_to is not None:
        check_export_path(export_to)
    if after:
        wait_for_run(after)

    outcomes = _run(models, workers, convert_limit, export_to)

    create_table_artifact(
        key=PIPELINE_TABLE,
        table=[o.model_dump(exclude_none=True) for o in outcomes],
        description="Models of this run: where each was stored and converted, or why not.",
    )
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise ModelDownloadError(
            f"{len(failed)} of {len(outcomes)} models failed: "
            + "; ".join(f"{o.model} at {o.stage}: {o.error}" for o in failed)
        )
    get_run_logger().info("processed %d models", len(outcomes))
    return outcomes


def _run(
    models: list[PipelineSpec], workers: int, convert_limit: int, export_to: str | None
) -> list[PipelineOutcome]:
    """Every model through its stages; the outcomes in the order of ``models``."""
    # Downloads and conversions have pools of their own: a model waiting for its turn to
    # convert holds no download slot, so the next downloads go on meanwhile. The conversion
    # pool has room for the conversions allowed plus one model per download slot (waiting for
    # its turn, or validating); the limit itself is the process-wide gate of _slots.
    by_index: dict[int, PipelineOutcome] = {}
    with (
        ThreadPoolTaskRunner(max_workers=workers) as downloads,
        ThreadPoolTaskRunner(max_workers=workers + convert_limit) as conversions,
    ):
        fetching = {
            downloads.submit(download_stage, {"spec": spec, "export_to": export_to}): index
            for index, spec in enumerate(models)
        }
        converting = {}
        for future in as_completed(list(fetching)):
            index = fetching[future]
            outcome, stored = _fetched(future, models[index])
            if stored is None or models[index].convert is None:
                by_index[index] = outcome
                continue
            parameters = {
                "spec": models[index],
                "options": models[index].convert,
                "stored": stored,
                "outcome": outcome,
                "convert_limit": convert_limit,
                "export_to": export_to,
            }
            converting[index] = conversions.submit(convert_stage, parameters)
        for index, future in converting.items():
            by_index[index] = _converted(future, models[index])
    return [by_index[index] for index in range(len(models))]
