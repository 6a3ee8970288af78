"""Model references: which model, from which hub, at which revision.

A reference is parsed and checked once, where it enters (CLI, API, flow parameters); every layer
below receives a validated :class:`ModelReference`. The checks here are the ones every hub
shares: a hub plugin adds its own rules for ids and revisions.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from model_download.errors import InvalidReferenceError

#: Short names users may type for a hub.
HUB_ALIASES = {"hf": "huggingface"}
#: The hub whose ids may also be written in its own ``name:tag`` spelling (see ollama_id).
OLLAMA_HUB = "ollama"

# One path segment of a model id: letters, digits and the few marks hubs allow. No segment may
# be "." or "..", so an id can never climb out of its folder in the store.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# Revisions are branch, tag or commit names. git allows more, but these are the characters hubs
# use; a '/' is allowed (refs/pr/1) but not a leading one, nor '..' anywhere.
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254}$")
_HUB = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

_MAX_PATTERN = 512
# The bounds are checked by ModelReference._check_patterns, with our own message; the schema
# still shows them to forms.
Pattern = Annotated[str, Field(json_schema_extra={"minLength": 1, "maxLength": _MAX_PATTERN})]


def check_relative_path(value: str, what: str) -> str:
    """Reject a path that is empty, absolute, climbs out with ``..``, holds a control character
    (NUL included) or a part longer than a file name may be; return it normalised.

    Raises:
        InvalidReferenceError: naming ``what`` and the fix.
    """
    # The OS would refuse these later, half-way through writing: refuse them here.
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise InvalidReferenceError(
            f"{what} {value!r} contains a control character: use printable characters only."
        )
    cleaned = value.strip().replace("\\", "/")
    name_max = 255  # bytes: the longest file name most file systems allow
    sizes = [len(part.encode(errors="surrogatepass")) for part in cleaned.split("/")]
    if max(sizes) > name_max:
        raise InvalidReferenceError(
            f"{what} has a part of {max(sizes)} bytes: each part of a path may be at most "
            f"{name_max} bytes."
        )
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

    @field_validator("include", "exclude")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for pattern in value:
            if not pattern.strip():
                raise InvalidReferenceError(
                    f"an {info.field_name} pattern is empty ({pattern!r}): give a glob such as "
                    "'*.json', or leave it out."
                )
            if len(pattern) > _MAX_PATTERN:
                raise InvalidReferenceError(
                    f"an {info.field_name} pattern is {len(pattern)} characters long "
                    f"({pattern[:40]!r}...): the limit is {_MAX_PATTERN}."
                )
        return value

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

    ``ollama:`` ids may also be written as Ollama writes them (``ollama:llama3.2:1b``,
    ``ollama:host:5000/ns/model:tag``): see :func:`ollama_id`.

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
    if HUB_ALIASES.get(hub.strip().lower(), hub.strip().lower()) == OLLAMA_HUB:
        model_id, revision = ollama_id(model_id, revision or None)
    return make_reference(
        hub=hub, id=model_id, revision=revision or None, include=include, exclude=exclude
    )


def ollama_id(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """Ollama's own ``[host[:port]/][namespace/]model[:tag]`` as our id and revision.

    Our ids have no ':', so the tag (after the last ':' that no '/' follows) becomes the
    revision, and a registry's port (a ':' before the first '/') is written ``host+port``. Names
    already in our spelling come back unchanged.

    Args:
        name: the model's name, in either spelling.
        revision: a tag given apart from the name (``@tag``, or the API's ``revision``).

    Returns:
        The id and the revision (``revision``, else the name's tag, else None).

    Raises:
        InvalidReferenceError: the name and ``revision`` give different tags, or a ':' is
            neither a tag's nor a port's.
    """
    text = name.strip()
    rest, colon, tag = text.rpartition(":")
    if not colon or "/" in tag:  # no tag: any ':' left is a port's
        rest, tag = text, ""
    elif not tag:
        raise InvalidReferenceError(
            f"Ollama model {name!r} ends with ':': put a tag after it or leave the ':' out."
        )
    if tag and revision and tag != revision:
        raise InvalidReferenceError(
            f"Ollama model {name!r} names tag {tag!r} but the revision says {revision!r}: give "
            "the tag once."
        )
    host, slash, path = rest.partition("/")
    registry, port_colon, port = host.rpartition(":")
    if slash and port_colon and port.isdigit():
        rest = f"{registry}+{port}/{path}"
    if ":" in rest:
        raise InvalidReferenceError(
            f"Ollama model {name!r} has a ':' that is neither a tag's (model:tag) nor a "
            "registry port's (host:port/namespace/model): write ollama:[host[+port]/]"
            "[namespace/]model[@tag], e.g. 'ollama:llama3.2@1b'."
        )
    return rest, revision or tag or None


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
