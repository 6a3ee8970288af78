"""Ollama models, from registry.ollama.ai or any OCI registry that holds them.

References: ``ollama:llama3.2@1b``, ``ollama:namespace/model@tag``,
``ollama:registry.example+5000/namespace/model@tag`` (a port is written ``+port``: our ids have no
':'); Ollama's own ``ollama:llama3.2:1b`` and ``ollama:registry.example:5000/ns/model:tag`` are
read as those (:func:`model_download.refs.ollama_id`). The tag defaults to ``latest``, the
namespace to ``library``, the registry to ``MODEL_DOWNLOAD_OLLAMA_REGISTRY``. The stored id is
``host/namespace/model``, so two registries never share a name, and the stored revision is the
manifest's digest, ``sha256-<hex>`` (which a reference may also give, to pin a manifest).

Files keep Ollama's own paths (``manifests/<host>/<ns>/<model>/<tag>``, ``blobs/sha256-<hex>``),
so every stored model folder is an ``OLLAMA_MODELS`` directory, and ``on_stored`` links each model
into one shared directory, ``<MODELS_DIR>/ollama-models``: ``OLLAMA_MODELS=<that> ollama serve``
serves every model pulled, with no second download and no copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from model_download import errors
from model_download.listing import ModelSummary, SearchPage
from model_download.ranged import fetch_ranged
from model_download.refs import ModelReference, make_reference, ollama_id
from model_download.resolved import RemoteFile, ResolvedModel, select_files
from model_download.settings import Settings
from model_download.store.store import ModelStore, StoredModel
from model_download.transfer import RETRY_STATUSES, HttpPool, fetch_file
from plugins.base import HubPlugin
from plugins.hubs.ollama_errors import missing_error, registry_error, translated
from plugins.hubs.ollama_layout import link_model, prune, write_atomically
from plugins.hubs.ollama_registry import (
    DEFAULT_REGISTRY,
    MANIFEST_TYPES,
    PINNED,
    NameUnknown,
    OllamaName,
    RegistryClient,
    Unauthorized,
    manifest_files,
    parse_name,
    registry_host,
    verified_digest,
)

if TYPE_CHECKING:  # the ollama client loads only when a server is driven
    from plugins.hubs.ollama_server import OllamaServer

logger = logging.getLogger(__name__)

#: The folder under the store root that is one ``OLLAMA_MODELS`` directory for every model.
SHARED_DIR = "ollama-models"
_ACCEPT = ", ".join(MANIFEST_TYPES)
_KEEP_MANIFESTS = 64


class _Challenge(Exception):
    """A blob request was refused for want of a (fresh) token."""

    def __init__(self, header: str) -> None:
        super().__init__(header)
        self.header = header


def _searched_model(query: str | None, author: str | None, tags: tuple[str, ...]) -> str:
    """The model whose tags a search lists, in our spelling; our error for what a registry
    cannot do (list every model, filter by author or tag)."""
    if not query:
        raise errors.InvalidReferenceError(
            "an Ollama registry lists the tags of a model: name one, e.g. 'llama3.2'."
        )
    if author:
        raise errors.InvalidReferenceError(
            "an Ollama registry cannot filter by author (--author, 'author'): drop it, and "
            f"name the namespace in the model instead ('{author}/{query}')."
        )
    if tags:
        raise errors.InvalidReferenceError(
            "an Ollama registry cannot filter by tag (--tag, 'tags'): drop it, every tag of "
            f"{query!r} is listed."
        )
    model_id, tag = ollama_id(query)
    if tag:
        raise errors.InvalidReferenceError(
            f"{query!r} names a tag, and a search lists every tag of a model: search for "
            f"{query.rsplit(':', 1)[0]!r}."
        )
    return model_id


class OllamaHub(HubPlugin):
    """Ollama models by ``[host/][namespace/]model`` and a tag, laid out for Ollama to serve.

    Attributes:
        parallel_threshold: blobs larger than this many bytes are fetched as parallel ranges.
        parallel_parts: how many ranges such a blob is fetched in.
    """

    name = "ollama"
    description = "Ollama registry (MODEL_DOWNLOAD_OLLAMA_REGISTRY); a server at OLLAMA_HOST"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.parallel_threshold = int(settings.ollama_parallel_threshold)
        self.parallel_parts = settings.ollama_parallel_parts
        # Manifests read by resolve, by digest, so that fetching one costs no second request.
        self._manifests: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._pool = HttpPool()
        # Its own connections: transfers that end on an error status leave theirs unusable.
        self._registry = RegistryClient(
            HttpPool(), timeout=settings.stall_timeout, retries=settings.retries
        )

    @property
    def registry_url(self) -> str:
        """The default registry's base URL."""
        return (self.settings.ollama_registry or DEFAULT_REGISTRY).rstrip("/")

    def check(self) -> None:
        parts = urlsplit(self.registry_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise errors.PluginUnavailableError(
                f"MODEL_DOWNLOAD_OLLAMA_REGISTRY={self.registry_url!r} is not a registry URL: "
                f"give one such as {DEFAULT_REGISTRY}."
            )

    # -- the hub interface -----------------------------------------------------------------------

    def validate(self, reference: ModelReference) -> ModelReference:
        name = self._name(reference)
        fields = reference.model_dump()
        return make_reference(**{**fields, "id": name.store_id, "revision": name.tag})

    def resolve(self, reference: ModelReference) -> ResolvedModel:
        reference = self.validate(reference)
        name, base = self._where(reference)
        pinned = PINNED.match(name.tag)
        wanted = f"sha256:{pinned.group(1)}" if pinned else name.tag
        with translated(name, base):
            answer = self._registry.get(
                base, name.repo, f"/v2/{name.repo}/manifests/{wanted}", _ACCEPT
            )
            if answer.status == 404:
                raise missing_error(name, base, answer, partial(self._tags, name, base))
            if answer.status != 200:
                raise registry_error(name, base, answer.status, answer.error_code())
        digest = verified_digest(answer, pinned.group(1) if pinned else None, f"{name} from {base}")
        files = manifest_files(answer.body, name)
        logger.debug("%s is manifest sha256:%s on %s", name, digest, base)
        with self._lock:
            self._manifests[digest] = answer.body
            while len(self._manifests) > _KEEP_MANIFESTS:
                self._manifests.pop(next(iter(self._manifests)))
        chosen = select_files(files, reference.include, reference.exclude)
        if not chosen:
            raise errors.RemoteFileNotFoundError(
                f"no file of {reference} matches include={list(reference.include)} "
                f"exclude={list(reference.exclude)}: loosen the patterns (Ollama needs them all)."
            )
        return ResolvedModel(reference=reference, revision=f"sha256-{digest}", files=chosen)

    def fetch_file(
        self,
        resolved: ResolvedModel,
        file: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
    ) -> str:
        name, base = self._where(resolved.reference)
        if not file.path.startswith("blobs/"):
            return self._write_manifest(name, base, file, dest, on_bytes)
        url = f"{base}/v2/{name.repo}/blobs/sha256:{file.sha256}"
        used = self._registry.auth_headers(base, name.repo)
        try:
            with translated(name, base):
                return self._transfer(name, url, file, dest, on_bytes, used)
        except _Challenge as challenge:
            # The token expired, or this registry wants one for blobs only: one new token.
            with translated(name, base):
                self._registry.authorize(base, name.repo, challenge.header, stale=used)
                headers = self._registry.auth_headers(base, name.repo)
                try:
                    return self._transfer(name, url, file, dest, on_bytes, headers)
                except _Challenge as again:
                    raise Unauthorized("the registry refused the token it handed out") from again

    def on_stored(self, stored: StoredModel, store: ModelStore) -> None:
        link_model(stored, store.root / SHARED_DIR)

    # -- more than the hub interface -------------------------------------------------------------

    def search(
        self,
        query: str | None,
        *,
        author: str | None = None,
        tags: tuple[str, ...] = (),
        page: int = 1,
        page_size: int = 20,
    ) -> SearchPage:
        """The tags of one model (``query``): registries list tags, not a catalogue of models.

        Raises:
            InvalidReferenceError: no model named, or an author or tag filter given (a registry
                has neither to filter by).
        """
        model_id = _searched_model(query, author, tags)
        found = self.list_tags(model_id)
        start = (page - 1) * page_size
        chosen = found[start : start + page_size]
        models = [ModelSummary(id=model_id, revision=tag) for tag in chosen]
        return SearchPage(
            hub=self.name,
            query=query,
            page=page,
            page_size=page_size,
            models=models,
            has_more=len(found) > start + page_size,
        )

    def list_tags(self, name: str) -> list[str]:
        """The tags of model ``name`` (``[host/][namespace/]model``) on its registry (raises
        ModelNotFoundError for an unknown model, HubError if the registry lists no tags)."""
        parsed = parse_name(name, None, registry_host(self.registry_url))
        base = self._base(parsed)
        tags = self._tags(parsed, base)
        if tags is None:
            raise errors.HubError(f"{base} does not list the tags of its models.")
        return tags

    def on_deleted(self, store: ModelStore) -> None:
        self.prune_shared(store)

    def prune_shared(self, store: ModelStore) -> list[str]:
        """Unlink from ``ollama-models`` what no stored model holds any more; free its blobs.

        Only files linked from the store are touched: models Ollama pulled there itself stay.

        Returns:
            The paths removed, relative to the shared directory.
        """
        return prune(store, store.root / SHARED_DIR, self.name)

    def server(self) -> OllamaServer:
        """The Ollama server at ``OLLAMA_HOST``, through the official client: ``pull`` (with
        its progress), ``list``, ``show`` and ``delete`` there."""
        host = self.settings.ollama_host
        if not host:
            raise errors.ServiceUnavailableError(
                "no Ollama server is configured: set OLLAMA_HOST (e.g. 127.0.0.1:11434)."
            )
        if importlib.util.find_spec("ollama") is None:
            raise errors.PluginUnavailableError(
                "the ollama client is not installed: pip install 'ollama>=0.6'."
            )
        from plugins.hubs.ollama_server import OllamaServer

        return OllamaServer(host, timeout=self.settings.stall_timeout)

    # -- helpers ---------------------------------------------------------------------------------

    def _name(self, reference: ModelReference) -> OllamaName:
        return parse_name(reference.id, reference.revision, registry_host(self.registry_url))

    def _where(self, reference: ModelReference) -> tuple[OllamaName, str]:
        name = self._name(reference)
        return name, self._base(name)

    def _base(self, name: OllamaName) -> str:
        # Only the configured registry may be plain HTTP; any other host is reached over TLS.
        if name.host == registry_host(self.registry_url):
            return self.registry_url
        return f"https://{name.host}"

    def _transfer(
        self,
        name: OllamaName,
        url: str,
        file: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
        headers: dict[str, str],
    ) -> str:
        common: dict[str, Any] = {
            "size": file.size,
            "sha256": file.sha256,
            "headers": headers,
            "check_response": partial(self._check_blob, name, self._base(name), file.path),
            "on_bytes": on_bytes,
            "stall_timeout": self.settings.stall_timeout,
            "retries": self.settings.retries,
            "fsync": self.settings.fsync,
            "label": f"{name} {file.path}",
        }
        if file.size > self.parallel_threshold:
            return fetch_ranged(self._pool, url, dest, parts=self.parallel_parts, **common)
        return fetch_file(self._pool, url, dest, **common)

    def _check_blob(
        self, name: OllamaName, base: str, path: str, status: int, headers: Mapping[str, str]
    ) -> None:
        if status == 401:
            raise _Challenge(headers.get("WWW-Authenticate", ""))
        if status >= 400 and status not in RETRY_STATUSES:
            raise registry_error(name, base, status, path=path)

    def _write_manifest(
        self,
        name: OllamaName,
        base: str,
        file: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
    ) -> str:
        with self._lock:
            body = self._manifests.get(file.sha256 or "")
        if body is None:  # resolved in another process: ask again, by digest
            with translated(name, base):
                path = f"/v2/{name.repo}/manifests/sha256:{file.sha256}"
                answer = self._registry.get(base, name.repo, path, _ACCEPT)
                if answer.status != 200:
                    raise registry_error(name, base, answer.status, answer.error_code(), file.path)
            body = answer.body
        if hashlib.sha256(body).hexdigest() != file.sha256 or len(body) != file.size:
            raise errors.IntegrityError(
                f"the manifest of {name} changed between resolving and fetching it: pull again."
            )
        write_atomically(dest, body, fsync=self.settings.fsync)
        on_bytes(len(body))
        return file.sha256 or ""

    def _tags(self, name: OllamaName, base: str) -> list[str] | None:
        """Every tag of ``name``, or None when the registry does not list tags."""
        with translated(name, base):
            try:
                return self._registry.list_tags(base, name.repo)
            except NameUnknown:
                raise registry_error(name, base, 404, "NAME_UNKNOWN") from None
