"""The git side of the fake Hugging Face Hub: blobs on disk, commits, refs, and their JSON.

Kept apart from the HTTP layer (``hf_hub.py``) so that what the Hub *stores* can be read without
what it *speaks*. Nothing here is thread-safe on its own: ``FakeHub`` holds its lock around it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import get_args

from huggingface_hub.hf_api import ExpandModelProperty_T

# What the Hub's default .gitattributes sends to LFS whatever the size; clients tell LFS files
# apart by the `lfs` key of tree entries, so getting this wrong changes which hash they check.
LFS_EXTENSIONS = frozenset(
    {".bin", ".safetensors", ".onnx", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".model"}
)
_CHUNK = 1 << 20
# What GET /api/models lists of each model unless ``expand`` says otherwise: the real Hub leaves
# out the commit (``sha``) and ``lastModified``, among others.
_LISTED = ("_id", "id", "modelId", "likes", "private", "downloads", "tags", "createdAt")
#: What ``expand`` may ask for, as huggingface_hub names the Hub's fields; others are a 400.
EXPANDABLE = frozenset(get_args(ExpandModelProperty_T))


def git_blob_sha1(data: bytes) -> str:
    """The oid git gives a blob holding ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(moment: datetime) -> str:
    # huggingface_hub's parse_datetime accepts only this shape ("...T...Z").
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Blob:
    """File content stored once on disk, under its sha256, with the hashes the Hub publishes."""

    path: Path
    size: int
    sha256: str
    git_oid: str


@dataclass(frozen=True)
class RepoFile:
    blob: Blob
    lfs: bool

    @cached_property
    def pointer(self) -> bytes:
        """The LFS pointer file git holds instead of the content."""
        sha, size = self.blob.sha256, self.blob.size
        return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
            sha.encode(),
            size,
        )

    @cached_property
    def oid(self) -> str:
        # git stores an LFS file as its pointer, so that is what the tree's oid hashes.
        return git_blob_sha1(self.pointer) if self.lfs else self.blob.git_oid

    @property
    def etag(self) -> str:
        return self.blob.sha256 if self.lfs else self.blob.git_oid


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    files: dict[str, RepoFile]
    message: str
    date: datetime


@dataclass
class Repo:
    id: str
    private: bool = False
    gated: bool | str = False  # False, "auto" or "manual": what the API reports
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    model_tags: list[str] = field(default_factory=list)  # the Hub's labels, not git tags

    def resolve(self, revision: str) -> Commit | None:
        """A branch, then a tag, then a full commit sha, in the Hub's order of precedence."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        return self.commits.get(sha or revision)

    def add_commit(
        self, branch: str, added: dict[str, RepoFile], delete: tuple[str, ...], message: str
    ) -> Commit:
        # A new branch starts from main, as `create_branch` does on the Hub.
        parent = self.branches.get(branch) or self.branches.get("main")
        files = dict(self.commits[parent].files) if parent else {}
        files.update(added)
        for path in delete:
            if files.pop(path, None) is None:
                raise KeyError(f"{path!r} is not in {self.id}@{branch}")
        digest = hashlib.sha1(f"{self.id}\n{parent}\n{message}\n".encode())
        for path, file in sorted(files.items()):
            digest.update(f"{path}\0{file.oid}\n".encode())
        commit = Commit(digest.hexdigest(), parent, files, message, datetime.now(UTC))
        self.commits.setdefault(commit.sha, commit)
        self.branches[branch] = commit.sha
        return self.commits[commit.sha]

    def info_json(self, commit: Commit, *, blobs: bool) -> dict:
        """``GET /api/models/{id}/revision/{rev}``; ``blobs`` is the `files_metadata` flag."""
        siblings = []
        for path, file in sorted(commit.files.items()):
            sibling: dict = {"rfilename": path}
            if blobs:
                sibling |= {"size": file.blob.size, "blobId": file.oid}
                if file.lfs:
                    sibling["lfs"] = {
                        "size": file.blob.size,
                        "sha256": file.blob.sha256,
                        "pointerSize": len(file.pointer),
                    }
            siblings.append(sibling)
        return {
            "_id": hashlib.sha1(self.id.encode()).hexdigest()[:24],
            "id": self.id,
            "modelId": self.id,
            "author": self.id.split("/")[0] if "/" in self.id else None,
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(self.created),
            "private": self.private,
            "gated": self.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(self.model_tags),
            "siblings": siblings,
        }

    def listed_json(self, expand: list[str]) -> dict:
        """The model as ``GET /api/models`` lists it: ``_id``, ``id`` and the fields ``expand``
        names, or without ``expand`` the Hub's default few."""
        info = self.info_json(self.resolve("main"), blobs=False)  # type: ignore[arg-type]
        keys = ("_id", "id", *expand) if expand else _LISTED
        return {key: info[key] for key in keys if key in info}

    def tree_json(self, commit: Commit, path: str, *, recursive: bool) -> list[dict] | None:
        """Entries under directory ``path`` ("": the root) by path; None if there is no such dir."""
        prefix = f"{path}/" if path else ""
        entries, dirs = [], set()
        for name, file in commit.files.items():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)
            dirs.update(prefix + "/".join(parts[:i]) for i in range(1, depth + 1))
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": file.oid, "size": file.blob.size, "path": name}
                if file.lfs:
                    entry["lfs"] = {
                        "oid": file.blob.sha256,
                        "size": file.blob.size,
                        "pointerSize": len(file.pointer),
                    }
                entries.append(entry)
        if path and not entries and not dirs:
            return None
        for name in dirs:
            # Not git's tree hash, but stable and changing with the content, which is all
            # a client can rely on.
            digest = hashlib.sha1(b"tree\0")
            for child, file in sorted(commit.files.items()):
                if child.startswith(f"{name}/"):
                    digest.update(f"{child}\0{file.oid}\n".encode())
            entries.append(
                {"type": "directory", "oid": digest.hexdigest(), "size": 0, "path": name}
            )
        return sorted(entries, key=lambda entry: entry["path"])

    def refs_json(self) -> dict:
        """``GET /api/models/{id}/refs``, as ``HfApi.list_repo_refs`` reads it."""

        def refs(names: dict[str, str], kind: str) -> list[dict]:
            return [
                {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}
                for name, sha in sorted(names.items())
            ]

        return {
            "branches": refs(self.branches, "heads"),
            "tags": refs(self.tags, "tags"),
            "converts": [],
            "pullRequests": [],
        }


class BlobStore:
    """Content-addressed files under ``root``, so big files are served from disk, not memory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._by_sha256: dict[str, Blob] = {}

    def get(self, sha256: str) -> Blob | None:
        return self._by_sha256.get(sha256)

    def add(self, content: bytes | os.PathLike | str) -> Blob:
        """Store ``content`` (bytes, or a file that is hard-linked when possible: don't edit it)."""
        if isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
            sha256, git_oid, size = hashlib.sha256(data).hexdigest(), git_blob_sha1(data), len(data)
            dest = self.root / sha256
            if not dest.exists():
                tmp = dest.with_name(f".{uuid.uuid4().hex}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, dest)
        else:
            source = Path(content)
            size = source.stat().st_size
            sha, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
            with source.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    sha.update(chunk)
                    sha1.update(chunk)
            sha256, git_oid = sha.hexdigest(), sha1.hexdigest()
            dest = self.root / sha256
            if not dest.exists():
                tmp = dest.with_name(f".{uuid.uuid4().hex}.tmp")
                try:
                    os.link(source, tmp)  # a benchmark's 200 MB files should not be copied
                except OSError:
                    shutil.copyfile(source, tmp)
                os.replace(tmp, dest)
        blob = Blob(dest, size, sha256, git_oid)
        self._by_sha256[sha256] = blob
        return blob
