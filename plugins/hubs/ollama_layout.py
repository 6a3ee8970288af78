"""One ``OLLAMA_MODELS`` directory for every Ollama model in the store, made of links.

A stored Ollama model keeps Ollama's own paths (``manifests/<host>/<ns>/<model>/<tag>``,
``blobs/sha256-<hex>``), so linking each model's files under one folder gives a directory that
``OLLAMA_MODELS=<folder> ollama serve`` reads as its own: no second download, no copy. Hard links,
like the store's own, so the folder still works when mounted alone into a container.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from pathlib import Path

from model_download.store.blobs import sha256_of
from model_download.store.store import ModelStore, StoredModel
from plugins.hubs.ollama_registry import manifest_blobs

logger = logging.getLogger(__name__)


def link_model(stored: StoredModel, shared: Path) -> None:
    """Link ``stored``'s blobs, then its manifests, into ``shared``; idempotent.

    A manifest whose blobs the model lacks (a pull narrowed by include patterns) is left out:
    Ollama would list a model it cannot load.
    """
    paths = {file.path for file in stored.manifest.files}
    # Blobs first: Ollama must never find a manifest whose blobs are not there yet.
    for path in sorted(paths, key=lambda p: not p.startswith("blobs/")):
        if path.startswith("manifests/"):
            needed = manifest_blobs((stored.path / path).read_bytes())
            if any(f"blobs/sha256-{hex_digest}" not in paths for hex_digest in needed):
                logger.warning(
                    "%s lacks blobs its manifest names: it is not laid out in %s",
                    stored.name,
                    shared,
                )
                continue
        _link(stored.path / path, shared / path)


def prune(store: ModelStore, shared: Path, hub: str) -> list[str]:
    """Unlink from ``shared`` what no stored model of ``hub`` holds any more; free its blobs.

    Only links to the store's blobs are touched: models Ollama pulled there itself stay.

    Returns:
        The paths removed, relative to ``shared``.
    """
    kept = {
        (file.path, file.sha256)
        for stored in store.list()
        if stored.manifest.hub == hub
        for file in stored.manifest.files
    }
    removed = []
    for path in sorted(p for p in shared.glob("manifests/**/*") if p.is_file()):
        relative, digest = path.relative_to(shared).as_posix(), sha256_of(path)
        if (relative, digest) not in kept and _ours(store, path, digest):
            path.unlink()
            store.blobs.release(digest)
            removed.append(relative)
    named = {
        hex_digest
        for path in shared.glob("manifests/**/*")
        if path.is_file()
        for hex_digest in manifest_blobs(path.read_bytes())
    }
    for path in sorted(shared.glob("blobs/sha256-*")):
        hex_digest = path.name.removeprefix("sha256-")
        if hex_digest not in named and _ours(store, path, hex_digest):
            path.unlink()
            store.blobs.release(hex_digest)
            removed.append(path.relative_to(shared).as_posix())
    return removed


def write_atomically(dest: Path, data: bytes, *, fsync: bool) -> None:
    """Write ``data`` to ``dest`` so that readers see the old file or the whole new one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, dest)


def _link(source: Path, dest: Path) -> None:
    """Make ``dest`` a link to ``source``, atomically replacing what was there."""
    try:
        if os.path.samefile(source, dest):
            return
    except FileNotFoundError:
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.link")
    try:
        os.link(source, tmp)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        # Another file system, or one without hard links: a symlink still avoids a copy.
        os.symlink(source.resolve(), tmp)
    os.replace(tmp, dest)


def _ours(store: ModelStore, path: Path, hex_digest: str) -> bool:
    """Whether ``path`` is a link to the store's blob of that content."""
    try:
        return os.path.samefile(path, store.blobs.path(hex_digest))
    except FileNotFoundError:
        return False
