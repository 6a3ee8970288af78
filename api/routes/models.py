from fastapi import APIRouter, Query
from prefect.exceptions import ObjectNotFound

from api import jobs
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
)
from flows.pipeline import PipelineSpec
from model_download.convert import choose_converter, find_conversion
from model_download.errors import ModelDownloadError, ModelNotInStoreError
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
    hubs = [p.name for p in registry.plugins("hub") if p.available]
    specs = [to_spec(model, hubs) for model in request.models]

    # Everything already stored (and validated): record finished jobs, start no run.
    stored = [_stored_result(spec, store, registry) for spec in specs]
    done = all(s is not None for s in stored)
    if done and download_path is not None:
        for result in stored:
            store.export(result, download_path)
    # The jobs that made them answer for them; only results made otherwise get a new record.
    ids = await jobs.finished_jobs(client, specs, download_path) if done else None
    if ids is None:
        try:
            ids = await jobs.create_jobs(
                client,
                specs,
                parallel=request.parallel_downloads,
                export_to=download_path,
                done=done,
            )
        except ObjectNotFound:
            jobs.forget_deployment()  # served again under a new id since we looked it up
            raise
    if done:
        return DownloadResponse(message="already in the store", job_ids=ids, status="completed")
    return DownloadResponse(message=f"started {len(ids)} job(s)", job_ids=ids, status="processing")


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
    """Jobs, optionally of one model (its name as in the request)."""
    found = await jobs.list_jobs(client, model_name, limit)
    return JobsResponse(jobs=found, total=len(found))


@router.get("/results")
async def results(client: PrefectDep, limit: int = Query(100, ge=1, le=1000)) -> JobsResponse:
    """Completed jobs with where their files are."""
    found = [j for j in await jobs.list_jobs(client, None, limit) if j.status == "completed"]
    detailed = [await jobs.read_job(client, _uuid(j.id)) for j in found]
    return JobsResponse(jobs=detailed, total=len(detailed))


@router.get("")
def list_models(store: StoreDep) -> ModelsResponse:
    """Every model in the store, downloaded or converted."""
    models = [_public(m, details=False) for m in store.list()]
    return ModelsResponse(models=models, total=len(models))


@router.get("/{model_id:path}")
def read_model(model_id: str, store: StoreDep) -> ModelPublic:
    """A stored model with its manifest: files, source, conversion and validation report."""
    return _public(_find(store, model_id)[0], details=True)


@router.delete("/{model_id:path}")
def delete_model(model_id: str, store: StoreDep, registry: RegistryDep) -> ModelsResponse:
    """Remove a model (one revision, or all without @revision) and content no one else uses."""
    ref = parse_reference(model_id)
    removed = remove_models(store, registry, ref.hub, ref.id, ref.revision)
    return ModelsResponse(models=[_public(m, details=False) for m in removed], total=len(removed))


def _stored_result(spec: PipelineSpec, store: ModelStore, registry: Registry) -> StoredModel | None:
    """The stored result this request asks for, if it is there, validated where asked."""
    reference = registry.hub(spec.hub).validate(spec.reference())
    found = store.find(reference.hub, reference.id, reference.revision)
    if not found:
        return None
    if spec.convert is None:
        return found[0]
    if spec.ovms is not None:
        return None  # the servable folder is laid out by a run
    try:
        converter = choose_converter(registry, found[0].manifest, spec.convert)
    except ModelDownloadError:
        return None
    converted = find_conversion(found[0], converter, spec.convert, store)
    record = converted.manifest.extra.get("validation", {}) if converted else {}
    ok = record.get("passed") and record.get("device") == spec.convert.device
    return converted if ok else None


def _find(store: ModelStore, model_id: str) -> list[StoredModel]:
    ref = parse_reference(model_id)
    found = store.find(ref.hub, ref.id, ref.revision)
    if not found:
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


def _uuid(text: str):
    from uuid import UUID

    return UUID(text)
