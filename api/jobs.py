"""Jobs are Prefect flow runs of the served pipeline deployment; this module makes and reads them.

One job per model of a request, so each can be watched, cancelled and found again after a
restart: Prefect's database is the only record.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, NamedTuple
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import DeploymentStatus, FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling, Completed

from api.schemas import JobPublic, Progress
from deployments.serve import PIPELINE_DEPLOYMENT
from flows.pipeline import PIPELINE_TABLE, PipelineOutcome, PipelineSpec
from model_download.errors import (
    InvalidReferenceError,
    ServiceUnavailableError,
)

DEPLOYMENT = f"pipeline/{PIPELINE_DEPLOYMENT}"
# Flow-run tags that keep what the request said (not secret): the name and hub as given.
MODEL_TAG, HUB_TAG = "model:", "hub:"
_STATUS = {
    StateType.SCHEDULED: "queued",
    StateType.PENDING: "queued",
    StateType.PAUSED: "queued",
    StateType.RUNNING: "processing",
    StateType.CANCELLING: "processing",
    StateType.COMPLETED: "completed",
    StateType.FAILED: "failed",
    StateType.CRASHED: "failed",
    StateType.CANCELLED: "cancelled",
}


def job_tag(spec: PipelineSpec, export_to: str | None) -> str:
    """A tag naming what a job makes: the same request gives the same tag."""
    payload = json.dumps([spec.model_dump(mode="json"), export_to], sort_keys=True)
    return "job:" + hashlib.sha256(payload.encode()).hexdigest()[:24]


async def finished_jobs(
    client: PrefectClient, specs: list[PipelineSpec], export_to: str | None
) -> list[str] | None:
    """The completed jobs that made each of these results, if every one has one."""
    ids = []
    for spec in specs:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[job_tag(spec, export_to)]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
            ),
            limit=1,
        )
        if not runs:
            return None
        ids.append(str(runs[0].id))
    return ids


class Origin(NamedTuple):
    """A model as the request named it: kept as tags, so jobs are found by that name."""

    name: str
    hub: str


async def create_jobs(
    client: PrefectClient,
    specs: list[PipelineSpec],
    origins: list[Origin],
    *,
    parallel: bool,
    export_to: str | None,
    answers: list[PipelineOutcome] | None = None,
) -> list[str]:
    """One flow run per model, in turn unless ``parallel``.

    With ``answers`` (one per model, from the store) the runs are made Completed at once: no
    flow runs to leave its table of results, so each answer is recorded as that table, and the
    job shows its paths like any other.

    Raises:
        ServiceUnavailableError: the deployment is not served, or (unless answered: no run is
            started then) its runner or workers are not polling.
    """
    done = answers is not None
    deployment_id = await _deployment_id(client) if done else await ready_deployment(client)
    ids: list[str] = []
    for spec, origin in zip(specs, origins, strict=True):
        parameters: dict[str, Any] = {
            "models": [spec.model_dump(mode="json")],
            "export_to": export_to,
        }
        if not parallel and ids and not done:
            parameters["after"] = ids[-1]
        tags = ["model-download", "api", job_tag(spec, export_to)]
        tags += [MODEL_TAG + origin.name, HUB_TAG + origin.hub]
        state = Completed(message="already in the store") if done else None
        run, deployment_id = await _create_run(client, deployment_id, parameters, state, tags)
        if answers is not None:
            await _record_answer(client, run.id, answers[len(ids)])
        ids.append(str(run.id))
    return ids


async def _record_answer(client: PrefectClient, run_id: UUID, outcome: PipelineOutcome) -> None:
    await client.create_artifact(
        ArtifactCreate(
            key=PIPELINE_TABLE,
            type="table",
            data=json.dumps([outcome.model_dump(mode="json", exclude_none=True)]),
            description="Already in the store: answered without a run.",
            flow_run_id=run_id,
        )
    )


async def _create_run(
    client: PrefectClient, deployment_id: UUID, parameters: dict, state, tags: list[str]
) -> tuple[FlowRun, UUID]:
    # The deployment may have been served again under a new id since it was looked up: look
    # once more by name; if that id is gone too, it is simply not served.
    try:
        run = await client.create_flow_run_from_deployment(
            deployment_id, parameters=parameters, state=state, tags=tags
        )
        return run, deployment_id
    except (ObjectNotFound, PrefectHTTPStatusError) as exc:
        if not _is_not_found(exc):
            raise
    forget_deployment()
    deployment_id = await _deployment_id(client)
    try:
        run = await client.create_flow_run_from_deployment(
            deployment_id, parameters=parameters, state=state, tags=tags
        )
    except (ObjectNotFound, PrefectHTTPStatusError) as exc:
        if _is_not_found(exc):
            raise ServiceUnavailableError(_NOT_SERVED) from exc
        raise
    return run, deployment_id


def _is_not_found(exc: Exception) -> bool:
    if isinstance(exc, ObjectNotFound):
        return True
    return isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code == 404


_NOT_SERVED = (
    f"the {DEPLOYMENT} deployment is not served: start the service (make run) or a worker of "
    "its work pool."
)
_DEPLOYMENT_IDS: dict[str, UUID] = {}


async def served_deployment(client: PrefectClient) -> UUID:
    """The deployment's id (looked up once per process).

    Raises:
        ServiceUnavailableError: it is not served.
    """
    return await _deployment_id(client)


async def _deployment_id(client: PrefectClient) -> UUID:
    # Looked up once per process: the id changes only if the deployment is deleted and served
    # again; _create_run then forgets it and looks again.
    key = str(client.api_url)
    if key not in _DEPLOYMENT_IDS:
        _DEPLOYMENT_IDS[key] = (await _read_deployment(client)).id
    return _DEPLOYMENT_IDS[key]


async def _read_deployment(client: PrefectClient) -> DeploymentResponse:
    try:
        return await client.read_deployment_by_name(DEPLOYMENT)
    except ObjectNotFound as exc:
        raise ServiceUnavailableError(_NOT_SERVED) from exc


async def ready_deployment(client: PrefectClient) -> UUID:
    """The deployment's id, if something polls it for runs (else they would wait forever).

    A runner or worker marks its deployments READY each time it polls; Prefect marks them
    NOT_READY when polls stop, and a runner stopped with Ctrl-C pauses them.

    Raises:
        ServiceUnavailableError: not served, paused, or not polled.
    """
    deployment = await _read_deployment(client)
    _DEPLOYMENT_IDS[str(client.api_url)] = deployment.id
    if deployment.paused or deployment.status != DeploymentStatus.READY:
        state = "paused" if deployment.paused else "not polled by any runner or worker"
        raise ServiceUnavailableError(
            f"the {DEPLOYMENT} deployment is {state}, so a job would wait forever: start the "
            "runner (make run, or model-download serve) or a worker of its work pool "
            "(prefect worker start --pool model-download)."
        )
    return deployment.id


def forget_deployment() -> None:
    _DEPLOYMENT_IDS.clear()


async def read_job(client: PrefectClient, job_id: UUID) -> JobPublic:
    """A job's status, stage, progress, result and error, read from Prefect."""
    run = await client.read_flow_run(job_id)
    return await _describe(client, run)


async def list_jobs(
    client: PrefectClient, model_name: str | None, limit: int, *, completed: bool = False
) -> list[JobPublic]:
    """Jobs, newest first; of one model (its name as the request gave it); or completed ones.

    Both filters run in Prefect, before ``limit``, so older matches are not cut off.
    """
    # Queued runs have no start time yet: by start time they would sort last on SQLite.
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[MODEL_TAG + model_name]) if model_name else None,
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            if completed
            else None,
        ),
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[PIPELINE_DEPLOYMENT])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit,
    )
    return [await _describe(client, run, details=completed) for run in runs]


async def cancel_job(client: PrefectClient, job_id: UUID) -> JobPublic:
    """Ask Prefect to cancel the run: at once when it has not started, else via its runner."""
    run = await client.read_flow_run(job_id)
    if run.state is None or run.state.is_final():
        raise InvalidReferenceError(f"job {job_id} has already ended ({run.state_name}).")
    state = Cancelling() if run.state.is_running() else Cancelled(message="cancelled by request")
    await client.set_flow_run_state(job_id, state, force=True)
    return await read_job(client, job_id)


async def _describe(client: PrefectClient, run: FlowRun, details: bool = True) -> JobPublic:
    models = (run.parameters or {}).get("models") or [{}]
    first = models[0] if isinstance(models[0], dict) else {}
    tags = {t.partition(":")[0] + ":": t.partition(":")[2] for t in run.tags or []}
    job = JobPublic(
        id=str(run.id),
        # Runs made before the tags were kept fall back to the spec.
        model_name=tags.get(MODEL_TAG, first.get("id")),
        hub=tags.get(HUB_TAG, first.get("hub")),
        operation_type="convert" if first.get("convert") else "download",
        status=_STATUS.get(run.state_type, "queued") if run.state_type else "queued",
        created_at=run.created,
        started_at=run.start_time,
        finished_at=run.end_time,
        start_time=run.created,
        completion_time=run.end_time,
    )
    if details:
        await _add_details(client, run, job)
    elif job.status == "failed" and run.state is not None:
        job.error = run.state.message  # a list reads no artifacts: the run's own summary
    return job


async def _add_details(client: PrefectClient, run: FlowRun, job: JobPublic) -> None:
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
    )
    for artifact in artifacts:
        if artifact.type == "progress" and artifact.data is not None:
            job.progress = _progress(float(artifact.data), artifact.description)
        if artifact.type == "table" and artifact.key == PIPELINE_TABLE:
            outcome = json.loads(artifact.data)[0] if artifact.data else {}
            job.stage = outcome.get("stage")
            job.result = {k: v for k, v in outcome.items() if k not in ("error",)}
            job.error = outcome.get("error")
    if job.status == "completed":
        job.progress = _progress(100.0, None, job.progress.bytes_total)
        job.stage = "done"
    elif job.status == "failed" and job.error is None and run.state is not None:
        job.error = run.state.message
    elif job.status == "processing" and job.stage is None:
        job.stage = await _running_stage(client, run.id)


def _progress(percent: float, description: str | None, total: int | None = None) -> Progress:
    # The download task's artifact says "Downloading <model>: <total> bytes".
    if total is None and description and (found := re.search(r"(\d+) bytes", description)):
        total = int(found.group(1))
    done = round(total * percent / 100) if total is not None else None
    return Progress(percent=percent, bytes_done=done, bytes_total=total)


async def _running_stage(client: PrefectClient, run_id: UUID) -> str | None:
    task_runs = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
    )
    running = [t for t in task_runs if t.state_type == StateType.RUNNING]
    for prefix, stage in (
        ("validate", "validate"),
        ("convert", "convert"),
        ("download", "download"),
        ("resolve", "download"),
    ):
        if any(t.name.startswith(prefix) for t in running):
            return stage
    return "queued" if not task_runs else None
