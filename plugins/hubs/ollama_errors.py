"""What an Ollama registry's refusals and failures mean, as our errors, each with what to do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import urllib3

from model_download import errors
from plugins.hubs.ollama_registry import (
    DEFAULT_REGISTRY,
    PINNED,
    Answer,
    OllamaName,
    Unauthorized,
    registry_host,
)

#: What to do when a registry wants credentials we do not send.
_SIGNED_IN = (
    "model-download pulls models anyone may read; check the name, or have an Ollama server "
    "signed in to the registry pull it (model-download ollama pull, with OLLAMA_HOST)."
)


def hint(name: OllamaName, page: str) -> str:
    """Where ollama.com lists the model's tags (``page="tags"``) or finds models, if it is ours."""
    if name.host != registry_host(DEFAULT_REGISTRY):
        return ""
    if page == "tags":
        return f" (https://ollama.com/{name.repo}/tags lists its tags)"
    return " (https://ollama.com/search finds public models)"


def registry_error(
    name: OllamaName, base: str, status: int, code: str = "", path: str | None = None
) -> errors.ModelDownloadError:
    """Our error for a registry's refusal, told by its status and distribution error code."""
    if status in (401, 403):
        return errors.UnauthorizedError(
            f"{base} refuses {name} without credentials ({code or status}): {_SIGNED_IN}"
        )
    if status == 404 and path is not None:
        return errors.RemoteFileNotFoundError(
            f"{base} has lost {path} of {name}: the model is broken on the registry; try "
            "another tag, or later."
        )
    if status == 404:
        return errors.ModelNotFoundError(
            f"{base} has no model {name.host}/{name.repo}: check the name{hint(name, 'search')}."
        )
    if status == 429 or status >= 500:
        return errors.HubUnreachableError(
            f"{base} answered {status} for {name}: the registry is busy or down, try later."
        )
    return errors.HubError(f"{base} answered {status} {code or ''} for {name}.")


def missing_error(
    name: OllamaName, base: str, answer: Answer, tags: Callable[[], list[str] | None]
) -> errors.ModelDownloadError:
    """The error for a manifest the registry does not have: no such model, tag or digest.

    Args:
        name: the model asked for.
        base: the registry's base URL.
        answer: the registry's 404.
        tags: lists the model's tags (raising ModelNotFoundError when there is no such model).
    """
    if answer.error_code() == "NAME_UNKNOWN":
        return registry_error(name, base, 404, "NAME_UNKNOWN")
    found = tags()
    shown = ", ".join((found or [])[:20]) + (", ..." if len(found or []) > 20 else "")
    listed = f": its tags are {shown}" if found else ""
    pinned = PINNED.match(name.tag)
    if pinned:
        # A pinned digest is not a tag: saying "no tag 'sha256-...'" would send users looking
        # for a tag by that name.
        return errors.RevisionNotFoundError(
            f"{name.host}/{name.repo} has no manifest with digest sha256:{pinned.group(1)} "
            f"(the registry no longer holds it, or the digest is mistyped){listed}; pull a tag."
        )
    if found:
        return errors.RevisionNotFoundError(
            f"{name.host}/{name.repo} has no tag {name.tag!r}{listed}."
        )
    return errors.ModelNotFoundError(
        f"{base} has no {name}: check the model's name and tag{hint(name, 'tags')}."
    )


@contextmanager
def translated(name: OllamaName, base: str) -> Iterator[None]:
    """Turn transport and authorization failures into our errors, with what to do."""
    try:
        yield
    except errors.ModelDownloadError:
        raise
    except Unauthorized as exc:
        raise errors.UnauthorizedError(
            f"{base} wants credentials for {name} ({exc.detail}): {_SIGNED_IN}"
        ) from exc
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise errors.HubUnreachableError(
            f"cannot reach {base} for {name} ({type(exc).__name__}): check the network, "
            "or MODEL_DOWNLOAD_OLLAMA_REGISTRY."
        ) from exc
