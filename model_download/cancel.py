"""Stopping transfers early: when a sibling file fails, or the user presses Ctrl-C.

A :class:`Cancel` is shared by the transfers of one pull. Setting it makes every byte loop stop
at its next piece, and it shuts down the sockets of responses being read, so a transfer stalled
in a read returns at once instead of after its stall timeout.

Hub plugins call :func:`model_download.transfer.fetch_file` without a cancel argument (their
signature is the plugin API); the pull sets the current one with :func:`cancelling` around each
file, and the transfer finds it with :func:`current`, the way Prefect's run context travels with
the context of each thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from model_download.errors import DownloadCancelled


class Cancel:
    """A request to stop; a child is set whenever its parent is."""

    def __init__(self, parent: Cancel | None = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._responses: set[Any] = set()
        self._children: weakref.WeakSet[Cancel] = weakref.WeakSet()
        self.reason = ""
        if parent is not None:
            parent._adopt(self)

    def set(self, reason: str) -> None:
        """Stop every transfer watching this (and its children's); the first reason stays."""
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
                self._event.set()
            responses, children = list(self._responses), list(self._children)
        for response in responses:
            _shut(response)
        for child in children:
            child.set(reason)

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self, what: str) -> None:
        """Raise :class:`DownloadCancelled` naming ``what`` if a stop was asked for."""
        if self._event.is_set():
            raise DownloadCancelled(
                f"{what} was stopped ({self.reason}); its partial file is kept for the next pull."
            )

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True (early) when a stop is asked for."""
        return self._event.wait(seconds)

    def watch(self, response: Any) -> None:
        """Shut ``response``'s socket if a stop is asked for before :meth:`unwatch`."""
        with self._lock:
            if not self._event.is_set():
                self._responses.add(response)
                return
        _shut(response)

    def unwatch(self, response: Any) -> None:
        # Under the lock: once this returns, set() can no longer shut a connection that goes
        # back to the pool for someone else's request.
        with self._lock:
            self._responses.discard(response)

    def _adopt(self, child: Cancel) -> None:
        with self._lock:
            self._children.add(child)
            reason = self.reason if self._event.is_set() else None
        if reason is not None:
            child.set(reason)


def _shut(response: Any) -> None:
    # shutdown(), not close(): it wakes a read blocked in another thread, which then sees the
    # end of the stream; closing a socket under a blocked reader is undefined.
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_NEVER = Cancel()
_CURRENT: ContextVar[Cancel] = ContextVar("model_download_cancel", default=_NEVER)


def current() -> Cancel:
    """The cancel of the pull this thread works for (one that is never set, outside a pull)."""
    return _CURRENT.get()


@contextlib.contextmanager
def cancelling(cancel: Cancel) -> Iterator[Cancel]:
    """Make ``cancel`` the current one for the transfers started inside the block."""
    token = _CURRENT.set(cancel)
    try:
        yield cancel
    finally:
        _CURRENT.reset(token)
