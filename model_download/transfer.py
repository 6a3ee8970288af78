"""Fetch one file over HTTP: resumable, restarted when it stalls, hashed as it streams.

Why by hand and not ``huggingface_hub.hf_hub_download``: we need the sha256 (and the git blob
sha1) computed in the same pass as the write, so a file is verified and content-addressed without
reading it twice; a stall timeout that is ours to configure per call; progress reported to our own
bars and Prefect artifacts; and the same code for every hub that serves plain HTTP files. The hub
specifics (URL, headers, what an error status means) stay in each hub plugin.

Why urllib3 and not httpx: urllib3 reads a body straight into a buffer we own (``readinto``) in
large pieces, while httpx hands it over in 64 KiB pieces copied twice on the way. On a fast
link that per-piece cost, not the network, is what limits a Python download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import urllib3

from model_download.cancel import Cancel, current
from model_download.errors import IntegrityError, TransferError
from model_download.store.disk import disk_errors

logger = logging.getLogger(__name__)

#: Statuses worth another try: the hub is busy or briefly broken.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# Up to this much per read: few enough reads that Python's per-read cost stays small.
_PIECE = 4 << 20
# Hand this much written data to the kernel's writeback at a time, while the download goes on.
_WRITE_BEHIND = 16 << 20

ByteCallback = Callable[[int], None]
#: Given a status and headers, raises the hub's own error for an answer that will not improve.
ResponseCheck = Callable[[int, Mapping[str, str]], None]


class HttpPool:
    """Connection pools for file transfers, direct or through the environment's proxy."""

    def __init__(self, max_connections: int = 16) -> None:
        self._direct = urllib3.PoolManager(maxsize=max_connections, block=False)
        self._proxies: dict[str, urllib3.ProxyManager] = {}
        self._max = max_connections

    def for_url(self, url: str) -> urllib3.PoolManager:
        """The pool to reach ``url`` with, honouring HTTPS_PROXY, HTTP_PROXY and NO_PROXY."""
        parts = urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return self._direct
        if proxy not in self._proxies:
            self._proxies[proxy] = urllib3.ProxyManager(proxy, maxsize=self._max, block=False)
        return self._proxies[proxy]


class _Hashes:
    """The hashes of one file, fed in order as bytes arrive."""

    def __init__(self, size: int | None, want_git_oid: bool) -> None:
        self.sha256 = hashlib.sha256()
        self.git = None
        if want_git_oid and size is not None:
            # git hashes a blob as "blob <size>\0<content>"; the size is known from the listing.
            self.git = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)


class _State:
    """Where a file's download stands: bytes on disk and their running hashes."""

    def __init__(self, dest: Path, hashes: _Hashes, cancel: Cancel, write_behind: bool) -> None:
        self.dest = dest
        self.hashes = hashes
        self.offset = 0
        self.cancel = cancel
        self.write_behind = write_behind


def fetch_file(
    pool: HttpPool,
    url: str,
    dest: Path,
    *,
    size: int | None,
    sha256: str | None = None,
    git_oid: str | None = None,
    headers: dict[str, str] | None = None,
    check_response: ResponseCheck | None = None,
    on_bytes: ByteCallback | None = None,
    stall_timeout: float = 60.0,
    retries: int = 5,
    fsync: bool = True,
    label: str | None = None,
) -> str:
    """Download ``url`` into ``dest``, resuming what ``dest`` already holds.

    Args:
        pool: the connection pools to send requests with.
        url: the file's URL.
        dest: where the bytes go; a partial file left by an earlier attempt is resumed.
        size: expected size in bytes, when known.
        sha256: expected content sha256, when the hub publishes it.
        git_oid: expected git blob sha1, when the hub publishes it.
        headers: extra request headers (credentials); never logged.
        check_response: raises the hub's own error for a response that will not get better.
        on_bytes: called with the number of bytes each read adds (negative on a restart).
        stall_timeout: seconds without a byte after which the transfer is restarted.
        retries: failed attempts that moved no bytes before giving up.
        fsync: flush the file to disk before returning.
        label: how to name the file in messages.

    Returns:
        The sha256 of the file's content.

    Raises:
        TransferError: the transfer kept failing.
        IntegrityError: the bytes do not match the published size or hash (``dest`` is removed).
        StoreError: ``dest`` cannot be written (disk full, permission denied), naming it.
        DownloadCancelled: the pull this transfer belongs to was stopped; ``dest`` is kept.
    """
    label = label or url
    report = on_bytes or (lambda _n: None)
    request = _Request(pool, url, headers or {}, check_response, stall_timeout)
    with disk_errors(dest):
        state = _State(dest, _Hashes(size, git_oid is not None), current(), write_behind=fsync)
        state.offset = _hash_existing(dest, size, state.hashes, state.cancel, label)
        report(state.offset)
        _download(request, state, size, git_oid is not None, report, retries, label)
        dest.touch()  # an empty file needs no request, but must still be there
        _verify(dest, label, size, state.offset, state.hashes, sha256, git_oid)
        if fsync:
            with open(dest, "rb") as done:
                # Durable before it is published: a power cut must not leave a listed model
                # truncated.
                os.fsync(done.fileno())
    return state.hashes.sha256.hexdigest()


@dataclass(frozen=True)
class _Request:
    """How to ask for the file: the same for every attempt."""

    pool: HttpPool
    url: str
    headers: dict[str, str]
    check_response: ResponseCheck | None
    stall_timeout: float


def _download(
    request: _Request,
    state: _State,
    size: int | None,
    want_git_oid: bool,
    report: ByteCallback,
    retries: int,
    label: str,
) -> None:
    """Attempt until the file is whole, resuming each time where the last attempt stopped."""
    cancel = state.cancel
    failures = 0
    while size is None or state.offset < size:
        cancel.check(label)
        before = state.offset
        try:
            _attempt(request, state, report)
            cancel.check(label)
            if size is None or state.offset >= size:
                return
            reason: Exception = TransferError(f"the body ended early at byte {state.offset}")
        except _Restart as restart:
            report(-state.offset)
            state.hashes, state.offset = _Hashes(size, want_git_oid), 0
            state.dest.unlink(missing_ok=True)
            reason = restart
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, _RetryStatus) as exc:
            reason = exc
        # A cut made by the cancel itself is no failure of the hub's.
        cancel.check(label)

        # Bytes moved means the hub is alive: only attempts that moved nothing count.
        failures = 0 if state.offset > before else failures + 1
        if failures > retries:
            raise TransferError(
                f"download of {label} failed after {retries + 1} attempts ({_describe(reason)}); "
                "the hub may be down or the network unstable: run the pull again to resume."
            ) from reason
        logger.info("retrying %s at byte %d after: %s", label, state.offset, _describe(reason))
        if failures:
            cancel.wait(min(0.25 * 2 ** (failures - 1), 8.0))


class _RetryStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")


class _Restart(Exception):
    """The partial file cannot be resumed; start the file again from byte zero."""


def _attempt(request: _Request, state: _State, report: ByteCallback) -> None:
    """One GET from ``state.offset``, appending to the file as bytes arrive."""
    url = request.url
    # identity: a compressed body would not match the published hashes, nor resume by offset.
    request_headers = {**request.headers, "Accept-Encoding": "identity"}
    if state.offset:
        request_headers["Range"] = f"bytes={state.offset}-"
    response = request.pool.for_url(url).request(
        "GET",
        url,
        headers=request_headers,
        preload_content=False,
        # Redirects are followed (hubs send large files to a CDN); urllib3 drops the
        # Authorization header when a redirect leaves the host. Failures are retried by us.
        retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10),
        timeout=urllib3.Timeout(connect=request.stall_timeout, read=request.stall_timeout),
    )
    finished = False
    state.cancel.watch(response)
    try:
        if response.status in RETRY_STATUSES:
            raise _RetryStatus(response.status)
        if state.offset and response.status in (200, 416):
            # The server ignored or refused our range: the partial bytes are of no use.
            raise _Restart(f"server answered {response.status} to a range request")
        if request.check_response is not None:
            request.check_response(response.status, response.headers)
        if response.status >= 400:
            raise TransferError(f"{url} answered HTTP {response.status}")
        finished = _stream_body(response, state, report)
    finally:
        state.cancel.unwatch(response)
        if finished:
            response.release_conn()
        else:
            # An unread (error or cut) body would spoil the next request on this connection.
            response.close()


def _stream_body(response: urllib3.BaseHTTPResponse, state: _State, report: ByteCallback) -> bool:
    """Append the body to the file as it arrives; False when a cancel stopped it first."""
    with open(state.dest, "ab") as out:
        handed = state.offset
        # read1: whatever one socket read brings, up to the limit, so that bytes already here
        # are written (and survive for a resume) before a read that stalls or fails.
        while piece := response.read1(_PIECE):
            out.write(piece)
            state.hashes.update(piece)
            state.offset += len(piece)
            report(len(piece))
            if state.cancel.is_set():
                return False
            if state.write_behind and state.offset - handed >= _WRITE_BEHIND:
                out.flush()
                start_writeback(out.fileno(), handed, state.offset - handed)
                handed = state.offset
    return True


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a range out now, so the final fsync has little left.

    Otherwise dirty pages wait for the kernel's writeback (up to 30 s or a dirty-memory
    threshold), and the fsync before publishing writes the whole file at the end, after the
    transfer rather than during it. On Linux, POSIX_FADV_DONTNEED starts asynchronous
    writeback of the range (and drops only the pages already clean): what sync_file_range's
    SYNC_FILE_RANGE_WRITE does, which Python does not expose.
    """
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _hash_existing(
    dest: Path, size: int | None, hashes: _Hashes, cancel: Cancel, label: str
) -> int:
    """Feed the bytes an earlier attempt left in ``dest`` to the hashes; return their count."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        have = dest.stat().st_size
    except FileNotFoundError:
        return 0
    if size is not None and have > size:
        dest.unlink()
        return 0
    buffer = memoryview(bytearray(_PIECE))
    with open(dest, "rb") as existing:
        while count := existing.readinto(buffer):
            hashes.update(buffer[:count])
            cancel.check(label)
    return have


def _verify(
    dest: Path,
    label: str,
    size: int | None,
    offset: int,
    hashes: _Hashes,
    sha256: str | None,
    git_oid: str | None,
) -> None:
    problem = None
    if size is not None and offset != size:
        problem = f"{offset} bytes arrived, {size} were published"
    elif sha256 and hashes.sha256.hexdigest() != sha256.lower():
        problem = f"sha256 is {hashes.sha256.hexdigest()}, the hub published {sha256}"
    elif git_oid and hashes.git is not None and hashes.git.hexdigest() != git_oid.lower():
        problem = f"git blob id is {hashes.git.hexdigest()}, the hub published {git_oid}"
    if problem:
        dest.unlink(missing_ok=True)
        raise IntegrityError(
            f"{label} is corrupt ({problem}); it was discarded: pull again to fetch it afresh."
        )


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name
