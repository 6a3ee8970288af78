from uuid import UUID

from fastapi import APIRouter, Query

from api import jobs
from api.deps import PrefectDep
from api.schemas import JobPublic, JobsResponse

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("")
async def list_jobs(client: PrefectDep, limit: int = Query(100, ge=1, le=1000)) -> JobsResponse:
    """Recent jobs, newest first."""
    found = await jobs.list_jobs(client, None, limit)
    return JobsResponse(jobs=found, total=len(found))


@router.get("/{job_id}")
async def read_job(job_id: UUID, client: PrefectDep) -> JobPublic:
    """A job's status, stage, progress, result paths and error."""
    return await jobs.read_job(client, job_id)


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: UUID, client: PrefectDep) -> JobPublic:
    """Cancel a job that has not ended."""
    return await jobs.cancel_job(client, job_id)
