"""The pipeline flow: download -> convert -> validate, for many models at once.

Downloads run in parallel; conversions, heavy on CPU and memory, take turns under their own
limit. A model's failure is reported for that model and the others go on.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from typing import Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.download import ModelSpec
from flows.naming import models_run_name
from model_download.conversion import ConvertOptions
from model_download.errors import ModelDownloadError
from model_download.ovms import ServableOptions, write_servable
from model_download.runtime import get_settings, get_store
from model_download.store.store import StoredModel, check_export_path
from tasks.convert import convert_fresh, validate_model
from tasks.download import pull_model


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
    converted: str | None = None
    precision: str | None = None
    device: str | None = None
    validated: bool | None = None
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


@task(name="process_model", task_run_name="process {spec.id}", cache_policy=NO_CACHE)
def process_model(
    spec: PipelineSpec, convert_limit: int, export_to: str | None = None
) -> PipelineOutcome:
    """Download, convert and validate one model; report the stage a failure happened at."""
    outcome = PipelineOutcome(model=str(spec.reference()), status="failed", stage="download")
    try:
        stored: StoredModel = pull_model(spec.reference())
        outcome.stored = str(stored.path)
        if spec.convert is None:
            outcome.exported = _export(stored, export_to)
            outcome.status, outcome.stage = "done", "done"
            return outcome
        outcome.stage = "convert"
        outcome.precision, outcome.device = spec.convert.precision, spec.convert.device
        with _slots(convert_limit):
            converted = convert_fresh(stored, spec.convert)
        outcome.converted = str(converted.path)
        outcome.stage = "validate"
        validate_model(converted, spec.convert)
        outcome.validated = True
        outcome.exported = _export(converted, export_to)
        if spec.ovms is not None:
            outcome.stage = "serve"
            servable = write_servable(converted, spec.ovms, spec.convert.device, get_store().root)
            outcome.ovms = str(servable)
        outcome.status, outcome.stage = "done", "done"
    except ModelDownloadError as exc:
        outcome.error = str(exc)
        outcome.validated = False if outcome.stage == "validate" else None
    return outcome


@flow(name="pipeline", flow_run_name=models_run_name("pipeline"))
def pipeline(
    models: list[PipelineSpec],
    download_concurrency: int | None = None,
    convert_concurrency: int | None = None,
    export_to: str | None = None,
    after: str | None = None,
) -> list[PipelineOutcome]:
    """Download, convert to OpenVINO IR and validate models; one failure spares the others.

    Args:
        models: the models, each with the conversion asked (precision, device, ...).
        download_concurrency: models processed at once (default: the service's setting).
        convert_concurrency: conversions at once (default: the service's setting, 1).
        export_to: also place each result under this folder of the store, by hub and id.
        after: the id of a flow run to wait for first (requests processed in turn).
    """
    settings = get_settings()
    workers = download_concurrency or settings.download_concurrency
    convert_limit = convert_concurrency or settings.convert_concurrency
    for spec in models:
        spec.reference()  # bad input fails the run before anything starts
    if export_to is not None:
        check_export_path(export_to)
    if after:
        wait_for_run(after)

    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        futures = [
            runner.submit(
                process_model,
                {"spec": spec, "convert_limit": convert_limit, "export_to": export_to},
            )
            for spec in models
        ]
        outcomes = [future.result() for future in futures]

    create_table_artifact(
        key="pipeline",
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
