"""Ultralytics YOLO weights (``yolo11n``, ``yolov8s-seg``...) from Ultralytics' release assets.

A name maps to one file, ``<base URL>/<name>.pt``; the base URL names the release
(``MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL``, by default the release the installed ultralytics
package itself downloads from). The service's own downloader fetches it, so a weight file is
resumed, hashed and stored like any model, and ultralytics never downloads anything.

The assets carry no published hash: the size (from ``Content-Length``) is verified, and the
sha256 is computed as the bytes arrive. The immutable revision is a digest of the URL and the
validator the server sends (its ``ETag``, else ``Last-Modified``, else the size): a release asset
replaced under the same name gets a new revision, so it is downloaded again, and an unchanged one
is found in the store after a single HEAD request.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import re
from collections.abc import Callable, Mapping
from functools import cache, cached_property
from pathlib import Path

import urllib3

from model_download import errors
from model_download.refs import ModelReference
from model_download.resolved import RemoteFile, ResolvedModel, select_files
from model_download.store.manifest import tool_versions
from model_download.transfer import HttpPool, fetch_file
from plugins.base import HubPlugin

logger = logging.getLogger(__name__)

#: Where ultralytics 8.4 downloads its weights from, when the package cannot tell us.
DEFAULT_BASE_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
#: The names this hub accepts, as a pattern and in words for messages.
NAME_PATTERN = re.compile(r"^(yolov8|yolo11|yolo26)[nsmlx](-(seg|pose|cls|obb))?$")
NAME_RULE = (
    "yolov8, yolo11 or yolo26, then a size n, s, m, l or x, then optionally -seg, -pose, -cls "
    "or -obb (e.g. 'yolo11n', 'yolov8s-seg', 'yolo26n-pose')"
)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Bumped if what the revision digests ever changes, so old and new revisions cannot collide.
_REVISION_SCHEME = "ultralytics-asset/1"


@cache
def default_base_url() -> str:
    """The release URL the installed ultralytics package downloads weights from.

    Read from the package's source rather than by importing it: an import of ultralytics takes
    seconds and writes its settings file, which a download has no need for.
    """
    try:
        spec = importlib.util.find_spec("ultralytics")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return DEFAULT_BASE_URL
    source = Path(next(iter(spec.submodule_search_locations))) / "utils" / "downloads.py"
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError):
        return DEFAULT_BASE_URL
    repo, release = _asset_defaults(tree)
    if not repo or not release:
        logger.debug("no release found in %s; using %s", source, DEFAULT_BASE_URL)
        return DEFAULT_BASE_URL
    return f"https://github.com/{repo}/releases/download/{release}"


def _asset_defaults(tree: ast.Module) -> tuple[str | None, str | None]:
    """The ``repo`` and ``release`` defaults of ``attempt_download_asset`` in ``tree``."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "attempt_download_asset":
            args = node.args.args[len(node.args.args) - len(node.args.defaults) :]
            found = {
                arg.arg: default.value
                for arg, default in zip(args, node.args.defaults, strict=True)
                if isinstance(default, ast.Constant) and isinstance(default.value, str)
            }
            return found.get("repo"), found.get("release")
    return None, None


def asset_revision(url: str, headers: Mapping[str, str]) -> str:
    """The immutable revision of the asset at ``url``, from the headers of a HEAD answer."""
    for name in ("ETag", "Last-Modified", "Content-Length"):
        if value := headers.get(name):
            payload = [_REVISION_SCHEME, url, name.lower(), value]
            return hashlib.sha256(json.dumps(payload).encode()).hexdigest()
    raise errors.HubError(f"{url} answered without ETag, Last-Modified or size: cannot pin it.")


class UltralyticsHub(HubPlugin):
    """YOLO weights by name, from Ultralytics' release assets or a mirror of them."""

    name = "ultralytics"
    description = "Ultralytics YOLO weights (MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL)"

    @cached_property
    def _pool(self) -> HttpPool:
        return HttpPool()

    @property
    def base_url(self) -> str:
        configured = self.settings.ultralytics_base_url
        return (configured or default_base_url()).rstrip("/")

    def tool_versions(self) -> dict[str, str]:
        return tool_versions()

    def validate(self, reference: ModelReference) -> ModelReference:
        name = reference.id.removesuffix(".pt")
        if not NAME_PATTERN.match(name):
            raise errors.InvalidReferenceError(
                f"{reference.id!r} is not an Ultralytics YOLO name: write {NAME_RULE}."
            )
        if reference.revision and not _DIGEST.match(reference.revision):
            raise errors.InvalidReferenceError(
                f"{reference} names a revision, but Ultralytics assets have no branches or tags: "
                "the release is part of MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL "
                f"({self.base_url}); leave out '@{reference.revision}'."
            )
        return reference.model_copy(update={"id": name})

    def resolve(self, reference: ModelReference) -> ResolvedModel:
        path = f"{reference.id}.pt"
        url = f"{self.base_url}/{path}"
        status, headers = self._head(url, reference)
        self._check_status(reference, status)
        length = headers.get("Content-Length", "")
        if not length.isdigit():
            raise errors.HubError(
                f"{url} answered without a size (Content-Length): cannot verify the download."
            )
        revision = asset_revision(url, headers)
        if reference.revision and reference.revision != revision:
            raise errors.RevisionNotFoundError(
                f"{reference}: the file at {url} changed since that revision was stored; "
                "pull without '@...' to get the current one."
            )

        file = RemoteFile(path=path, size=int(length))
        chosen = select_files([file], reference.include, reference.exclude)
        if not chosen:
            raise errors.RemoteFileNotFoundError(
                f"{reference} is the single file {path!r}, which the include/exclude patterns "
                "leave out: drop the patterns."
            )
        return ResolvedModel(reference=reference, revision=revision, files=chosen)

    def fetch_file(
        self,
        resolved: ResolvedModel,
        file: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
    ) -> str:
        reference = resolved.reference
        url = f"{self.base_url}/{file.path}"

        def check(status: int, _headers: Mapping[str, str]) -> None:
            self._check_status(reference, status)

        return fetch_file(
            self._pool,
            url,
            dest,
            size=file.size,
            check_response=check,
            on_bytes=on_bytes,
            stall_timeout=self.settings.stall_timeout,
            retries=self.settings.retries,
            fsync=self.settings.fsync,
            label=f"{reference.hub}:{file.path}",
        )

    def _head(self, url: str, reference: ModelReference) -> tuple[int, Mapping[str, str]]:
        """Status and headers of a HEAD of ``url``, after redirects (GitHub sends to a CDN)."""
        try:
            response = self._pool.for_url(url).request(
                "HEAD",
                url,
                headers={"Accept-Encoding": "identity"},
                retries=urllib3.Retry(total=None, connect=1, read=1, status=0, redirect=10),
                timeout=urllib3.Timeout(self.settings.stall_timeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise errors.HubUnreachableError(
                f"cannot reach {self.base_url} for {reference} ({type(exc).__name__}): check the "
                "network, or MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL if you use a mirror."
            ) from exc
        return response.status, response.headers

    def _check_status(self, reference: ModelReference, status: int) -> None:
        """Raise our error for a refusal; return for a success."""
        if status < 400:
            return
        where = f"{self.base_url}/{reference.id}.pt"
        if status in (404, 410):
            raise errors.ModelNotFoundError(
                f"{reference} was not found: {where} answered {status}. Names are {NAME_RULE}; "
                "not every size and task is published in every release."
            )
        if status in (401, 403):
            raise errors.UnauthorizedError(
                f"{where} answered {status}: the server (or a proxy) refuses the download; check "
                "MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL."
            )
        if status == 429 or status >= 500:
            raise errors.HubUnreachableError(
                f"{where} answered {status}: the server is busy or down, try again later."
            )
        raise errors.HubError(f"{where} answered {status} for {reference}.")
