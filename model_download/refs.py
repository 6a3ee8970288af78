"""Model references: which model, from which hub, at which revision.

A reference is parsed and checked once, where it enters (CLI, API, flow parameters); every layer
below receives a validated :class:`ModelReference`. The checks here are the ones every hub
shares: a hub plugin adds its own rules for ids and revisions.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_download.errors import InvalidReferenceError

#: Short names users may type for a hub.
HUB_ALIASES = {"hf": "huggingface"}

# One path segment of a model id: letters, digits and the few marks hubs allow. No segment may
# be "." or "..", so an id can never climb out of its folder in the store.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# Revisions are branch, tag or commit names. git allows more, but these are the characters hubs
# use; a '/' is allowed (refs/pr/1) but not a leading one, nor '..' anywhere.
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254}$")
_HUB = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

Pattern = Annotated[str, Field(min_length=1, max_length=512)]


def check_relative_path(value: str, what: str) -> str:
    """Reject a path that is empty, absolute or climbs out with ``..``; return it normalised.

    Raises:
        InvalidReferenceError: naming ``what`` and the fix.
    """
    cleaned = value.strip().replace("\\", "/")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if not parts:
        raise InvalidReferenceError(f"{what} is empty: give a relative path such as 'team/models'.")
    if cleaned.startswith("/") or re.match(r"^[A-Za-z]:", cleaned):
        raise InvalidReferenceError(
            f"{what} {value!r} is an absolute path: give a path relative to the store."
        )
    if ".." in parts:
        raise InvalidReferenceError(
            f"{what} {value!r} contains '..': it must stay inside the store."
        )
    return "/".join(parts)


class ModelReference(BaseModel):
    """A model on a hub: ``hub``, ``id``, optional ``revision`` and file patterns.

    Attributes:
        hub: canonical hub name, e.g. ``huggingface`` (``hf`` is accepted and normalised).
        id: the model's id on that hub, e.g. ``org/name``.
        revision: branch, tag or commit; ``None`` means the hub's default.
        include: glob patterns of files to fetch; empty means every file.
        exclude: glob patterns of files to leave out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    hub: str = Field(description="Hub name, e.g. 'huggingface' (or 'hf').")
    id: str = Field(description="Model id on the hub, e.g. 'org/name'.")
    revision: str | None = Field(None, description="Branch, tag or commit; default: the hub's.")
    include: tuple[Pattern, ...] = Field((), description="Only files matching these globs.")
    exclude: tuple[Pattern, ...] = Field((), description="Leave out files matching these globs.")

    @field_validator("hub", mode="before")
    @classmethod
    def _check_hub(cls, value: object) -> str:
        hub = str(value or "").strip().lower()
        hub = HUB_ALIASES.get(hub, hub)
        if not _HUB.match(hub):
            raise InvalidReferenceError(
                f"hub {value!r} is not a hub name: use one such as 'huggingface' or 'hf'."
            )
        return hub

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, value: object) -> str:
        text = str(value or "").strip()
        if not text:
            raise InvalidReferenceError("model id is empty: name a model such as 'org/name'.")
        if text.startswith("/") or "\\" in text:
            raise InvalidReferenceError(
                f"model id {text!r} looks like a file path: write the hub's id, e.g. 'org/name'."
            )
        for segment in text.split("/"):
            if segment in ("", ".", "..") or not _SEGMENT.match(segment):
                raise InvalidReferenceError(
                    f"model id {text!r} has an invalid part {segment!r}: use letters, digits, "
                    "'.', '_', '-' between single slashes, with no '..'."
                )
        return text

    @field_validator("revision", mode="before")
    @classmethod
    def _check_revision(cls, value: object) -> str | None:
        if value is None:
            return None
        text = str(value).strip()
        if not text:
            return None
        if not _REVISION.match(text) or ".." in text or text.endswith("/") or "//" in text:
            raise InvalidReferenceError(
                f"revision {text!r} is malformed: give a branch, tag or commit such as 'main', "
                "'v1.0' or a 40-character commit hash."
            )
        return text

    def with_revision(self, revision: str | None) -> ModelReference:
        """The same reference at another revision."""
        return self.model_copy(update={"revision": revision})

    def __str__(self) -> str:
        text = f"{self.hub}:{self.id}"
        return f"{text}@{self.revision}" if self.revision else text


def parse_reference(
    text: str, *, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> ModelReference:
    """Parse ``hub:id[@revision]`` as typed on the command line.

    Raises:
        InvalidReferenceError: when the text does not follow that shape.
    """
    hub, sep, rest = text.strip().partition(":")
    if not sep or not hub:
        raise InvalidReferenceError(
            f"model {text!r} has no hub: write hub:id[@revision], e.g. 'hf:org/name@main'."
        )
    model_id, at, revision = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if at and not revision:
        raise InvalidReferenceError(
            f"model {text!r} ends with '@': put a revision after it or leave the '@' out."
        )
    return make_reference(
        hub=hub, id=model_id, revision=revision or None, include=include, exclude=exclude
    )


def make_reference(**fields: object) -> ModelReference:
    """A :class:`ModelReference` from its fields; our own error (not pydantic's) if invalid."""
    try:
        return ModelReference(**fields)
    except ValueError as exc:
        raise _first_reference_error(exc) from exc


def _first_reference_error(exc: ValueError) -> InvalidReferenceError:
    # pydantic wraps our validator's error in a ValidationError; users want our sentence back.
    errors = getattr(exc, "errors", None)
    if callable(errors):
        for error in errors():
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, InvalidReferenceError):
                return cause
    return InvalidReferenceError(str(exc))
