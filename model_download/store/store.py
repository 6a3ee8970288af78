"""The model store: one folder per resolved model, published atomically, deduplicated.

Layout under the store root (``MODELS_DIR``)::

    <hub>/<model id>/<revision>/           the model's files and its manifest
                                           (.model-download.json); revision is immutable
    <hub>/<model id>/@<branch or tag>      symlink to the revision the name last resolved to
    .store/blobs/sha256/<xx>/<sha256>      every distinct content once; model files link here
    .store/staging/<hub>/<id>/<revision>/  work in progress, resumed by the next attempt
    .store/locks/<hub>/<id>/<revision>.lock  one download of a model at a time, across hosts
    .store/trash/                          folders on their way out

A model folder only ever appears by a rename of a complete, verified folder holding exactly the
files its manifest lists, so nobody can see half a model, nor a stray file. A folder whose
manifest cannot be read is corrupt: it is listed apart, never served, and replaced by the next
pull. Names with characters unsafe in paths (``refs/pr/1``) are %-quoted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from model_download.cancel import Cancel
from model_download.errors import ModelNotInStoreError
from model_download.refs import check_relative_path
from model_download.store.blobs import BlobStore, sha256_of
from model_download.store.disk import disk_errors
from model_download.store.exports import check_export_path
from model_download.store.folders import (
    META,
    REF_PREFIX,
    CorruptModel,
    StoredModel,
    check_root,
    corrupt_model,
    inodes_under,
    scan,
    unlisted_files,
)
from model_download.store.lock import StoreLock
from model_download.store.manifest import Manifest, read_manifest, write_manifest

__all__ = ["CorruptModel", "ModelStore", "StoredModel", "check_export_path"]

logger = logging.getLogger(__name__)

# Where a model's folder is put together, from its listed files only, before it is published.
_OUTGOING = ".outgoing"


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
        self.blobs = BlobStore(self.root / META / "blobs")
        self.lock_stale_after = lock_stale_after
        self.lock_timeout = lock_timeout

    # -- where things are ------------------------------------------------------------------

    def model_dir(self, hub: str, model_id: str, revision: str) -> Path:
        return self.root / hub / model_id / _quote(revision)

    def staging_dir(self, hub: str, model_id: str, revision: str) -> Path:
        return self.root / META / "staging" / hub / model_id / _quote(revision)

    def check_root(self) -> None:
        """Raise :class:`StoreError` when the store's folder cannot exist (a file is in the way)."""
        check_root(self.root)

    @contextlib.contextmanager
    def locked(
        self, hub: str, model_id: str, revision: str, cancel: Cancel | None = None
    ) -> Iterator[StoreLock]:
        """Hold the lock of one resolved model: one download or removal of it at a time.

        Setting ``cancel`` ends a wait for another process's lock (``DownloadCancelled``).
        """
        self.check_root()
        path = self.root / META / "locks" / hub / model_id / f"{_quote(revision)}.lock"
        lock = StoreLock(path, stale_after=self.lock_stale_after)
        with disk_errors(path, "create the lock"):
            lock.acquire(timeout=self.lock_timeout, cancel=cancel)
        try:
            yield lock
        finally:
            lock.release()

    # -- reading ---------------------------------------------------------------------------

    def get(self, hub: str, model_id: str, revision: str) -> StoredModel | None:
        """The stored model at exactly this resolved revision, if present and readable.

        A folder whose manifest cannot be read is no model (:meth:`corrupt` lists it): a pull
        of that revision replaces it.
        """
        folder = self.model_dir(hub, model_id, revision)
        try:
            return StoredModel(path=folder, manifest=read_manifest(folder))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            self.check_root()  # MODELS_DIR itself is blocked: say so
            return None
        except (OSError, ValueError) as exc:
            logger.debug("%s", corrupt_model(self.root, folder, exc).message)
            return None

    def resolve_ref(self, hub: str, model_id: str, name: str) -> str | None:
        """The revision a branch or tag last resolved to in this store."""
        link = self.root / hub / model_id / f"{REF_PREFIX}{_quote(name)}"
        try:
            return unquote(os.readlink(link))
        except (FileNotFoundError, OSError):
            return None

    def find(self, hub: str, model_id: str, revision: str | None = None) -> list[StoredModel]:
        """Stored models of ``hub:model_id``: all revisions, or the one ``revision`` names.

        ``revision`` may be the resolved revision itself or a branch or tag pulled before.
        """
        if revision is None:
            models, _ = scan(self.root, self.root / hub / model_id)
            return sorted(
                (m for m in models if m.manifest.hub == hub and m.manifest.id == model_id),
                key=lambda m: m.manifest.revision,
            )
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
        """Every stored model, sorted by name (corrupt ones are in :meth:`corrupt`)."""
        found, _ = scan(self.root, self.root)
        return sorted(found, key=lambda m: (m.manifest.hub, m.manifest.id, m.manifest.revision))

    def corrupt(
        self, hub: str | None = None, model_id: str | None = None, revision: str | None = None
    ) -> list[CorruptModel]:
        """Model folders whose manifest cannot be read: all, or those of one model (revision).

        ``revision`` may be the folder's revision or a branch or tag that points at it.
        """
        base = self.root / hub / model_id if hub and model_id else self.root
        _, found = scan(self.root, base)
        if hub and model_id:
            found = [c for c in found if c.hub == hub and c.id == model_id]
        if revision is not None:
            wanted = {revision, self.resolve_ref(hub or "", model_id or "", revision)}
            found = [c for c in found if c.revision in wanted]
        return sorted(found, key=lambda c: c.name)

    # -- writing ---------------------------------------------------------------------------

    def publish(self, staging: Path, manifest: Manifest) -> StoredModel:
        """Put the staged files ``manifest`` lists into place, as one folder, by one rename.

        Only the listed files move: anything else in ``staging`` (a partial file of an earlier,
        interrupted pull) stays there for a later pull, and is never published. Files of an
        earlier download of the same revision that the new one did not fetch are kept, so pulls
        with different patterns add up; a corrupt folder of that revision is replaced. The
        caller holds the model's lock.
        """
        final = self.model_dir(manifest.hub, manifest.id, manifest.revision)
        with disk_errors(final, "publish"):
            outgoing = self._gather(staging, manifest)
            try:
                published = self._put_in_place(outgoing, final, manifest)
            except BaseException:
                self._ungather(outgoing, staging, manifest)
                raise
            self._tidy_staging(staging)
        for name in published.requested_revisions:
            self.set_ref(published.hub, published.id, name, published.revision)
        return StoredModel(path=final, manifest=published)

    def _put_in_place(self, outgoing: Path, final: Path, manifest: Manifest) -> Manifest:
        previous = self.get(manifest.hub, manifest.id, manifest.revision)
        if previous is not None:
            manifest = _merge_into(previous, outgoing, manifest)
        write_manifest(outgoing, manifest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if previous is not None:
            # Two renames, so the folder is briefly absent; it is never half there.
            self._discard(final)
        elif os.path.lexists(final):
            # There but unreadable (corrupt): replace it, and free the content only it held.
            logger.warning("replacing %s, whose manifest cannot be read", final)
            self._discard_unknown(final)
        os.rename(outgoing, final)
        return manifest

    def _gather(self, staging: Path, manifest: Manifest) -> Path:
        """Move the files ``manifest`` lists from ``staging`` into a new folder of their own."""
        outgoing = self.root / META / "staging" / _OUTGOING / uuid.uuid4().hex
        outgoing.mkdir(parents=True)
        moved = []
        try:
            for file in manifest.files:
                relative = check_relative_path(file.path, f"file {file.path!r} of the manifest")
                (outgoing / relative).parent.mkdir(parents=True, exist_ok=True)
                os.rename(staging / relative, outgoing / relative)
                moved.append(file)
        except BaseException:
            self._ungather(outgoing, staging, manifest.model_copy(update={"files": moved}))
            raise
        return outgoing

    def _ungather(self, outgoing: Path, staging: Path, manifest: Manifest) -> None:
        """Undo :meth:`_gather` as far as possible, so the next attempt finds its files."""
        for file in manifest.files:
            with contextlib.suppress(OSError):
                (staging / file.path).parent.mkdir(parents=True, exist_ok=True)
                os.rename(outgoing / file.path, staging / file.path)
        shutil.rmtree(outgoing, ignore_errors=True)

    def _tidy_staging(self, staging: Path) -> None:
        # Partial files left for a later pull keep the folder; with none, it goes.
        if staging.is_dir() and not any(not p.is_dir() for p in staging.rglob("*")):
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty_parents(staging.parent, stop=self.root / META / "staging")

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
        link = folder / f"{REF_PREFIX}{_quote(name)}"
        tmp = folder / f".{uuid.uuid4().hex}.ref"
        with disk_errors(link, "point a branch or tag at its revision:"):
            os.symlink(_quote(revision), tmp)
            os.replace(tmp, link)

    def delete(self, hub: str, model_id: str, revision: str | None = None) -> list[StoredModel]:
        """Remove stored revisions of a model and any content no other model uses.

        Corrupt folders of those revisions (see :meth:`corrupt`) go too; the stored models
        removed are returned.
        """
        found = self.find(hub, model_id, revision)
        broken = self.corrupt(hub, model_id, revision)
        if not found and not broken:
            self.require(hub, model_id, revision)  # raises, saying how to get the model
        with disk_errors(self.root / hub / model_id, "remove"):
            for stored in found:
                rev = stored.manifest.revision
                with self.locked(hub, model_id, rev):
                    self._discard(stored.path)
                    self._drop_refs_to(hub, model_id, rev)
                    for file in stored.manifest.files:
                        self.blobs.release(file.sha256)
            for bad in broken:
                with self.locked(hub, model_id, bad.revision):
                    self._discard_unknown(bad.path)
                    self._drop_refs_to(hub, model_id, bad.revision)
            _remove_empty_parents(self.root / hub / model_id, stop=self.root)
        return found

    def export(self, stored: StoredModel, folder: str) -> Path:
        """Place ``stored``'s files (links, not copies) at ``<root>/<folder>/<hub>/<id>``.

        The folder appears whole, by a rename, and replaces an earlier export of that model.
        """
        relative = check_export_path(folder)
        man = stored.manifest
        target = self.root / relative / man.hub / man.id
        staging = self.root / META / "staging" / "exports" / uuid.uuid4().hex
        with disk_errors(target, "export to"):
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
        """Re-hash every file of ``stored`` against its manifest; return the problems found.

        A file in the folder that the manifest does not list is a problem too: nothing the
        manifest cannot vouch for may pass as part of the model.
        """
        problems = [f"{path}: not listed in the manifest" for path in unlisted_files(stored)]
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
        trash = self.root / META / "trash" / uuid.uuid4().hex
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, trash)
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)

    def _discard_unknown(self, folder: Path) -> None:
        """Discard a folder with no readable manifest, and the blobs only its files used."""
        inodes = inodes_under(folder) if folder.is_dir() and not folder.is_symlink() else set()
        self._discard(folder)
        self.blobs.release_inodes(inodes)

    def _drop_refs_to(self, hub: str, model_id: str, revision: str) -> None:
        folder = self.root / hub / model_id
        for link in folder.glob(f"{REF_PREFIX}*"):
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
            "updated_at": manifest.created_at,
            "extra": {**previous.manifest.extra, **manifest.extra},
        }
    )


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        with contextlib.suppress(OSError):
            # Dangling ref links are all that may remain once every revision is gone.
            for link in folder.glob(f"{REF_PREFIX}*"):
                if link.is_symlink() and not link.exists():
                    link.unlink()
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _quote(name: str) -> str:
    return quote(name, safe="")
