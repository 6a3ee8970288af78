"""Resolve a reference and download it into the store: the work behind every pull.

The Prefect tasks and the CLI both call these two functions, so a pull behaves the same however
it is started.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path

from model_download.cancel import Cancel, cancelling
from model_download.errors import DownloadCancelled, ModelDownloadError, StoreError
from model_download.progress import Progress
from model_download.refs import ModelReference, check_relative_path
from model_download.resolved import RemoteFile, ResolvedModel
from model_download.store.manifest import Manifest, ManifestFile, Selection
from model_download.store.store import ModelStore, StoredModel
from plugins.base import HubPlugin
from plugins.registry import Registry

logger = logging.getLogger(__name__)


def resolve_reference(reference: ModelReference, registry: Registry) -> ResolvedModel:
    """Ask the reference's hub which immutable revision and files it means (cheap, no files)."""
    hub = registry.hub(reference.hub)
    return hub.resolve(hub.validate(reference))


def find_in_store(store: ModelStore, resolved: ResolvedModel) -> StoredModel | None:
    """The stored model holding every file ``resolved`` selects, with matching content."""
    ref = resolved.reference
    stored = store.get(ref.hub, ref.id, resolved.revision)
    if stored is None:
        return None
    for file in resolved.files:
        have = stored.manifest.file(file.path)
        if have is None or not _same_content(have, file):
            return None
    return stored


def download_resolved(
    resolved: ResolvedModel,
    *,
    store: ModelStore,
    registry: Registry,
    progress: Progress | None = None,
    file_concurrency: int = 4,
    cancel: Cancel | None = None,
) -> StoredModel:
    """Make sure the store holds ``resolved``; download only what it lacks.

    A second process asking for the same model waits on the model's lock and then finds the
    model in the store. Nothing is listed before every file is fetched and verified.

    Args:
        resolved: the model, pinned to a revision, with the files to fetch.
        store: where it goes.
        registry: the plugins, for the model's hub.
        progress: told of the bytes as they arrive.
        file_concurrency: files of the model fetched at once.
        cancel: setting it stops the download promptly (Ctrl-C); partial files are kept.

    Raises:
        ModelDownloadError: the first file that failed says why; the others were stopped.
    """
    ref = resolved.reference
    hub = registry.hub(ref.hub)
    if stored := find_in_store(store, resolved):
        _remember_name(store, resolved)
        hub.on_stored(stored, store)
        return stored

    with store.locked(ref.hub, ref.id, resolved.revision, cancel) as lock:
        # Whoever held the lock before us may have just stored it.
        if stored := find_in_store(store, resolved):
            logger.info("%s was stored by another process while we waited", ref)
            _remember_name(store, resolved)
            hub.on_stored(stored, store)
            return stored

        staging = store.staging_dir(ref.hub, ref.id, resolved.revision)
        stop = Cancel(parent=cancel)
        files = _fetch_all(hub, resolved, staging, store, progress, file_concurrency, stop)
        if not lock.is_held():
            raise StoreError(
                f"the lock on {ref} was taken over while downloading (was this process paused "
                "for long?); nothing was published: pull again."
            )
        stored = _publish(store, staging, resolved, files, hub)
    logger.info("stored %s at %s", ref, stored.path)
    hub.on_stored(stored, store)
    return stored


def _publish(
    store: ModelStore,
    staging: Path,
    resolved: ResolvedModel,
    files: list[ManifestFile],
    hub: HubPlugin,
) -> StoredModel:
    ref = resolved.reference
    for file in files:
        store.blobs.adopt(file.sha256, staging / file.path)
    # Only these files are published; anything else in staging (a partial file of an earlier
    # pull that selected more) stays there for the pull that wants it.
    manifest = Manifest(
        hub=ref.hub,
        id=ref.id,
        revision=resolved.revision,
        requested_revisions=[ref.revision] if ref.revision else [],
        selections=[Selection(include=list(ref.include), exclude=list(ref.exclude))],
        format=resolved.format,
        files=files,
        tools=hub.tool_versions(),
    )
    return store.publish(staging, manifest)


def _fetch_all(
    hub: HubPlugin,
    resolved: ResolvedModel,
    staging: Path,
    store: ModelStore,
    progress: Progress | None,
    file_concurrency: int,
    cancel: Cancel,
) -> list[ManifestFile]:
    """Fetch every selected file into ``staging``, reusing content the store already has.

    The first file to fail stops the others (their partial files stay for a resume), so its
    error surfaces at once rather than after every sibling transfer has run its course.
    """
    label = str(resolved.reference)
    listener = progress or Progress()
    listener.start(label, resolved.total_size)
    known = _known_files(store, resolved)
    lock = threading.Lock()

    def on_bytes(nbytes: int) -> None:
        # Every hub reports here, whatever it transfers with: the place to stop it.
        cancel.check(label)
        with lock:
            listener.advance(label, nbytes)

    def fetch(file: RemoteFile) -> ManifestFile:
        cancel.check(f"{label}: {file.path}")
        # A hub may send any path: never let one climb out of the staging folder.
        dest = staging / check_relative_path(file.path, f"file {file.path!r} of {label}")
        sha256 = _reuse(store, known, file, dest)
        if sha256 is not None:
            on_bytes(file.size)
        else:
            with cancelling(cancel):
                sha256 = hub.fetch_file(resolved, file, dest, on_bytes)
        return ManifestFile(path=file.path, size=file.size, sha256=sha256, git_oid=file.git_oid)

    ok = False
    try:
        fetched = _run_all(fetch, resolved.files, file_concurrency, cancel)
        ok = True
    finally:
        listener.finish(label, ok)
    return fetched


def _run_all(
    fetch: Callable[[RemoteFile], ManifestFile],
    files: tuple[RemoteFile, ...],
    concurrency: int,
    cancel: Cancel,
) -> list[ManifestFile]:
    """Fetch the files, ``concurrency`` at once; on the first failure, or Ctrl-C, stop the rest."""
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="fetch") as pool:
        # Each file runs in a copy of our context, so progress listeners that rely on context
        # variables (Prefect's run context) still find them.
        futures = [pool.submit(contextvars.copy_context().run, fetch, f) for f in files]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            cancel.set("the pull was interrupted")
            raise
        if any(f.exception() is not None for f in done):
            cancel.set("another file of the model failed")
    return _results(futures)


def _results(futures: list[Future]) -> list[ManifestFile]:
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    # The file that failed first tells why, not the files stopped because of it.
    errors.sort(key=lambda e: isinstance(e, DownloadCancelled))
    if errors:
        raise errors[0]
    return [f.result() for f in futures]


def _known_files(store: ModelStore, resolved: ResolvedModel) -> dict[str, tuple[Path, str]]:
    """git blob ids of files in other stored revisions of the model: path and sha256."""
    known = {}
    ref = resolved.reference
    for stored in store.find(ref.hub, ref.id):
        for file in stored.manifest.files:
            if file.git_oid:
                known[file.git_oid] = (stored.path / file.path, file.sha256)
    return known


def _reuse(
    store: ModelStore, known: dict[str, tuple[Path, str]], file: RemoteFile, dest: Path
) -> str | None:
    """Link content the store already holds into ``dest``; its sha256, or None if absent."""
    if (
        file.sha256
        and store.blobs.has(file.sha256, file.size)
        and store.blobs.link_into(file.sha256, dest)
    ):
        return file.sha256
    if file.git_oid and file.git_oid in known:
        source, sha256 = known[file.git_oid]
        if store.blobs.link_into(sha256, dest):
            return sha256
        logger.debug("blob of %s is gone; fetching it again", source)
    return None


def _same_content(have: ManifestFile, want: RemoteFile) -> bool:
    if have.size != want.size:
        return False
    if want.sha256:
        return have.sha256 == want.sha256
    if want.git_oid and have.git_oid:
        return have.git_oid == want.git_oid
    return True


def _remember_name(store: ModelStore, resolved: ResolvedModel) -> None:
    ref = resolved.reference
    if ref.revision:
        store.set_ref(ref.hub, ref.id, ref.revision, resolved.revision)


def remove_models(
    store: ModelStore, registry: Registry, hub: str, model_id: str, revision: str | None = None
) -> list[StoredModel]:
    """Remove stored revisions of a model, then let its hub undo what it laid out for them."""
    removed = store.delete(hub, model_id, revision)
    try:
        plugin = registry.hub(hub)
    except ModelDownloadError:
        return removed  # a hub no longer installed laid nothing out that we could undo
    plugin.on_deleted(store)
    return removed
