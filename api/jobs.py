"""Jobs are Prefect flow runs of the served pipeline deployment; this module makes and reads them.

One job per model of a request, so each can be watched, cancelled and found again after a
restart: Prefect's database is the only record.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
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
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling, Completed

from api.schemas import JobPublic, Progress
from deployments.serve import PIPELINE_DEPLOYMENT
from flows.pipeline import PipelineSpec
from model_download.errors import (
    InvalidReferenceError,
    ServiceUnavailableError,
)

DEPLOYMENT = f"pipeline/{PIPELINE_DEPLOYMENT}"
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


async def create_jobs(
    client: PrefectClient,
    specs: list[PipelineSpec],
    *,
    parallel: bool,
    export_to: str | None,
    done: bool,
) -> list[str]:
    """One flow run per model; in turn unless ``parallel``; already Completed when ``done``."""
    deployment_id = await _deployment_id(client)
    ids: list[str] = []
    for spec in specs:
        parameters: dict[str, Any] = {
            "models": [spec.model_dump(mode="json")],
            "export_to": export_to,
        }
        if not parallel and ids and not done:
            parameters["after"] = ids[-1]
        state = Completed(message="already in the store") if done else None
        run = await client.create_flow_run_from_deployment(
            deployment_id,
            parameters=parameters,
            state=state,
            tags=["model-download", "api", job_tag(spec, export_to)],
        )
        ids.append(str(run.id))
    return ids


_DEPLOYMENT_IDS: dict[str, UUID] = {}


async def _deployment_id(client: PrefectClient) -> UUID:
    # Looked up once per process: the id changes only if the deployment is deleted and served
    # again; the route then forgets it (forget_deployment) and the next request looks again.
    key = str(client.api_url)
    if key not in _DEPLOYMENT_IDS:
        try:
            deployment = await client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound as exc:
            raise ServiceUnavailableError(
                f"the {DEPLOYMENT} deployment is not served: start the service (make run) or "
                "a worker of its work pool."
            ) from exc
        _DEPLOYMENT_IDS[key] = deployment.id
    return _DEPLOYMENT_IDS[key]


def forget_deployment() -> None:
    _DEPLOYMENT_IDS.clear()


async def read_job(client: PrefectClient, job_id: UUID) -> JobPublic:
    """A job's status, stage, progress, result and error, read from Prefect."""
    run = await client.read_flow_run(job_id)
    return await _describe(client, run)


async def list_jobs(client: PrefectClient, model_name: str | None, limit: int) -> list[JobPublic]:
    runs = await client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[PIPELINE_DEPLOYMENT])),
        sort=FlowRunSort.START_TIME_DESC,
        limit=limit,
    )
    jobs = [await _describe(client, run, details=False) for run in runs]
    if model_name:
        jobs = [job for job in jobs if job.model_name == model_name]
    return jobs


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
    job = JobPublic(
        id=str(run.id),
        model_name=first.get("id"),
        hub=first.get("hub"),
        status=_STATUS.get(run.state_type, "queued") if run.state_type else "queued",
        created_at=run.created,
        started_at=run.start_time,
        finished_at=run.end_time,
    )
    if details:
        await _add_details(client, run, job)
    return job


async def _add_details(client: PrefectClient, run: FlowRun, job: JobPublic) -> None:
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
    )
    for artifact in artifacts:
        if artifact.type == "progress" and artifact.data is not None:
            job.progress = _progress(float(artifact.data), artifact.description)
        if artifact.type == "table" and artifact.key == "pipeline":
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
