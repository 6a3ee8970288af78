import errno

from fastapi import APIRouter, HTTPException, Query, status
from prefect.client.orchestration import PrefectClient

from api import jobs
from api.cached import answer_from_store, latest_stored, stored_result
from api.deps import PrefectDep, RegistryDep, StoreDep
from api.requests import to_spec
from api.schemas import (
    DownloadResponse,
    FilePublic,
    JobsResponse,
    ListRequest,
    ModelDownloadRequest,
    ModelPublic,
    ModelsResponse,
    ResultPublic,
    ResultsResponse,
)
from flows.pipeline import PipelineSpec
from model_download.errors import (
    InvalidReferenceError,
    ModelNotInStoreError,
    ServiceUnavailableError,
)
from model_download.listing import SearchPage
from model_download.pull import remove_models
from model_download.refs import HUB_ALIASES, parse_reference
from model_download.store.store import ModelStore, StoredModel, check_export_path
from plugins.registry import Registry

router = APIRouter(prefix="/models", tags=["models"])


@router.post("/download")
async def download_models(
    request: ModelDownloadRequest,
    client: PrefectDep,
    store: StoreDep,
    registry: RegistryDep,
    download_path: str | None = Query(None, description="Also place results here, in the store."),
) -> DownloadResponse:
    """Start a job per model: download, and convert when asked. Answers before they finish."""
    if download_path is not None:
        check_export_path(download_path)
    hubs = _hubs(registry)
    specs = [to_spec(model, *hubs) for model in request.models]
    origins = [jobs.Origin(model.name, model.hub) for model in request.models]

    # Everything already stored (and validated): record finished jobs, start no run.
    stored = [stored_result(spec, store, registry) for spec in specs]
    if any(result is None for result in stored):
        ids = await jobs.create_jobs(
            client, specs, origins, parallel=request.parallel_downloads, export_to=download_path
        )
        return DownloadResponse(
            message=f"started {len(ids)} job(s)", job_ids=ids, status="processing"
        )
    ids = await _answer_from_store(
        client, store, specs, origins, stored, request.parallel_downloads, download_path
    )
    return DownloadResponse(message="already in the store", job_ids=ids, status="completed")


async def _answer_from_store(
    client: PrefectClient,
    store: ModelStore,
    specs: list[PipelineSpec],
    origins: list[jobs.Origin],
    results: list[StoredModel],
    parallel: bool,
    download_path: str | None,
) -> list[str]:
    """The jobs of a request the store answers: those that made its results, or new ones."""
    # Prefect is asked before anything is written, so a request it cannot record leaves the
    # store as it was.
    ids = await jobs.finished_jobs(client, specs, download_path)
    if ids is None:
        await jobs.served_deployment(client)
    exported = _export(store, results, download_path) if download_path is not None else None
    if ids is not None:
        return ids  # the jobs that made these results answer for them
    answers = [
        answer_from_store(spec, result, exported[i] if exported else None)
        for i, (spec, result) in enumerate(zip(specs, results, strict=True))
    ]
    return await jobs.create_jobs(
        client, specs, origins, parallel=parallel, export_to=download_path, answers=answers
    )


def _hubs(registry: Registry) -> tuple[list[str], dict[str, str]]:
    """The hubs that run here, and those installed but unavailable, with the reason."""
    found = registry.plugins("hub")
    available = [p.name for p in found if p.available]
    return available, {p.name: p.reason or "unknown reason" for p in found if not p.available}


def _export(store: ModelStore, results: list[StoredModel], folder: str) -> list[str]:
    paths = []
    for result in results:
        try:
            paths.append(str(store.export(result, folder)))
        except OSError as exc:
            raise _export_error(exc, folder) from exc
    return paths


def _export_error(exc: OSError, folder: str) -> Exception:
    # The path itself was checked; what remains is the file system's answer.
    if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
        return InvalidReferenceError(
            f"download_path {folder!r} is refused by the file system ({exc.strerror}): "
            "use a shorter, plainer path."
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return HTTPException(
            status.HTTP_507_INSUFFICIENT_STORAGE,
            detail=f"the store has no room to place results at {folder!r} ({exc.strerror}): "
            "free space under MODELS_DIR and try again.",
        )
    return ServiceUnavailableError(
        f"the store could not place results at {folder!r} ({exc.strerror or exc}): check that "
        "MODELS_DIR is writable by the API."
    )


@router.post("/list")
def list_hub_models(request: ListRequest, registry: RegistryDep) -> SearchPage:
    """One page of the models a hub offers (Hugging Face search; an Ollama model's tags)."""
    hub = registry.hub(HUB_ALIASES.get(request.hub, request.hub))
    return hub.search(
        request.search,
        author=request.author,
        tags=tuple(request.tags),
        page=request.page,
        page_size=request.page_size,
    )


@router.get("/jobs")
async def jobs_of_model(
    client: PrefectDep, model_name: str | None = None, limit: int = Query(100, ge=1, le=1000)
) -> JobsResponse:
    """Jobs, optionally of one model (its name as in the request); 404 if it has none."""
    found = await jobs.list_jobs(client, model_name, limit)
    if model_name is not None and not found:
        # As the reference answers, so that its clients can tell "no such model's jobs".
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no jobs found for model {model_name!r}")
    return JobsResponse(jobs=found, total=len(found))


@router.get("/results")
async def results(client: PrefectDep, limit: int = Query(100, ge=1, le=1000)) -> ResultsResponse:
    """Completed jobs with where their files are (the reference's shape)."""
    found = await jobs.list_jobs(client, None, limit, completed=True)
    answers = []
    for job in found:
        result = job.result or {}
        answers.append(
            ResultPublic(
                job_id=job.id,
                model_name=job.model_name,
                hub=job.hub,
                operation_type=job.operation_type,
                model_path=result.get("ovms")
                or result.get("exported")
                or result.get("converted")
                or result.get("stored"),
                is_ovms=bool(result.get("ovms")),
                completion_time=job.completion_time,
            )
        )
    return ResultsResponse(results=answers, total=len(answers))


@router.get("")
def list_models(store: StoreDep) -> ModelsResponse:
    """Every model in the store, downloaded or converted."""
    models = [_public(m, details=False) for m in store.list()]
    return ModelsResponse(models=models, total=len(models))


@router.get("/{model_id:path}")
def read_model(model_id: str, store: StoreDep) -> ModelPublic:
    """A stored model with its manifest: files, source, conversion and validation report."""
    return _public(_find(store, model_id), details=True)


@router.delete("/{model_id:path}")
def delete_model(model_id: str, store: StoreDep, registry: RegistryDep) -> ModelsResponse:
    """Remove a model (one revision, or all without @revision) and content no one else uses."""
    ref = parse_reference(model_id)
    removed = remove_models(store, registry, ref.hub, ref.id, ref.revision)
    return ModelsResponse(models=[_public(m, details=False) for m in removed], total=len(removed))


def _find(store: ModelStore, model_id: str) -> StoredModel:
    ref = parse_reference(model_id)
    found = latest_stored(store, ref.hub, ref.id, ref.revision)
    if found is None:
        raise ModelNotInStoreError(f"no stored model {model_id!r}: see GET /models.")
    return found


def _public(stored: StoredModel, details: bool) -> ModelPublic:
    man = stored.manifest
    return ModelPublic(
        id=stored.name,
        hub=man.hub,
        name=man.id,
        revision=man.revision,
        path=str(stored.path),
        format=man.format,
        size=man.total_size,
        created_at=man.created_at,
        files=[FilePublic(path=f.path, size=f.size, sha256=f.sha256) for f in man.files]
        if details
        else None,
        extra=man.extra if details else None,
    )
