"""File-system failures as the store's own error: which path, what went wrong, what to do."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

from model_download.errors import ModelDownloadError, StoreError

_FULL = "free some space, or set MODELS_DIR to a larger disk, then pull again (it resumes)"
_DENIED = "make it writable for this user, or set MODELS_DIR to a folder you own"
_REMEDIES = {
    errno.ENOSPC: f"the disk is full: {_FULL}",
    errno.EDQUOT: f"the disk quota is used up: {_FULL}",
    errno.EACCES: f"permission denied: {_DENIED}",
    errno.EPERM: f"operation not permitted: {_DENIED}",
    errno.EROFS: "the file system is read-only: set MODELS_DIR to a writable folder",
    errno.ENOTDIR: "a file stands where a folder should be: move it away or set MODELS_DIR to a "
    "folder",
    errno.EISDIR: "a folder stands where a file should be: move it away",
    errno.EEXIST: "a file stands where a folder should be: move it away or set MODELS_DIR to a "
    "folder",
    errno.EFBIG: "the file is larger than the file system, or this process's limit (ulimit -f), "
    "allows: raise the limit or set MODELS_DIR to another file system",
}


def disk_error(exc: OSError, path: Path | str, doing: str) -> StoreError:
    """A :class:`StoreError` for ``exc``, raised while trying to ``doing`` ``path``."""
    where = exc.filename or path
    remedy = _REMEDIES.get(
        exc.errno or 0,
        f"{exc.strerror or type(exc).__name__}: check the disk and MODELS_DIR, then try again",
    )
    return StoreError(f"cannot {doing} {where}: {remedy}.")


@contextlib.contextmanager
def disk_errors(path: Path | str, doing: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` of the block into :func:`disk_error`; our own errors pass through.

    Network errors (``ConnectionError``, ``TimeoutError``) pass through too: they are the
    transfer's to retry, not the disk's.
    """
    try:
        yield
    except (ModelDownloadError, ConnectionError, TimeoutError):
        raise
    except OSError as exc:
        raise disk_error(exc, path, doing) from exc
