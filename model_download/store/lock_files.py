"""The lock file itself: reading its record, and taking a judged file out of the way safely.

Used by :mod:`model_download.store.lock`; see there for why the lock is a plain file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# A lock record is a few hundred bytes; anything longer is not one of ours.
_MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Snapshot:
    """What one open() of the lock file showed: the record (None if unreadable) and its inode."""

    record: dict[str, Any] | None
    ino: int
    mtime_ns: int

    @property
    def token(self) -> str | None:
        return self.record.get("token") if self.record is not None else None

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


def _parse_record(data: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("token"), str):
        return None
    return record


def snapshot_fd(fd: int) -> Snapshot:
    st = os.fstat(fd)
    data = os.read(fd, _MAX_RECORD_BYTES)
    return Snapshot(_parse_record(data), st.st_ino, st.st_mtime_ns)


def snapshot(path: Path) -> Snapshot | None:
    """Read the lock file, or return None if there is none.

    The record and the mtime come from one open file descriptor so that they describe the same
    file even if the lock is replaced meanwhile; opening also makes an NFS client revalidate its
    cached attributes (close-to-open consistency), which a bare stat() may not.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return snapshot_fd(fd)
    except OSError as exc:
        # On NFS a file deleted by another client after our open() reads as a stale handle.
        if exc.errno == errno.ESTALE:
            return None
        raise
    finally:
        os.close(fd)


def describe(record: dict[str, Any] | None) -> str:
    if record is None:
        return "an unknown holder (unreadable lock file)"
    return f"pid {record.get('pid')} on host {record.get('host')!r}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        # PermissionError: the process exists but belongs to someone else. Anything else: we
        # cannot tell, and wrongly calling a holder dead is worse than waiting for the mtime.
        return True
    return True


def _same_lock(seen: Snapshot, judged: Snapshot) -> bool:
    if judged.token is not None:
        return seen.token == judged.token
    # An unreadable file has no token; its inode and mtime identify it instead. The mtime
    # matters because inode numbers are reused once the file they belonged to is deleted.
    return seen.token is None and seen.ino == judged.ino and seen.mtime_ns == judged.mtime_ns


def _put_back(aside: Path, path: Path, seen: Snapshot) -> None:
    """Restore a lock file that was renamed away by mistake, unless a newer lock exists."""
    try:
        # link() creates `path` atomically and fails if it exists, unlike rename(), which would
        # silently replace a lock created in the meantime.
        os.link(aside, path)
        return
    except FileExistsError:
        # Someone saw no lock during our rename window and took a fresh one. There can only be
        # one file at `path`, and the fresh one is what everybody else now sees, so it wins.
        # The holder of the file we moved loses its lock: its heartbeat stops refreshing a
        # foreign token, its release() leaves the newcomer's file alone, and its is_held()
        # check before publishing tells it to back off. The cost is a duplicate download, not a
        # corrupted store.
        logger.warning(
            "Lock %s was replaced while being restored; its holder %s has lost it",
            path,
            describe(seen.record),
        )
        return
    except OSError:
        pass
    # Some filesystems (e.g. SMB mounts without unix extensions) have no hard links. Recreating
    # the file exclusively keeps the "fails if a newer lock exists" property. Holders identify
    # their lock by token, so the copy still counts as theirs; its fresh mtime at worst keeps a
    # dead holder's lock alive for one more stale_after.
    try:
        data = aside.read_bytes()
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        logger.warning("Lock %s was replaced while being restored", path)
        return
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def remove_if_same(path: Path, judged: Snapshot) -> bool:
    """Remove the lock file at `path` if it is still the one that was judged, race-free.

    Reading the file and then unlinking it would delete whatever is there by the time of the
    unlink, possibly a lock that another waiter just created after breaking the same stale lock.
    rename() takes exactly one file out of the way atomically; only then is it safe to look at
    what was taken.

    Returns:
        True if the judged lock file was removed, False if it was gone or had been replaced.
    """
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        seen = snapshot(aside)
        if seen is not None and _same_lock(seen, judged):
            return True
        if seen is not None:
            _put_back(aside, path, seen)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
