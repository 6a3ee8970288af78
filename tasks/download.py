"""Prefect tasks that resolve a model and download it into the store."""

from __future__ import annotations

import hashlib
import threading
import time
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from model_download.errors import ModelDownloadError
from model_download.progress import Progress, format_size
from model_download.pull import download_resolved, resolve_reference
from model_download.refs import ModelReference
from model_download.resolved import ResolvedModel
from model_download.runtime import get_registry, get_settings, get_store
from model_download.store.store import StoredModel

# Artifact updates are API calls: one a second is plenty for a person watching the UI.
_UPDATE_EVERY = 1.0


def transient_only(task, task_run, state) -> bool:
    """Retry a task only for failures that may pass (network, busy hub), never for bad input."""
    error = state.data
    return isinstance(error, ModelDownloadError) and error.transient


@task(
    name="resolve_model",
    task_run_name="resolve {reference}",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=transient_only,
    cache_policy=NO_CACHE,
)
def resolve_model(reference: ModelReference) -> ResolvedModel:
    """Pin a reference to the hub's immutable revision and list its files (always asks)."""
    resolved = resolve_reference(reference, get_registry())
    get_run_logger().info(
        "%s is %s: %d files, %d bytes",
        reference,
        resolved.revision,
        len(resolved.files),
        resolved.total_size,
    )
    return resolved


def _download_key(context, parameters) -> str:
    # Hub, id, resolved revision and patterns: the same bytes give the same key; the store root
    # too, since one Prefect server may serve several stores. The token is not part of it: it
    # never reaches task parameters.
    resolved: ResolvedModel = parameters["resolved"]
    where = hashlib.sha256(str(get_store().root).encode()).hexdigest()[:16]
    return f"download-model-{where}-{resolved.cache_key()}"


@task(
    name="download_model",
    task_run_name="download {resolved.reference}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=transient_only,
    cache_key_fn=_download_key,
    persist_result=True,
)
def download_model(resolved: ResolvedModel) -> StoredModel:
    """Download a resolved model into the store (a cache hit when it was stored before)."""
    logger = get_run_logger()
    progress = ArtifactProgress()
    stored = download_resolved(
        resolved,
        store=get_store(),
        registry=get_registry(),
        progress=progress,
        file_concurrency=get_settings().file_concurrency,
    )
    logger.info(
        "%s stored at %s (%d bytes)", resolved.reference, stored.path, stored.manifest.total_size
    )
    return stored


@task(name="pull_model", task_run_name="pull {reference}", cache_policy=NO_CACHE)
def pull_model(reference: ModelReference) -> StoredModel:
    """Resolve, then download unless the store already holds that revision."""
    resolved = resolve_model(reference)
    stored = download_model(resolved)
    man = stored.manifest
    if get_store().get(man.hub, man.id, man.revision) is None:
        # A cached result can outlive the stored copy (someone ran `rm`, or its manifest was
        # damaged): download again, which also replaces a corrupt folder.
        get_run_logger().info("%s is no longer in the store; downloading again", reference)
        stored = download_model.with_options(refresh_cache=True)(resolved)
    return stored


class ArtifactProgress(Progress):
    """Shows a download's progress as a Prefect progress artifact of the running task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._artifact: UUID | None = None
        self._label = ""
        self._done = self._total = 0
        self._last = 0.0

    def start(self, label: str, total: int) -> None:
        self._label, self._total = label, total
        self._artifact = create_progress_artifact(
            progress=0.0, description=self._describe("Downloading", 0)
        )

    def advance(self, label: str, nbytes: int) -> None:
        with self._lock:
            self._done += nbytes
            now = time.monotonic()
            if now - self._last < _UPDATE_EVERY:
                return
            self._last = now
        self._send()

    def finish(self, label: str, ok: bool) -> None:
        self._send("Downloaded" if ok else "Failed")

    def _send(self, verb: str = "Downloading") -> None:
        if self._artifact is None:
            return
        with self._lock:
            done = self._done
        percent = 100.0 if self._total <= 0 else min(100.0, 100.0 * done / self._total)
        update_progress_artifact(
            self._artifact, progress=round(percent, 1), description=self._describe(verb, done)
        )

    def _describe(self, verb: str, done: int) -> str:
        # The UI shows the percentage as a bar; the description carries the bytes behind it.
        return (
            f"{verb} {self._label}: {format_size(done)} of {format_size(self._total)} "
            f"({done} of {self._total} bytes)"
        )
