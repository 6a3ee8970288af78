"""Reading model folders: the models they hold, the ones whose manifest cannot be read.

Used by :mod:`model_download.store.store`; a folder's layout is described there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from pydantic import BaseModel

from model_download.errors import StoreError
from model_download.store.manifest import MANIFEST_NAME, Manifest, read_manifest

#: The store's own folder at its root, and the mark of a branch or tag link.
META = ".store"
REF_PREFIX = "@"


class StoredModel(BaseModel):
    """A model in the store: its folder and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        m = self.manifest
        return f"{m.hub}:{m.id}@{m.revision}"


class CorruptModel(BaseModel):
    """A model folder whose manifest cannot be read: nothing in it can be trusted."""

    path: Path
    hub: str
    id: str
    revision: str
    reason: str

    @property
    def name(self) -> str:
        return f"{self.hub}:{self.id}@{self.revision}"

    @property
    def message(self) -> str:
        return (
            f"{self.name} at {self.path} is corrupt: its manifest cannot be read "
            f"({self.reason}). Remove it (model-download rm {self.name}), then pull it again."
        )


def scan(root: Path, base: Path) -> tuple[list[StoredModel], list[CorruptModel]]:
    """The models under ``base`` (``root`` or a folder in it), readable and corrupt."""
    models, corrupt = [], []
    for manifest_path in _manifests(root, base):
        folder = manifest_path.parent
        try:
            models.append(StoredModel(path=folder, manifest=read_manifest(folder)))
        except FileNotFoundError:
            continue  # removed while we looked
        except (OSError, ValueError) as exc:
            corrupt.append(corrupt_model(root, folder, exc))
    return models, corrupt


def corrupt_model(root: Path, folder: Path, exc: Exception) -> CorruptModel:
    """Describe ``folder`` (``<root>/<hub>/<id>/<revision>``), whose manifest raised ``exc``."""
    parts = folder.relative_to(root).parts
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        first = errors()[0]  # pydantic: the first problem is enough to say why
        reason = f"{first.get('type')}: {first.get('msg')}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return CorruptModel(
        path=folder,
        hub=parts[0],
        id="/".join(parts[1:-1]),
        revision=unquote(parts[-1]),
        reason=reason,
    )


def _manifests(root: Path, base: Path) -> Iterator[Path]:
    if not base.is_dir():
        if base == root:
            check_root(root)
        return
    for top, dirs, files in os.walk(base):
        if Path(top) == root:
            dirs[:] = [d for d in dirs if d != META]
        if MANIFEST_NAME in files:
            dirs.clear()  # a model folder holds no other model
            yield Path(top) / MANIFEST_NAME
        dirs[:] = [d for d in dirs if not d.startswith(REF_PREFIX)]


def check_root(root: Path) -> None:
    """Raise :class:`StoreError` when a file stands where the store's folder must be."""
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                raise StoreError(
                    f"MODELS_DIR {root} cannot be a folder: {folder} is a file. Set MODELS_DIR "
                    f"to a folder (it is created when missing), or move {folder} away."
                )
            return


def unlisted_files(stored: StoredModel) -> list[str]:
    """Files in ``stored``'s folder that its manifest does not list (the manifest aside)."""
    listed = {f.path for f in stored.manifest.files}
    extra = []
    for top, dirs, files in os.walk(stored.path):
        relative = Path(top).relative_to(stored.path)
        # A link to a folder is an entry of its own; walking into it would list another place.
        links = [d for d in dirs if (Path(top) / d).is_symlink()]
        for name in (*files, *links):
            path = (relative / name).as_posix()
            if relative == Path(".") and name.startswith(MANIFEST_NAME):
                continue  # the manifest, or the temporary file of its atomic rewrite
            if path not in listed:
                extra.append(path)
    return sorted(extra)


def inodes_under(folder: Path) -> set[tuple[int, int]]:
    """The (device, inode) of every regular file under ``folder``, to find their blobs."""
    found = set()
    for top, _dirs, files in os.walk(folder):
        for name in files:
            info = os.lstat(Path(top) / name)
            found.add((info.st_dev, info.st_ino))
    return found
