"""Fetch one large file as several byte ranges at once, each resumable, then verify the whole.

Why: one HTTP stream is often limited by the server or a CDN per connection, not by the link,
and a registry's multi-gigabyte blobs are where that hurts. Each part goes to its own file
(``.<name>.<start>-<end>.part`` beside ``dest``), so an interrupted download resumes every part
where it stopped; the parts are then joined into ``dest`` while hashing, which is the one read
the sha256 needs anyway.

A server that ignores ``Range`` (answers 200) gets the file over one stream instead, through
:func:`model_download.transfer.fetch_file`, as does a ``dest`` left by such a stream.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from model_download.cancel import Cancel, current
from model_download.errors import DownloadCancelled, IntegrityError, TransferError
from model_download.store.disk import disk_errors
from model_download.transfer import (
    RETRY_STATUSES,
    ByteCallback,
    HttpPool,
    ResponseCheck,
    fetch_file,
    start_writeback,
)

logger = logging.getLogger(__name__)

_PIECE = 4 << 20
_WRITE_BEHIND = 16 << 20


@dataclass(frozen=True)
class _Part:
    start: int
    end: int  # inclusive, as in a Range header
    path: Path

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def have(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


@dataclass
class _Job:
    """What every part of one file shares."""

    pool: HttpPool
    url: str
    headers: dict[str, str]
    check_response: ResponseCheck | None
    report: ByteCallback
    stall_timeout: float
    retries: int
    label: str
    # Set when a part fails, and whenever the pull this file belongs to is stopped.
    abort: Cancel = field(default_factory=lambda: Cancel(parent=current()))


class _NoRanges(Exception):
    """The server sent the whole file to a range request."""


class _RetryStatus(Exception):
    pass


def fetch_ranged(
    pool: HttpPool,
    url: str,
    dest: Path,
    *,
    size: int,
    sha256: str | None = None,
    parts: int = 4,
    min_part: int = 1 << 20,
    headers: dict[str, str] | None = None,
    check_response: ResponseCheck | None = None,
    on_bytes: ByteCallback | None = None,
    stall_timeout: float = 60.0,
    retries: int = 5,
    fsync: bool = True,
    label: str | None = None,
) -> str:
    """Download ``url`` into ``dest`` as up to ``parts`` parallel byte ranges.

    The arguments are :func:`model_download.transfer.fetch_file`'s, plus ``parts`` (how many
    ranges at once) and ``min_part`` (the smallest range worth its own connection). ``size`` is
    required; ``on_bytes`` is called from several threads at once; parts an earlier attempt left
    beside ``dest`` are resumed.

    Returns:
        The sha256 of the file's content.

    Raises:
        TransferError: a part kept failing.
        IntegrityError: the joined bytes do not match ``sha256`` (every part is discarded).
        StoreError: a part or ``dest`` cannot be written (disk full, permission denied).
        DownloadCancelled: the pull was stopped; the parts are kept for the next one.
    """
    label = label or url
    plain = dict(size=size, sha256=sha256, headers=headers, check_response=check_response)
    plain.update(on_bytes=on_bytes, stall_timeout=stall_timeout, retries=retries, fsync=fsync)
    count = max(1, min(parts, size // max(1, min_part)))
    if count == 1 or dest.exists():
        # A dest is what a single stream (or a finished join) leaves: that stream resumes it,
        # and no part may stay behind to be published with the model.
        with disk_errors(dest):
            _clear(dest)
        return fetch_file(pool, url, dest, label=label, **plain)

    identity = {**(headers or {}), "Accept-Encoding": "identity"}
    report = on_bytes or (lambda _n: None)
    job = _Job(pool, url, identity, check_response, report, stall_timeout, retries, label)
    with disk_errors(dest):
        pieces = _plan(dest, size, count)
        try:
            _fetch_parts(job, pieces)
            return _join(pieces, dest, size, sha256, fsync, label)
        except _NoRanges:
            logger.info("%s ignores byte ranges: fetching %s over one stream", url, label)
            _discard(pieces, job.report)
    return fetch_file(pool, url, dest, label=label, **plain)


def _plan(dest: Path, size: int, count: int) -> list[_Part]:
    """Split ``size`` bytes into ``count`` parts; drop parts of another split left behind."""
    step = -(-size // count)
    pieces = []
    for start in range(0, size, step):
        end = min(size, start + step) - 1
        pieces.append(_Part(start, end, dest.with_name(f".{dest.name}.{start}-{end}.part")))
    dest.parent.mkdir(parents=True, exist_ok=True)
    keep = {p.path for p in pieces}
    for stale in dest.parent.glob(f".{dest.name}.*.part"):
        if stale not in keep:
            stale.unlink(missing_ok=True)
    return pieces


def _fetch_parts(job: _Job, pieces: list[_Part]) -> None:
    for part in pieces:
        if part.have() > part.length:
            part.path.unlink()
        job.report(part.have())
    with ThreadPoolExecutor(len(pieces), thread_name_prefix="range") as executor:
        # Each part runs in a copy of our context, for listeners that rely on context variables.
        futures = [
            executor.submit(contextvars.copy_context().run, _fetch_part, job, part)
            for part in pieces
        ]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            job.abort.set("the download was interrupted")
            raise
        if any(f.done() and f.exception() is not None for f in futures):
            # One part failing dooms the file: stop the others rather than let them run on.
            job.abort.set("another part of the file failed")
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    # The part that failed first tells why, not the parts stopped because of it.
    errors.sort(key=lambda e: isinstance(e, DownloadCancelled))
    if errors:
        raise errors[0]
    job.abort.check(job.label)  # parts stopped by a cancel return without their bytes


def _fetch_part(job: _Job, part: _Part) -> None:
    failures = 0
    while part.have() < part.length and not job.abort.is_set():
        before = part.have()
        try:
            _attempt(job, part)
            reason: Exception = TransferError(f"the body ended early at byte {before}")
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, _RetryStatus) as exc:
            reason = exc
        if part.have() >= part.length or job.abort.is_set():
            return
        # Bytes moved means the hub is alive: only attempts that moved nothing count.
        failures = 0 if part.have() > before else failures + 1
        if failures > job.retries:
            raise TransferError(
                f"download of {job.label} (bytes {part.start}-{part.end}) failed after "
                f"{job.retries + 1} attempts ({type(reason).__name__}: {reason}); the hub may be "
                "down or the network unstable: run the pull again to resume."
            ) from reason
        logger.info("retrying %s at byte %d: %s", job.label, part.start + part.have(), reason)
        if failures:
            job.abort.wait(min(0.25 * 2 ** (failures - 1), 8.0))


def _attempt(job: _Job, part: _Part) -> None:
    """One GET of what ``part`` still lacks, appended to its file as bytes arrive."""
    offset = part.start + part.have()
    response = job.pool.for_url(job.url).request(
        "GET",
        job.url,
        headers={**job.headers, "Range": f"bytes={offset}-{part.end}"},
        preload_content=False,
        retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10),
        timeout=urllib3.Timeout(connect=job.stall_timeout, read=job.stall_timeout),
    )
    finished = False
    job.abort.watch(response)
    try:
        if response.status in RETRY_STATUSES:
            raise _RetryStatus(f"HTTP {response.status}")
        if response.status == 200:
            raise _NoRanges
        if job.check_response is not None:
            job.check_response(response.status, response.headers)
        if response.status != 206:
            raise TransferError(f"{job.url} answered HTTP {response.status} to a range request")
        if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise TransferError(f"{job.url} sent another range than bytes {offset}-{part.end}")
        finished = _stream(job, part, response)
    finally:
        job.abort.unwatch(response)
        if not finished:
            response.close()  # unread bytes must not reach the next request on this connection
        response.release_conn()


def _stream(job: _Job, part: _Part, response: urllib3.BaseHTTPResponse) -> bool:
    """Append the body to the part's file; True when the body was read to its end."""
    remaining = part.length - part.have()
    with open(part.path, "ab") as out:
        while remaining > 0:
            if job.abort.is_set():
                return False
            piece = response.read1(min(_PIECE, remaining))
            if not piece:
                return True
            out.write(piece)
            remaining -= len(piece)
            job.report(len(piece))
    return response.read1(1) == b""


def _join(
    pieces: list[_Part], dest: Path, size: int, sha256: str | None, fsync: bool, label: str
) -> str:
    """Concatenate the parts into ``dest``, hashing as they go; verify before it appears."""
    digest = hashlib.sha256()
    joined = _joining(dest)
    buffer = memoryview(bytearray(_PIECE))
    total = 0
    with open(joined, "wb") as out:
        handed = 0
        for part in pieces:
            with open(part.path, "rb") as source:
                while count := source.readinto(buffer):
                    digest.update(buffer[:count])
                    out.write(buffer[:count])
                    total += count
                    if fsync and total - handed >= _WRITE_BEHIND:
                        out.flush()
                        start_writeback(out.fileno(), handed, total - handed)
                        handed = total
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    for part in pieces:
        part.path.unlink(missing_ok=True)
    problem = None
    if total != size:
        problem = f"{total} bytes arrived, {size} were published"
    elif sha256 and digest.hexdigest() != sha256.lower():
        problem = f"sha256 is {digest.hexdigest()}, the hub published {sha256}"
    if problem:
        joined.unlink(missing_ok=True)
        raise IntegrityError(
            f"{label} is corrupt ({problem}); it was discarded: pull again to fetch it afresh."
        )
    os.replace(joined, dest)
    return digest.hexdigest()


def _clear(dest: Path) -> None:
    for leftover in (*dest.parent.glob(f".{dest.name}.*.part"), _joining(dest)):
        leftover.unlink(missing_ok=True)


def _joining(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.joining")


def _discard(pieces: list[_Part], report: ByteCallback) -> None:
    for part in pieces:
        report(-part.have())
        part.path.unlink(missing_ok=True)
