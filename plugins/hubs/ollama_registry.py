"""Ollama model names and the OCI distribution protocol an Ollama registry speaks.

A model is ``[host/][namespace/]model[:tag]``, read from the right as Ollama reads it: one part is
a model of the ``library`` namespace, two are ``namespace/model``, three name the registry host
too. Our references forbid ':' in ids, so a port is written ``host+port`` there (a '+' never
occurs in a host name); either spelling is accepted wherever a name is read.

Registry calls follow the distribution spec: ``GET /v2/<ns>/<model>/manifests/<tag>``, blobs at
``/v2/<ns>/<model>/blobs/sha256:<hex>``, tags at ``/v2/<ns>/<model>/tags/list``; a 401 carrying a
``Bearer`` challenge is answered with an anonymous token from the challenge's realm.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import urllib3

from model_download import errors
from model_download.resolved import RemoteFile
from model_download.transfer import RETRY_STATUSES, HttpPool

logger = logging.getLogger(__name__)

DEFAULT_REGISTRY = "https://registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
# Ollama's own rules for each part of a name (its types/model name parsing).
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,340}(:[0-9]{1,5})?$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,79}$")
_MODEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
#: A revision that pins a manifest by digest: how digests are written in our revisions and paths.
PINNED = re.compile(r"^sha256-([0-9a-f]{64})$")
# A manifest is a few hundred bytes: anything far larger is not one.
_MANIFEST_LIMIT = 4 << 20
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


@dataclass(frozen=True)
class OllamaName:
    """A fully qualified model name: registry host (with any port), namespace, model, tag."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def repo(self) -> str:
        """The repository path on the registry: ``namespace/model``."""
        return f"{self.namespace}/{self.model}"

    @property
    def store_id(self) -> str:
        """Our model id: ``host/namespace/model``, a port written ``+port``."""
        return f"{self.host.replace(':', '+')}/{self.repo}"

    @property
    def manifest_path(self) -> str:
        """Where Ollama keeps this tag's manifest under ``OLLAMA_MODELS``."""
        return f"manifests/{self.host}/{self.repo}/{self.tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"


def parse_name(text: str, tag: str | None, default_host: str) -> OllamaName:
    """Read ``[host/][namespace/]model[:tag]``; ``tag`` (a revision) wins over none in ``text``.

    Raises:
        InvalidReferenceError: a part breaks Ollama's naming rules, or two tags disagree.
    """
    rest, colon, inline = text.strip().rpartition(":")
    if not colon or "/" in inline:  # the only ':' is a port's
        rest, inline = text.strip(), ""
    if inline and tag and inline != tag:
        raise errors.InvalidReferenceError(
            f"{text!r} names tag {inline!r} but the revision says {tag!r}: give the tag once."
        )
    parts = rest.split("/")
    if len(parts) > 3:
        raise errors.InvalidReferenceError(
            f"{text!r} has {len(parts)} parts: an Ollama model is [host/][namespace/]model."
        )
    host, namespace, model = [default_host, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    name = OllamaName(_decode_host(host), namespace, model, tag or inline or DEFAULT_TAG)
    _check(name, text)
    return name


def _decode_host(segment: str) -> str:
    # Host names are case-blind: one spelling, so one store folder and one manifests folder.
    host, plus, port = segment.lower().rpartition("+")
    return f"{host}:{port}" if plus and port.isdigit() else segment.lower()


def _check(name: OllamaName, text: str) -> None:
    for what, value, rule, allowed in (
        ("host", name.host, _HOST, "letters, digits, '.', '-', '_' and a port as host+port"),
        ("namespace", name.namespace, _NAMESPACE, "letters, digits, '-' and '_'"),
        ("model", name.model, _MODEL, "letters, digits, '.', '-' and '_'"),
        ("tag", name.tag, _TAG, "letters, digits, '.', '-' and '_'"),
    ):
        if not rule.match(value):
            raise errors.InvalidReferenceError(
                f"{text!r} has an invalid {what} {value!r}: Ollama allows {allowed}, starting "
                "with a letter, digit or '_' (write ollama:[host/][namespace/]model@tag)."
            )


def registry_host(url: str) -> str:
    """The host (and port) of a registry URL, as Ollama names it in paths."""
    return urlsplit(url).netloc.lower()


def manifest_files(body: bytes, name: OllamaName) -> list[RemoteFile]:
    """The files an Ollama manifest stands for: its config and layers, then itself.

    Raises:
        HubError: ``body`` is not a single-image manifest.
    """
    blobs = _blob_sizes(body)
    if blobs is None:
        raise errors.HubError(
            f"{name} is not an Ollama model: its manifest does not list a config and layers "
            "with sha256 digests (a multi-platform image index, say); check the name."
        )
    files = [
        RemoteFile(path=f"blobs/sha256-{hex_digest}", size=size, sha256=hex_digest)
        for hex_digest, size in blobs.items()
    ]
    digest = hashlib.sha256(body).hexdigest()
    return [*files, RemoteFile(path=name.manifest_path, size=len(body), sha256=digest)]


def manifest_blobs(body: bytes) -> set[str]:
    """The hex digests of the blobs a stored manifest names (empty if it cannot be read)."""
    return set(_blob_sizes(body) or ())


def _blob_sizes(body: bytes) -> dict[str, int] | None:
    """Hex digest to size of the config and layers (a blob listed twice once), or None."""
    try:
        manifest = json.loads(body)
        blobs = {}
        for entry in [manifest["config"], *manifest["layers"]]:
            match = _DIGEST.match(entry["digest"])
            if match is None:
                return None
            size = int(entry["size"])
            if size < 0:
                return None
            blobs[match.group(1)] = size
        return blobs
    except (ValueError, KeyError, TypeError):
        return None


def verified_digest(answer: Answer, pinned: str | None, label: str) -> str:
    """The sha256 of a manifest's bytes, once it agrees with the registry's and the user's.

    Raises:
        IntegrityError: the bytes hash to another digest than ``Docker-Content-Digest`` or the
            digest the reference pinned.
    """
    digest = hashlib.sha256(answer.body).hexdigest()
    claimed = answer.headers.get("Docker-Content-Digest", "")
    checks = [("the reference", pinned)]
    if claimed.startswith("sha256:"):  # other algorithms cannot be compared with ours
        checks.append(("the registry", claimed.removeprefix("sha256:")))
    for said, expected in checks:
        if expected and expected != digest:
            raise errors.IntegrityError(
                f"the manifest of {label} has sha256 {digest}, {said} says {expected}; nothing "
                "was stored: pull again, and if it persists, something between here and the "
                "registry alters what it sends."
            )
    return digest


@dataclass
class Answer:
    """A registry's answer to one request: status, headers, a bounded body."""

    status: int
    headers: Mapping[str, str]  # case-blind, as HTTP header names are
    body: bytes

    def error_code(self) -> str:
        """The first ``errors[].code`` of a distribution error body, or ''."""
        try:
            return str(json.loads(self.body)["errors"][0]["code"])
        except (ValueError, KeyError, IndexError, TypeError):
            return ""


class Unauthorized(Exception):
    """The registry wants credentials the anonymous token exchange could not get."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NameUnknown(Exception):
    """The registry has no repository by that name."""


class RegistryClient:
    """Manifest, tag and token requests to registries, with one token per repository."""

    def __init__(self, pool: HttpPool, *, timeout: float, retries: int) -> None:
        self._pool = pool
        self._timeout = timeout
        self._retries = retries
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._exchange = threading.Lock()

    def auth_headers(self, base: str, repo: str) -> dict[str, str]:
        """Headers that carry the token got for ``repo`` on ``base``, if any."""
        with self._lock:
            token = self._tokens.get((base, repo))
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, base: str, repo: str, path: str, accept: str = "application/json") -> Answer:
        """GET ``base + path``, answering one Bearer challenge with an anonymous token.

        Raises:
            Unauthorized: still refused after the token exchange, or no token to be had.
            urllib3.exceptions.HTTPError: the registry could not be reached.
        """
        used = self.auth_headers(base, repo)
        answer = self._send(base + path, {"Accept": accept, **used})
        if answer.status != 401:
            return answer
        self.authorize(base, repo, answer.headers.get("WWW-Authenticate", ""), stale=used)
        answer = self._send(base + path, {"Accept": accept, **self.auth_headers(base, repo)})
        if answer.status == 401:
            raise Unauthorized("the registry refused the token it handed out")
        return answer

    def authorize(
        self, base: str, repo: str, challenge: str, stale: dict[str, str] | None = None
    ) -> None:
        """Get an anonymous token for ``repo`` as the ``WWW-Authenticate`` challenge says.

        Args:
            base: the registry's base URL.
            repo: the repository the token is for.
            challenge: the ``WWW-Authenticate`` header of the refusal.
            stale: the auth headers the refused request carried; when another thread has
                replaced that token meanwhile, there is nothing to do.

        Raises:
            Unauthorized: no Bearer challenge, or the realm gave no token.
        """
        # One exchange at a time: parallel downloads refused together need one new token.
        with self._exchange:
            if stale is not None and self.auth_headers(base, repo) != stale:
                return
            self._exchange_token(base, repo, challenge)

    def _exchange_token(self, base: str, repo: str, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        fields = dict(_CHALLENGE.findall(params))
        if scheme.lower() != "bearer" or "realm" not in fields:
            raise Unauthorized(f"it asks for {scheme or 'unnamed'} credentials")
        query = {"service": fields.get("service", ""), "scope": fields.get("scope", "")}
        query["scope"] = query["scope"] or f"repository:{repo}:pull"
        realm = fields["realm"]
        joiner = "&" if urlsplit(realm).query else "?"
        answer = self._send(f"{realm}{joiner}{urlencode(query)}", {"Accept": "application/json"})
        try:
            payload = json.loads(answer.body) if answer.status == 200 else {}
            token = payload.get("token") or payload.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise Unauthorized(f"its token service answered {answer.status} without a token")
        with self._lock:
            self._tokens[(base, repo)] = token

    def list_tags(self, base: str, repo: str) -> list[str] | None:
        """Every tag of ``repo``, following ``Link`` pages; None if the registry lists none.

        Raises:
            NameUnknown: the registry has no such repository.
        """
        tags: list[str] = []
        path: str | None = f"/v2/{repo}/tags/list?n=1000"
        while path:
            answer = self.get(base, repo, path)
            if answer.status == 404 and answer.error_code() == "NAME_UNKNOWN":
                raise NameUnknown(repo)
            if answer.status != 200:
                return None
            try:
                tags.extend(str(tag) for tag in json.loads(answer.body).get("tags") or [])
            except (ValueError, AttributeError, TypeError):
                return None
            link = _NEXT.search(answer.headers.get("Link", ""))
            parts = urlsplit(link.group(1)) if link else None
            path = parts.path + (f"?{parts.query}" if parts.query else "") if parts else None
        return sorted(tags)

    def _send(self, url: str, headers: dict[str, str]) -> Answer:
        retry = urllib3.Retry(
            total=self._retries,
            backoff_factor=0.25,
            backoff_max=8,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=["GET"],
            raise_on_status=False,
            redirect=10,
        )
        response = self._pool.for_url(url).request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            retries=retry,
            timeout=urllib3.Timeout(connect=self._timeout, read=self._timeout),
        )
        try:
            body = response.read(_MANIFEST_LIMIT + 1)
            if len(body) > _MANIFEST_LIMIT:
                response.close()  # the rest must not reach the next request on this connection
                raise errors.HubError(f"{url} sent over {_MANIFEST_LIMIT} bytes: not a manifest.")
        finally:
            response.release_conn()
        return Answer(response.status, response.headers, body)
