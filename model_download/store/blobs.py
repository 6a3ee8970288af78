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

from model_download.store.disk import disk_errors

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
        with disk_errors(file, "store"):
            os.chmod(file, _READ_ONLY)
            blob = self.path(sha256)
            blob.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(file, blob)
            except FileExistsError:
                # Someone stored this content first (or concurrently): keep theirs, drop our copy.
                if not self.link_into(sha256, file):
                    # It vanished between the two calls (a concurrent release).
                    os.link(file, blob)

    def release(self, sha256: str) -> bool:
        """Remove the blob if no model links to it any more; True when removed.

        Checking the link count and then unlinking would race with a concurrent
        :meth:`link_into`, whose new link could land in between and lose its blob. So the blob
        is first renamed aside, which no link can follow, and only then judged: a link made
        before the rename shows in the count, and the blob goes back. (A link_into that comes
        during that short window finds no blob and reports so; the pull then fetches the file.)
        """
        blob = self.path(sha256)
        try:
            if blob.stat().st_nlink > 1:
                return False
            aside = blob.with_name(f".{blob.name}.{uuid.uuid4().hex}.release")
            os.rename(blob, aside)
        except FileNotFoundError:
            return False
        try:
            if os.stat(aside).st_nlink > 1:
                with contextlib.suppress(FileExistsError):
                    # A newer blob may already be there (adopted meanwhile): it serves as well.
                    os.link(aside, blob)
                return False
        finally:
            aside.unlink()
        with contextlib.suppress(OSError):
            blob.parent.rmdir()
        return True

    def release_inodes(self, inodes: set[tuple[int, int]]) -> None:
        """Release the blobs whose (device, inode) is in ``inodes``.

        For a folder whose manifest is lost, its files' inodes are the only way left to tell
        which content it used.
        """
        if not inodes:
            return
        for blob in self.root.glob("sha256/*/*"):
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(blob)
                if (info.st_dev, info.st_ino) in inodes and not blob.name.startswith("."):
                    self.release(blob.name)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
