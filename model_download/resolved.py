"""What a hub answered for a reference: an immutable revision and its files.

Cache keys and store folders are built from a :class:`ResolvedModel`, so a branch that moves means
a new download, and a branch that did not move means none.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field

from model_download.refs import ModelReference


class RemoteFile(BaseModel):
    """One file of a resolved model, with the hashes the hub publishes for it."""

    model_config = ConfigDict(frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: str | None = Field(None, description="Content sha256, when the hub gives it (LFS).")
    git_oid: str | None = Field(None, description="git blob sha1, when the hub gives it.")


class ResolvedModel(BaseModel):
    """A reference pinned to the revision the hub answered, with the files to fetch."""

    model_config = ConfigDict(frozen=True)

    reference: ModelReference
    revision: str = Field(description="Immutable revision: a commit or a manifest digest.")
    files: tuple[RemoteFile, ...] = Field(description="Files selected by the reference's patterns.")
    format: str | None = Field(None, description="'openvino-ir' when the files are already IR.")

    @property
    def total_size(self) -> int:
        return sum(file.size for file in self.files)

    def cache_key(self) -> str:
        """A key that changes exactly when the set of bytes to fetch changes."""
        ref = self.reference
        payload = json.dumps(
            [ref.hub, ref.id, self.revision, sorted(ref.include), sorted(ref.exclude)]
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def select_files(
    files: list[RemoteFile], include: tuple[str, ...], exclude: tuple[str, ...]
) -> tuple[RemoteFile, ...]:
    """Files matching any ``include`` glob (all when none) and no ``exclude`` glob."""
    chosen = []
    for file in files:
        if include and not any(fnmatch.fnmatchcase(file.path, pat) for pat in include):
            continue
        if any(fnmatch.fnmatchcase(file.path, pat) for pat in exclude):
            continue
        chosen.append(file)
    return tuple(sorted(chosen, key=lambda f: f.path))


def looks_like_openvino_ir(paths: list[str]) -> bool:
    """True when the files include an IR pair: ``name.xml`` beside ``name.bin``."""
    names = set(paths)
    return any(p.endswith(".xml") and p[: -len(".xml")] + ".bin" in names for p in names)
