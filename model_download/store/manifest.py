"""The manifest each stored model carries: where it came from and what every file must be."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

#: The manifest's file name inside each model folder.
MANIFEST_NAME = ".model-download.json"


class ManifestFile(BaseModel):
    """One stored file."""

    path: str
    size: int
    sha256: str
    git_oid: str | None = Field(None, description="git blob sha1, when the hub published one.")


class Selection(BaseModel):
    """The file patterns of one pull; a folder pulled with several patterns lists each."""

    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)


class Manifest(BaseModel):
    """Everything known about one stored model."""

    schema_version: int = 1
    hub: str
    id: str
    revision: str = Field(description="The immutable revision stored: a commit or a digest.")
    requested_revisions: list[str] = Field(
        default_factory=list, description="Branches and tags that resolved to this revision."
    )
    selections: list[Selection] = Field(default_factory=list)
    format: str | None = Field(None, description="'openvino-ir' when the files are already IR.")
    files: list[ManifestFile]
    created_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="When it was first stored."
    )
    updated_at: datetime | None = Field(
        None, description="When a later pull last added files or names (none: never)."
    )
    tools: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def total_size(self) -> int:
        return sum(file.size for file in self.files)

    def file(self, path: str) -> ManifestFile | None:
        return next((f for f in self.files if f.path == path), None)


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of model-download and the given packages, for the manifest."""
    versions = {}
    for name in ("model-download", *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_manifest(folder: Path) -> Manifest:
    """Load ``folder``'s manifest.

    Raises:
        FileNotFoundError: there is none.
        OSError: it cannot be read.
        ValueError: it is not a manifest (pydantic's ``ValidationError``, a ``ValueError``).
    """
    return Manifest.model_validate_json((folder / MANIFEST_NAME).read_text())


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest atomically and durably: a reader sees the old one or the new one."""
    target = folder / MANIFEST_NAME
    tmp = target.with_name(f"{MANIFEST_NAME}.{os.getpid()}.tmp")
    data = json.dumps(manifest.model_dump(mode="json"), indent=2)
    with open(tmp, "w") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
