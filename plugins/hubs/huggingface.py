"""The Hugging Face hub (or any server speaking its protocol, such as a mirror)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx2
from huggingface_hub import HfApi
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from model_download import errors
from model_download.refs import ModelReference
from model_download.resolved import RemoteFile, ResolvedModel, looks_like_openvino_ir, select_files
from model_download.store.manifest import tool_versions
from model_download.transfer import fetch_file
from plugins.base import HubPlugin

_LIBRARY = "model-download"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# The hub's own rule for a repo name: at most 96 characters, no '--' nor '..'.
_NAME = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
#: Organisations whose models are published in OpenVINO IR.
OPENVINO_ORGS = frozenset({"OpenVINO"})


class HuggingFaceHub(HubPlugin):
    """Models from the Hugging Face hub, by ``org/name`` and a branch, tag or commit."""

    name = "huggingface"
    description = "Hugging Face hub (HF_ENDPOINT, HF_TOKEN)"

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
        org = reference.id.split("/")[0] if "/" in reference.id else ""
        is_ir = org in OPENVINO_ORGS or looks_like_openvino_ir([f.path for f in every])
        return ResolvedModel(
            reference=reference,
            revision=commit,
            files=chosen,
            format="openvino-ir" if is_ir else None,
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
                get_session(),
                url,
                dest,
                size=file.size,
                sha256=file.sha256,
                git_oid=file.git_oid,
                headers=headers,
                check_response=hf_raise_for_status,
                on_bytes=on_bytes,
                stall_timeout=self.settings.stall_timeout,
                retries=self.settings.retries,
                label=f"{reference.id}/{file.path}",
            )

    @contextmanager
    def _translated(self, reference: ModelReference, path: str | None = None) -> Iterator[None]:
        """Turn huggingface_hub's errors into ours, each with what the user can do."""
        try:
            yield
        except errors.ModelDownloadError:
            raise
        except hf_errors.GatedRepoError as exc:
            raise errors.GatedModelError(
                f"{reference} is gated: accept its terms at {self._endpoint}/{reference.id} "
                "with your account, then set HF_TOKEN to a token of that account."
            ) from exc
        except hf_errors.RepositoryNotFoundError as exc:
            hint = (
                "check the id, and that HF_TOKEN's account can see it"
                if self._token
                else "check the id; if the model is private, set HF_TOKEN"
            )
            raise errors.ModelNotFoundError(
                f"{reference} was not found on {self._endpoint}: {hint}."
            ) from exc
        except hf_errors.RevisionNotFoundError as exc:
            raise errors.RevisionNotFoundError(
                f"{reference} has no revision {reference.revision or 'main'!r}: "
                f"see the branches and tags at {self._endpoint}/{reference.id}."
            ) from exc
        except hf_errors.EntryNotFoundError as exc:
            raise errors.RemoteFileNotFoundError(
                f"{reference} has no file {path!r} at this revision: check the include patterns."
            ) from exc
        except hf_errors.HfHubHTTPError as exc:
            raise _from_status(reference, exc, self._endpoint) from exc
        except (httpx2.TransportError, hf_errors.OfflineModeIsEnabled) as exc:
            raise errors.HubUnreachableError(
                f"cannot reach {self._endpoint} for {reference} ({type(exc).__name__}): "
                "check the network, or HF_ENDPOINT if you use a mirror."
            ) from exc


def _from_status(
    reference: ModelReference, exc: hf_errors.HfHubHTTPError, endpoint: str
) -> errors.ModelDownloadError:
    status = exc.response.status_code if exc.response is not None else 0
    if status == 401:
        return errors.UnauthorizedError(
            f"{endpoint} rejected the credentials for {reference}: set HF_TOKEN to a valid "
            "access token (Settings > Access Tokens on the hub)."
        )
    if status == 403:
        return errors.UnauthorizedError(
            f"HF_TOKEN may not read {reference}: use a token with read access to it."
        )
    if status == 429 or status >= 500:
        return errors.HubUnreachableError(
            f"{endpoint} answered {status} for {reference}: the hub is busy or down, try later."
        )
    return errors.HubError(f"{endpoint} answered {status} for {reference}: {exc}")


def _remote_file(entry: RepoFile) -> RemoteFile:
    if entry.lfs:
        # git holds an LFS file as a pointer, so its blob id hashes the pointer, not the bytes.
        return RemoteFile(path=entry.path, size=entry.size, sha256=entry.lfs.sha256)
    return RemoteFile(path=entry.path, size=entry.size, git_oid=entry.blob_id)
