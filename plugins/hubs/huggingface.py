"""The Hugging Face hub (or any server speaking its protocol, such as a mirror)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property, partial
from itertools import islice
from pathlib import Path
from urllib.parse import quote

import httpx
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers

from model_download import errors
from model_download.listing import ModelSummary, SearchPage
from model_download.refs import ModelReference
from model_download.resolved import RemoteFile, ResolvedModel, looks_like_openvino_ir, select_files
from model_download.store.manifest import tool_versions
from model_download.transfer import HttpPool, fetch_file
from plugins.base import HubPlugin

_LIBRARY = "model-download"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# The hub's own rule for a repo name: at most 96 characters, no '--' nor '..'.
_NAME = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
#: What a search asks the hub to list of each model: /api/models leaves out the commit and
#: the last change unless asked, and lists only the fields asked once any is.
SEARCH_FIELDS = ("sha", "lastModified", "downloads", "tags")


class HuggingFaceHub(HubPlugin):
    """Models from the Hugging Face hub, by ``org/name`` and a branch, tag or commit."""

    name = "huggingface"
    description = "Hugging Face hub (HF_ENDPOINT, HF_TOKEN)"

    @cached_property
    def _pool(self) -> HttpPool:
        return HttpPool()

    @property
    def _endpoint(self) -> str:
        return self.settings.hf_endpoint

    @property
    def _token(self) -> str | None:
        # None lets huggingface_hub fall back to a token saved by `hf auth login`.
        secret = self.settings.hf_token
        return secret.get_secret_value() if secret else None

    def check(self) -> None:
        # huggingface_hub reads HF_ENDPOINT once, at import, and sends its telemetry lookups
        # there whatever endpoint= says. When our setting names another hub (a mirror set in
        # .env, say), switch them off rather than talk to a hub the user did not choose.
        if hf_constants.ENDPOINT.rstrip("/") != self._endpoint:
            hf_constants.HF_HUB_DISABLE_TELEMETRY = True

    def tool_versions(self) -> dict[str, str]:
        return tool_versions("huggingface_hub")

    def validate(self, reference: ModelReference) -> ModelReference:
        parts = reference.id.split("/")
        if len(parts) > 2 or not all(_NAME.match(part) for part in parts):
            raise errors.InvalidReferenceError(
                f"{reference.id!r} is not a Hugging Face model id: write 'org/name' (or 'name'), "
                "each part up to 96 letters, digits, '.', '_' or '-', without '--' or '..'."
            )
        # Naming the default branch makes the store remember what it resolved to.
        return reference.with_revision(reference.revision or "main")

    def resolve(self, reference: ModelReference) -> ResolvedModel:
        api = HfApi(endpoint=self._endpoint, token=self._token, library_name=_LIBRARY)
        revision = reference.revision or "main"
        with self._translated(reference):
            # A commit is already immutable: no need to ask the hub what it points to.
            if _COMMIT.match(revision):
                commit = revision
            else:
                commit = api.model_info(reference.id, revision=revision).sha
            entries = api.list_repo_tree(reference.id, revision=commit, recursive=True)
            every = [_remote_file(entry) for entry in entries if isinstance(entry, RepoFile)]

        chosen = select_files(every, reference.include, reference.exclude)
        if not chosen:
            raise errors.RemoteFileNotFoundError(
                f"no file of {reference} matches include={list(reference.include)} "
                f"exclude={list(reference.exclude)}; it has {len(every)} files: "
                "loosen the patterns."
            )
        # What is stored is what is validated: the files selected, not the repo (an
        # --exclude '*.xml' pull of an IR repo holds no IR).
        is_ir = looks_like_openvino_ir([f.path for f in chosen])
        return ResolvedModel(
            reference=reference,
            revision=commit,
            files=chosen,
            format="openvino-ir" if is_ir else None,
        )

    def search(
        self,
        query: str | None,
        *,
        author: str | None = None,
        tags: tuple[str, ...] = (),
        page: int = 1,
        page_size: int = 20,
    ) -> SearchPage:
        api = HfApi(endpoint=self._endpoint, token=self._token, library_name=_LIBRARY)
        start = (page - 1) * page_size
        reference = ModelReference(hub=self.name, id=author or "search")
        with self._translated(reference):
            # One more than the page asks, to tell whether another page follows.
            found = api.list_models(
                search=query or None,
                author=author,
                filter=list(tags) or None,
                limit=start + page_size + 1,
                expand=list(SEARCH_FIELDS),
            )
            window = list(islice(found, start, start + page_size + 1))
        models = [
            ModelSummary(
                id=m.id,
                revision=m.sha,
                updated=m.last_modified,
                downloads=m.downloads,
                tags=list(m.tags or []),
            )
            for m in window[:page_size]
        ]
        return SearchPage(
            hub=self.name,
            query=query,
            page=page,
            page_size=page_size,
            models=models,
            has_more=len(window) > page_size,
        )

    def fetch_file(
        self,
        resolved: ResolvedModel,
        file: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
    ) -> str:
        reference = resolved.reference
        # Built here, not with hf_hub_url, whose template holds the endpoint read at import.
        url = (
            f"{self._endpoint}/{reference.id}/resolve/{quote(resolved.revision, safe='')}/"
            f"{quote(file.path)}"
        )
        headers = build_hf_headers(token=self._token, library_name=_LIBRARY)
        with self._translated(reference, file.path):
            return fetch_file(
                self._pool,
                url,
                dest,
                size=file.size,
                sha256=file.sha256,
                git_oid=file.git_oid,
                headers=headers,
                check_response=partial(self._check_file_response, reference, file.path),
                on_bytes=on_bytes,
                stall_timeout=self.settings.stall_timeout,
                retries=self.settings.retries,
                fsync=self.settings.fsync,
                label=f"{reference.id}/{file.path}",
            )

    @contextmanager
    def _translated(self, reference: ModelReference, path: str | None = None) -> Iterator[None]:
        """Turn huggingface_hub's errors into ours, each with what the user can do."""
        try:
            yield
        except errors.ModelDownloadError:
            raise
        except hf_errors.HfHubHTTPError as exc:
            code = next((c for c, cls in _HF_ERRORS.items() if isinstance(exc, cls)), "")
            status = exc.response.status_code if exc.response is not None else 0
            raise self._error(reference, code, status, path) from exc
        except (httpx.TransportError, hf_errors.OfflineModeIsEnabled) as exc:
            raise errors.HubUnreachableError(
                f"cannot reach {self._endpoint} for {reference} ({type(exc).__name__}): "
                "check the network, or HF_ENDPOINT if you use a mirror."
            ) from exc

    def _check_file_response(
        self, reference: ModelReference, path: str, status: int, headers: Mapping[str, str]
    ) -> None:
        # Transfers run on urllib3 (see model_download.transfer), which huggingface_hub's own
        # response helper cannot read; the hub names its refusals in X-Error-Code.
        if status >= 400:
            raise self._error(reference, headers.get("X-Error-Code", ""), status, path)

    def _error(
        self, reference: ModelReference, code: str, status: int, path: str | None
    ) -> errors.ModelDownloadError:
        """Our error for a refusal the hub told by ``code`` (its X-Error-Code) and ``status``."""
        page = f"{self._endpoint}/{reference.id}"
        if code == "GatedRepo":
            return errors.GatedModelError(
                f"{reference} is gated: accept its terms at {page} with your account, "
                "then set HF_TOKEN to a token of that account."
            )
        if code == "RepoNotFound":
            hint = (
                "check the id, and that HF_TOKEN's account can see it"
                if self._token
                else "check the id; if the model is private, set HF_TOKEN"
            )
            return errors.ModelNotFoundError(
                f"{reference} was not found on {self._endpoint}: {hint}."
            )
        if code == "RevisionNotFound":
            return errors.RevisionNotFoundError(
                f"{reference} has no revision {reference.revision or 'main'!r}: "
                f"see the branches and tags at {page}."
            )
        if code == "EntryNotFound":
            return errors.RemoteFileNotFoundError(
                f"{reference} has no file {path!r} at this revision: check the include patterns."
            )
        if status == 401:
            return errors.UnauthorizedError(
                f"{self._endpoint} rejected the credentials for {reference}: set HF_TOKEN to a "
                "valid access token (Settings > Access Tokens on the hub)."
            )
        if status == 403:
            return errors.UnauthorizedError(
                f"HF_TOKEN may not read {reference}: use a token with read access to it."
            )
        if status == 429 or status >= 500:
            return errors.HubUnreachableError(
                f"{self._endpoint} answered {status} for {reference}: the hub is busy or down, "
                "try again later."
            )
        return errors.HubError(f"{self._endpoint} answered {status} for {reference}.")


# Most specific first: a gated repo's error is also a "repository not found" one.
_HF_ERRORS = {
    "GatedRepo": hf_errors.GatedRepoError,
    "RepoNotFound": hf_errors.RepositoryNotFoundError,
    "RevisionNotFound": hf_errors.RevisionNotFoundError,
    "EntryNotFound": hf_errors.RemoteEntryNotFoundError,
}


def _remote_file(entry: RepoFile) -> RemoteFile:
    if entry.lfs:
        # git holds an LFS file as a pointer, so its blob id hashes the pointer, not the bytes.
        return RemoteFile(path=entry.path, size=entry.size, sha256=entry.lfs.sha256)
    return RemoteFile(path=entry.path, size=entry.size, git_oid=entry.blob_id)
