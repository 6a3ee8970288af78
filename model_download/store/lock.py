"""Inter-process, inter-host lock on a path in the model store.

Two processes, possibly on two machines sharing the store over NFS, that ask for the same model
must download it once: the first takes the lock and downloads, the second waits and then reuses
the result.

Why neither ``flock``/``fcntl`` nor the ``filelock`` package:

* ``flock`` on NFS is either local to the client (older Linux kernels, ``local_lock=`` mounts) or
  emulated with POSIX byte-range locks through the NFS lock manager, whose state is lost or
  silently not enforced when ``lockd``/``statd`` is missing, blocked by a firewall, or the
  server restarts. Such a lock can report success to two hosts at once, and nothing on disk
  shows it.
* ``filelock``'s ``SoftFileLock`` does use exclusive creation, but its lock file carries no
  owner and is never refreshed, so a lock left by a crashed process blocks every waiter
  forever; there is no way to tell a dead holder from a slow one.

So the lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on
NFSv3+), holding a JSON record of who owns it. The holder refreshes its mtime from a heartbeat
thread, and waiters break a lock whose holder is provably dead (same host, process gone) or
whose heartbeat stopped for ``stale_after`` seconds. Judging the heartbeat compares the file's
mtime (set by the file server) with the waiter's clock, so hosts sharing a store need clocks
that agree to well within ``stale_after`` (NTP is plenty).

A holder that was frozen for longer than ``stale_after`` (a suspended VM, a laptop that slept)
can lose its lock to a waiter without noticing; that is why holders should call
:meth:`StoreLock.is_held` right before publishing anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from model_download.cancel import Cancel
from model_download.errors import LockTimeout
from model_download.store.lock_files import (
    Snapshot,
    describe,
    pid_alive,
    remove_if_same,
    snapshot,
    snapshot_fd,
)

logger = logging.getLogger(__name__)

_MAX_POLL_DELAY = 1.0


def _pid_namespace() -> str | None:
    # Containers using the host's network also share its hostname while having their own pid
    # numbering, so "same hostname" alone does not mean a pid in the record is meaningful here.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


# A waiter judging the lock renames it aside for a moment (lock_files.remove_if_same) and puts
# it back when it is not stale: a missing file is looked for again this often, this many times,
# before the beat waits for its next turn.
_MISSING_RETRIES = (0.02, 0.05, 0.1, 0.2, 0.4)
# Beats in a row that find no lock file before the heartbeat gives up on it.
_MISSING_BEATS = 4


def _open_lock(path: Path, stop: threading.Event) -> int | None:
    """Open the lock file, looking again through a waiter's rename window; None if absent."""
    for delay in (*_MISSING_RETRIES, None):
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if delay is None or stop.wait(delay):
                return None
    return None


def _heartbeat(path: Path, token: str, interval: float, stop: threading.Event) -> None:
    missing = 0
    while not stop.wait(interval):
        if missing >= _MISSING_BEATS:
            logger.warning("Lock %s disappeared while held; it was probably broken", path)
            return
        try:
            fd = _open_lock(path, stop)
        except OSError as exc:
            # A transient network filesystem error must not end the heartbeat: the lock would
            # then go stale under a live holder.
            logger.warning("Could not refresh lock %s: %s", path, exc)
            continue
        if fd is None:
            missing += 1
            continue
        try:
            seen = snapshot_fd(fd)
            if seen.token is None:
                # Empty or half-written: a waiter putting it back by copy (lock_files._put_back)
                # writes it after creating it. Not someone else's yet: look again next beat.
                missing += 1
                continue
            missing = 0
            if seen.token != token:
                # Refreshing another holder's lock would keep it alive after that holder died.
                logger.warning("Lock %s now belongs to %s; lost it", path, describe(seen.record))
                return
            # Through the descriptor, so that the file touched is the one whose token was read.
            os.utime(fd if os.utime in os.supports_fd else path)
        except OSError as exc:
            logger.warning("Could not refresh lock %s: %s", path, exc)
        finally:
            os.close(fd)


class StoreLock:
    """An exclusive lock on a path in the model store, safe across processes and hosts.

    The lock is the file at ``path``; it is not re-entrant. Typical use::

        lock = StoreLock(store / "locks" / f"{model_id}.lock")
        with lock:
            if lock.waited and already_in_store(model_id):
                return  # another process downloaded it while we waited
            download(model_id)
            if not lock.is_held():
                raise RuntimeError("lost the store lock; not publishing")
            publish(model_id)

    Attributes:
        path: The lock file.
        stale_after: Seconds without a heartbeat after which a lock is considered abandoned.
        heartbeat: Seconds between two refreshes of the lock file's mtime while held.
        poll_interval: Initial delay between two attempts while waiting; it grows up to 1 s.
        waited: Whether the last acquisition found the lock held by someone else (who either
            released it or was found dead), i.e. the result it was guarding may now exist.
    """

    def __init__(
        self,
        path: Path,
        *,
        stale_after: float = 60.0,
        heartbeat: float | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        """Create a lock object; nothing touches the filesystem until :meth:`acquire`.

        Args:
            path: The lock file to create. Its parent directory is created on acquisition.
            stale_after: Seconds after which a lock whose mtime has not been refreshed is
                broken by waiters. Must exceed any expected freeze of a live holder.
            heartbeat: Seconds between refreshes while held; defaults to ``stale_after / 4``.
            poll_interval: Initial delay between attempts while waiting.

        Raises:
            ValueError: If a duration is not positive or ``heartbeat`` is not shorter than
                ``stale_after``.
        """
        if stale_after <= 0:
            raise ValueError(f"stale_after must be positive, got {stale_after}")
        if heartbeat is None:
            heartbeat = stale_after / 4
        if not 0 < heartbeat < stale_after:
            raise ValueError(
                f"heartbeat must be positive and shorter than stale_after ({stale_after}), "
                f"got {heartbeat}"
            )
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.path = Path(path)
        self.stale_after = float(stale_after)
        self.heartbeat = float(heartbeat)
        self.poll_interval = float(poll_interval)
        self.waited = False
        self._token: str | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "held" if self._token is not None else "not held"
        return f"{type(self).__name__}({str(self.path)!r}, {state})"

    @property
    def holder(self) -> dict[str, Any] | None:
        """The record in the current lock file (token, host, pid, ...), or None.

        None when there is no lock file or it cannot be parsed (e.g. half-written).
        """
        seen = snapshot(self.path)
        return seen.record if seen is not None else None

    def acquire(self, timeout: float | None = None, cancel: Cancel | None = None) -> None:
        """Take the lock, waiting for the current holder and breaking stale locks.

        Args:
            timeout: Seconds to wait at most; None waits indefinitely, 0 tries once.
            cancel: Stops the wait when set (Ctrl-C), raising ``DownloadCancelled``.

        Raises:
            RuntimeError: If this object already holds the lock.
            LockTimeout: If the lock is still held by someone else when the timeout passes.
            DownloadCancelled: If ``cancel`` was set while waiting.
        """
        if self._token is not None:
            raise RuntimeError(f"{self.path} is already held by this StoreLock (not re-entrant)")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        delay = self.poll_interval
        self.waited = False
        announced = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            if self._try_create():
                return
            seen = snapshot(self.path)
            if seen is None:
                # Released between our attempt and our look: retry at once.
                continue
            self.waited = True
            if self._break_if_stale(seen):
                continue
            if not announced:
                logger.info("Lock %s is held by %s; waiting", self.path, describe(seen.record))
                announced = True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise LockTimeout(
                    f"Timed out after {timeout} s waiting for lock {self.path}, "
                    f"held by {describe(seen.record)}",
                    path=self.path,
                    holder=seen.record,
                )
            pause = delay if deadline is None else min(delay, deadline - now)
            if cancel is None:
                time.sleep(pause)
            elif cancel.wait(pause):
                cancel.check(f"the wait for lock {self.path}")
            delay = min(delay * 2, max(_MAX_POLL_DELAY, self.poll_interval))

    def release(self) -> None:
        """Release the lock; does nothing if it is not held.

        The lock file is removed only if it still carries this holder's token, so a holder whose
        lock was broken never deletes the lock of whoever took over.
        """
        token = self._token
        if token is None:
            return
        self._token = None
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stop = self._thread = None
        seen = snapshot(self.path)
        if seen is None or seen.token != token:
            logger.warning(
                "Lock %s was lost while held (now held by %s); leaving it alone",
                self.path,
                "nobody" if seen is None else describe(seen.record),
            )
            return
        remove_if_same(self.path, seen)

    def is_held(self) -> bool:
        """Tell whether the lock file still exists and carries this holder's token.

        Call it right before publishing: it is False if the lock was broken behind this
        holder's back (e.g. the machine slept past ``stale_after``).
        """
        if self._token is None:
            return False
        seen = snapshot(self.path)
        return seen is not None and seen.token == self._token

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        token = uuid.uuid4().hex
        record = {
            "token": token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_ns": _pid_namespace(),
            "created": time.time(),
        }
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            stop = threading.Event()
            thread = threading.Thread(
                target=_heartbeat,
                args=(self.path, token, self.heartbeat, stop),
                name=f"store-lock-heartbeat:{self.path.name}",
                daemon=True,
            )
            thread.start()
        except BaseException:
            # Nobody else can own the file yet: we created it exclusively and it is not stale.
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        self._token, self._stop, self._thread = token, stop, thread
        logger.debug("Acquired lock %s", self.path)
        return True

    def _stale_reason(self, seen: Snapshot) -> str | None:
        record = seen.record
        if (
            record is not None
            and record.get("host") == socket.gethostname()
            and record.get("pid_ns") == _pid_namespace()
        ):
            pid = record.get("pid")
            # pid <= 0 would make os.kill signal process groups, so such a record proves nothing.
            if isinstance(pid, int) and pid > 0 and not pid_alive(pid):
                return "its process no longer exists"
        age = time.time() - seen.mtime
        if age > self.stale_after:
            return f"it was last refreshed {age:.1f} s ago (stale after {self.stale_after} s)"
        return None

    def _break_if_stale(self, seen: Snapshot) -> bool:
        reason = self._stale_reason(seen)
        if reason is None:
            return False
        if not remove_if_same(self.path, seen):
            # Someone else broke or released it first; the caller simply tries again.
            return True
        logger.warning(
            "Broke stale lock %s held by %s: %s", self.path, describe(seen.record), reason
        )
        return True
