"""The model store: one folder per resolved model, published atomically, deduplicated.

Layout under the store root (``MODELS_DIR``)::

    <hub>/<model id>/<revision>/           the model's files and its manifest
                                           (.model-download.json); revision is immutable
    <hub>/<model id>/@<branch or tag>      symlink to the revision the name last resolved to
    .store/blobs/sha256/<xx>/<sha256>      every distinct content once; model files link here
    .store/staging/<hub>/<id>/<revision>/  work in progress, resumed by the next attempt
    .store/locks/<hub>/<id>/<revision>.lock  one download of a model at a time, across hosts
    .store/trash/                          folders on their way out

A model folder only ever appears by a rename of a complete, verified staging folder, so nobody
can see half a model. Names with characters unsafe in paths (``refs/pr/1``) are %-quoted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from pydantic import BaseModel

from model_download.errors import InvalidReferenceError, ModelNotInStoreError
from model_download.refs import check_relative_path
from model_download.store.blobs import BlobStore, sha256_of
from model_download.store.lock import StoreLock
from model_download.store.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest

_META = ".store"
_REF_PREFIX = "@"


class StoredModel(BaseModel):
    """A model in the store: its folder and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        m = self.manifest
        return f"{m.hub}:{m.id}@{m.revision}"


class ModelStore:
    """A model store rooted at ``root``; safe to share between processes and hosts."""

    def __init__(
        self,
        root: Path,
        *,
        lock_stale_after: float = 60.0,
        lock_timeout: float | None = None,
    ) -> None:
        self.root = Path(root)
        self.blobs = BlobStore(self.root / _META / "blobs")
        self.lock_stale_after = lock_stale_after
        self.lock_timeout = lock_timeout

    # -- where things are ------------------------------------------------------------------

    def model_dir(self, hub: str, model_id: str, revision: str) -> Path:
        return self.root / hub / model_id / _quote(revision)

    def staging_dir(self, hub: str, model_id: str, revision: str) -> Path:
        return self.root / _META / "staging" / hub / model_id / _quote(revision)

    @contextlib.contextmanager
    def locked(self, hub: str, model_id: str, revision: str) -> Iterator[StoreLock]:
        """Hold the lock of one resolved model: one download or removal of it at a time."""
        path = self.root / _META / "locks" / hub / model_id / f"{_quote(revision)}.lock"
        lock = StoreLock(path, stale_after=self.lock_stale_after)
        lock.acquire(timeout=self.lock_timeout)
        try:
            yield lock
        finally:
            lock.release()

    # -- reading ---------------------------------------------------------------------------

    def get(self, hub: str, model_id: str, revision: str) -> StoredModel | None:
        """The stored model at exactly this resolved revision, if present."""
        folder = self.model_dir(hub, model_id, revision)
        try:
            return StoredModel(path=folder, manifest=read_manifest(folder))
        except FileNotFoundError:
            return None

    def resolve_ref(self, hub: str, model_id: str, name: str) -> str | None:
        """The revision a branch or tag last resolved to in this store."""
        link = self.root / hub / model_id / f"{_REF_PREFIX}{_quote(name)}"
        try:
            return unquote(os.readlink(link))
        except (FileNotFoundError, OSError):
            return None

    def find(self, hub: str, model_id: str, revision: str | None = None) -> list[StoredModel]:
        """Stored models of ``hub:model_id``: all revisions, or the one ``revision`` names.

        ``revision`` may be the resolved revision itself or a branch or tag pulled before.
        """
        if revision is None:
            return [m for m in self.list() if m.manifest.hub == hub and m.manifest.id == model_id]
        for candidate in (revision, self.resolve_ref(hub, model_id, revision)):
            if candidate and (stored := self.get(hub, model_id, candidate)):
                return [stored]
        return []

    def require(self, hub: str, model_id: str, revision: str | None = None) -> list[StoredModel]:
        """Like :meth:`find`, but an empty answer is an error that says how to get the model."""
        found = self.find(hub, model_id, revision)
        if not found:
            name = f"{hub}:{model_id}" + (f"@{revision}" if revision else "")
            raise ModelNotInStoreError(
                f"{name} is not in the store at {self.root}: pull it first "
                f"(model-download pull {name})."
            )
        return found

    def list(self) -> list[StoredModel]:
        """Every stored model, sorted by name."""
        found = []
        for manifest_path in self._manifests():
            with contextlib.suppress(FileNotFoundError, ValueError):
                folder = manifest_path.parent
                found.append(StoredModel(path=folder, manifest=read_manifest(folder)))
        return sorted(found, key=lambda m: (m.manifest.hub, m.manifest.id, m.manifest.revision))

    def _manifests(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for top, dirs, files in os.walk(self.root):
            if Path(top) == self.root:
                dirs[:] = [d for d in dirs if d != _META]
            if MANIFEST_NAME in files:
                dirs.clear()  # a model folder holds no other model
                yield Path(top) / MANIFEST_NAME
            dirs[:] = [d for d in dirs if not d.startswith(_REF_PREFIX)]

    # -- writing ---------------------------------------------------------------------------

    def publish(self, staging: Path, manifest: Manifest) -> StoredModel:
        """Move a complete, verified staging folder into place as ``manifest`` describes.

        Files of an earlier download of the same revision that the new one did not fetch are
        kept, so pulls with different patterns add up. The caller holds the model's lock.
        """
        final = self.model_dir(manifest.hub, manifest.id, manifest.revision)
        previous = self.get(manifest.hub, manifest.id, manifest.revision)
        if previous is not None:
            manifest = _merge_into(previous, staging, manifest)
        write_manifest(staging, manifest)

        final.parent.mkdir(parents=True, exist_ok=True)
        if previous is not None:
            # Two renames, so the folder is briefly absent; it is never half there.
            self._discard(final)
        os.rename(staging, final)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()
        for name in manifest.requested_revisions:
            self.set_ref(manifest.hub, manifest.id, name, manifest.revision)
        return StoredModel(path=final, manifest=manifest)

    def annotate(self, stored: StoredModel, key: str, value: Any) -> StoredModel:
        """Record ``value`` under ``key`` in a published model's manifest (a validation report).

        The files do not change; the manifest is replaced atomically, under the model's lock.
        """
        man = stored.manifest
        with self.locked(man.hub, man.id, man.revision):
            current = read_manifest(stored.path)
            updated = current.model_copy(update={"extra": {**current.extra, key: value}})
            write_manifest(stored.path, updated)
        return StoredModel(path=stored.path, manifest=updated)

    def set_ref(self, hub: str, model_id: str, name: str, revision: str) -> None:
        """Point the branch or tag ``name`` at ``revision`` (atomically replacing it)."""
        if name == revision:
            return
        folder = self.root / hub / model_id
        link = folder / f"{_REF_PREFIX}{_quote(name)}"
        tmp = folder / f".{uuid.uuid4().hex}.ref"
        os.symlink(_quote(revision), tmp)
        os.replace(tmp, link)

    def delete(self, hub: str, model_id: str, revision: str | None = None) -> list[StoredModel]:
        """Remove stored revisions of a model and any content no other model uses."""
        removed = []
        for stored in self.require(hub, model_id, revision):
            rev = stored.manifest.revision
            with self.locked(hub, model_id, rev):
                self._discard(stored.path)
                self._drop_refs_to(hub, model_id, rev)
                for file in stored.manifest.files:
                    self.blobs.release(file.sha256)
            removed.append(stored)
        _remove_empty_parents(self.root / hub / model_id, stop=self.root)
        return removed

    def export(self, stored: StoredModel, folder: str) -> Path:
        """Place ``stored``'s files (links, not copies) at ``<root>/<folder>/<hub>/<id>``.

        The folder appears whole, by a rename, and replaces an earlier export of that model.
        """
        relative = check_export_path(folder)
        man = stored.manifest
        target = self.root / relative / man.hub / man.id
        staging = self.root / _META / "staging" / "exports" / uuid.uuid4().hex
        for file in man.files:
            dest = staging / file.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(stored.path / file.path, dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self._discard(target)
        os.rename(staging, target)
        return target

    def verify(self, stored: StoredModel) -> list[str]:
        """Re-hash every file of ``stored`` against its manifest; return the problems found."""
        problems = []
        for file in stored.manifest.files:
            path = stored.path / file.path
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                problems.append(f"{file.path}: missing")
                continue
            if size != file.size:
                problems.append(f"{file.path}: {size} bytes, the manifest says {file.size}")
            elif (digest := sha256_of(path)) != file.sha256:
                problems.append(f"{file.path}: sha256 {digest}, the manifest says {file.sha256}")
        return problems

    def _discard(self, folder: Path) -> None:
        trash = self.root / _META / "trash" / uuid.uuid4().hex
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _drop_refs_to(self, hub: str, model_id: str, revision: str) -> None:
        folder = self.root / hub / model_id
        for link in folder.glob(f"{_REF_PREFIX}*"):
            with contextlib.suppress(OSError):
                if unquote(os.readlink(link)) == revision:
                    link.unlink()


def _merge_into(previous: StoredModel, staging: Path, manifest: Manifest) -> Manifest:
    """Link the previous download's other files into ``staging``; return the joint manifest."""
    fetched = {f.path for f in manifest.files}
    kept = [f for f in previous.manifest.files if f.path not in fetched]
    for file in kept:
        target = staging / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(previous.path / file.path, target)
    old, new = previous.manifest, manifest
    names = list(dict.fromkeys([*old.requested_revisions, *new.requested_revisions]))
    selections = [*old.selections, *(s for s in new.selections if s not in old.selections)]
    return manifest.model_copy(
        update={
            "files": sorted([*manifest.files, *kept], key=lambda f: f.path),
            "requested_revisions": names,
            "selections": selections,
            "created_at": previous.manifest.created_at,
            "extra": {**previous.manifest.extra, **manifest.extra},
        }
    )


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        with contextlib.suppress(OSError):
            # Dangling ref links are all that may remain once every revision is gone.
            for link in folder.glob(f"{_REF_PREFIX}*"):
                if link.is_symlink() and not link.exists():
                    link.unlink()
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _quote(name: str) -> str:
    return quote(name, safe="")


def check_export_path(folder: str) -> str:
    """A folder for exports: relative, inside the store, and clear of its own folders."""
    relative = check_relative_path(folder, "download_path")
    first = relative.split("/")[0]
    if first.startswith(".") or first in _RESERVED:
        raise InvalidReferenceError(
            f"download_path {folder!r} would mix with the store's own folders: use another name, "
            "e.g. 'exports/team-a'."
        )
    return relative


# Top-level folders of the store that an export must not land in.
_RESERVED = frozenset(
    {
        "huggingface",
        "openvino-ir",
        "ollama",
        "ollama-models",
        "ultralytics",
        "geti",
        "openvino",
        "ovms",
    }
)
