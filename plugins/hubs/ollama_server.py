"""A running Ollama server, driven through the official ``ollama`` client.

This is the other way to get a model into Ollama: the server pulls it itself, into its own
``OLLAMA_MODELS``, and reports progress as it goes. The hub plugin's store path needs no server;
these calls need one (``OLLAMA_HOST``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import ollama

from model_download import errors

logger = logging.getLogger(__name__)

# What the server says when a model or tag does not exist, on a pull or for a local model.
_MISSING = re.compile(r"not found|does not exist|manifest unknown", re.IGNORECASE)
_UNREACHABLE = re.compile(r"dial tcp|connection refused|no such host|timeout", re.IGNORECASE)


@dataclass(frozen=True)
class PullProgress:
    """One line of a server pull's progress: a status, and for a layer its digest and bytes."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


@dataclass(frozen=True)
class ServerModel:
    """A model the Ollama server holds."""

    name: str
    digest: str | None
    size: int | None
    modified_at: datetime | None


class OllamaServer:
    """The Ollama server at ``host`` (``OLLAMA_HOST`` syntax: ``host:port`` or a URL)."""

    def __init__(self, host: str, *, timeout: float = 60.0) -> None:
        self.host = host
        self._timeout = timeout

    def pull(
        self,
        name: str,
        on_progress: Callable[[PullProgress], None] | None = None,
        *,
        insecure: bool = False,
    ) -> str:
        """Have the server pull ``name``; each progress line goes to ``on_progress``.

        Returns:
            The last status the server reported (``success``).
        """
        status = ""
        with self._translated(name, "pull"), self._client(streaming=True) as client:
            for line in client.pull(name, insecure=insecure, stream=True):
                status = line.status or status
                if on_progress is not None:
                    on_progress(
                        PullProgress(status, line.digest or None, line.total, line.completed)
                    )
        return status

    def list(self) -> list[ServerModel]:
        """The models the server holds."""
        with self._translated(None, "list"), self._client() as client:
            found = client.list().models
        return [
            ServerModel(
                name=model.model or "",
                digest=model.digest,
                size=int(model.size) if model.size is not None else None,
                modified_at=model.modified_at,
            )
            for model in found
        ]

    def show(self, name: str) -> dict[str, Any]:
        """What the server knows of ``name``: template, parameters, details, model_info..."""
        with self._translated(name, "show"), self._client() as client:
            shown = client.show(name)
        return shown.model_dump(mode="json", by_alias=True, exclude_none=True)

    def delete(self, name: str) -> None:
        """Remove ``name`` from the server (its blobs go when no other model uses them)."""
        with self._translated(name, "delete"), self._client() as client:
            client.delete(name)

    @contextmanager
    def _client(self, *, streaming: bool = False) -> Iterator[ollama.Client]:
        # A pull may be silent for minutes while the server verifies a large blob: no read
        # timeout there; the other calls answer at once or not at all.
        timeout = httpx.Timeout(self._timeout, read=None if streaming else self._timeout)
        client = ollama.Client(host=self.host, timeout=timeout)
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def _translated(self, name: str | None, action: str) -> Iterator[None]:
        """Turn the client's errors into ours, each with what the user can do."""
        try:
            yield
        except ollama.ResponseError as exc:
            raise self._error(name, action, exc.error, exc.status_code) from exc
        except (ConnectionError, httpx.TransportError) as exc:
            raise errors.ServiceUnavailableError(
                f"cannot reach the Ollama server at {self.host} to {action} "
                f"({type(exc).__name__}): start it (ollama serve) or fix OLLAMA_HOST."
            ) from exc

    def _error(
        self, name: str | None, action: str, message: str, status: int
    ) -> errors.ModelDownloadError:
        said = f"the Ollama server at {self.host} could not {action} {name or 'its models'}"
        if status in (401, 403) or "unauthorized" in message.lower():
            return errors.UnauthorizedError(
                f"{said}: {message}. The registry wants credentials: sign the server in "
                "(ollama signin) or check the name."
            )
        if status == 404 or _MISSING.search(message):
            remedy = (
                "check the name and tag (https://ollama.com/library lists the public ones)"
                if action == "pull"
                else "it does not hold that model: pull it first"
            )
            return errors.ModelNotFoundError(f"{said}: {message}; {remedy}.")
        if status == 400:
            return errors.InvalidReferenceError(
                f"{said}: {message}; write a name such as 'llama3.2:1b' or 'namespace/model:tag'."
            )
        if _UNREACHABLE.search(message):
            return errors.HubUnreachableError(
                f"{said}: {message}; the server cannot reach its registry, try again later."
            )
        return errors.HubError(f"{said}: {message} (HTTP {status}).")
