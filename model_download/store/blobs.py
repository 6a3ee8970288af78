"""Content-addressed blobs: each distinct file content is kept once, by its sha256.

Model folders hold hard links to the blobs, not symlinks: a model folder mounted alone into a
container (an OpenVINO Model Server, say) still has real files, and the file system counts the
references for us. A blob whose link count has fallen to one is used by no model any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import uuid
from pathlib import Path

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


class BlobStore:
    """The blob area of a store, at ``root`` (``<store>/.store/blobs``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str, size: int | None = None) -> bool:
        try:
            info = self.path(sha256).stat()
        except FileNotFoundError:
            return False
        return size is None or info.st_size == size

    def link_into(self, sha256: str, dest: Path) -> bool:
        """Put the blob at ``dest`` as a hard link; False when the blob is not there."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.link")
        try:
            os.link(self.path(sha256), tmp)
        except FileNotFoundError:
            return False
        os.replace(tmp, dest)
        # Renaming a link over another link to the same file does nothing: drop ours.
        tmp.unlink(missing_ok=True)
        return True

    def adopt(self, sha256: str, file: Path) -> None:
        """Make ``file`` (already verified to hash to ``sha256``) share the blob's storage.

        When the blob exists, ``file`` is replaced by a link to it, freeing its own copy;
        otherwise ``file`` becomes the blob.
        """
        os.chmod(file, _READ_ONLY)
        blob = self.path(sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, blob)
        except FileExistsError:
            # Someone stored this content first (or concurrently): keep theirs, drop our copy.
            if not self.link_into(sha256, file):
                # It vanished between the two calls (a concurrent garbage collection).
                os.link(file, blob)

    def release(self, sha256: str) -> bool:
        """Remove the blob if no model links to it any more; True when removed."""
        blob = self.path(sha256)
        try:
            if blob.stat().st_nlink > 1:
                return False
            blob.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):
            blob.parent.rmdir()
        return True


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
