"""The part of Intel Geti's REST API (2.x) a model download needs, and what its refusals mean.

Why plain REST and not geti-sdk: geti-sdk pins ``openvino~=2025.2`` and ``pydantic==2.12.4``,
which cannot share this project's environment (OpenVINO 2026, pydantic 2.14); a download needs a
handful of GET requests with an ``x-api-key`` header, nothing the SDK's models would add to.

Every setting is read when a request is made (:meth:`GetiConnection.from_settings`), so a changed
``GETI_TOKEN`` or CA bundle applies to the next pull without a restart. The token goes in a header
only: it is never logged, never part of an error, and never follows a redirect to another host.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from pydantic import SecretStr

from model_download import errors
from model_download.settings import Settings
from model_download.transfer import HttpPool

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_KEY_HEADER = "x-api-key"
# Metadata requests are small and idempotent: a few quick retries beat failing a pull. Other
# failures (a refused certificate) will not improve: none of those.
_JSON_RETRIES = urllib3.Retry(
    total=4,
    connect=2,
    read=1,
    other=0,
    status=2,
    redirect=5,
    backoff_factor=0.2,
    status_forcelist=(502, 503, 504),
    raise_on_status=False,
)


class TLSVerificationError(errors.HubError):
    """The server's TLS certificate is not signed by a CA we trust (or names another host)."""


@dataclass(frozen=True)
class GetiConnection:
    """Where the Geti server is and how to talk to it, as the settings say right now."""

    host: str
    token: str
    workspace_id: str | None
    verify_tls: bool
    ca_bundle: str | None
    timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> GetiConnection:
        """Read the ``geti_*`` settings; refuse to go on without a host or a token."""
        host = (settings.geti_host or "").strip().rstrip("/")
        if not host:
            raise errors.PluginUnavailableError(
                "GETI_HOST is not set: set it to your Geti server's address, e.g. "
                "https://geti.example.com."
            )
        host = host if "://" in host else f"https://{host}"
        host = host.removesuffix(API_PREFIX)
        if urlsplit(host).scheme not in ("http", "https"):
            raise errors.PluginUnavailableError(f"GETI_HOST {host!r} is not an http(s) address.")
        token = _secret(settings.geti_token)
        if not token:
            raise errors.UnauthorizedError(
                f"GETI_TOKEN is not set: create a personal access token in {host} (your account "
                "menu > Personal access token) and set GETI_TOKEN to it."
            )
        bundle = settings.geti_ca_bundle
        if bundle and not Path(bundle).is_file():
            raise errors.PluginUnavailableError(
                f"GETI_CA_BUNDLE {str(bundle)!r} is not a file: point it at the PEM file of the "
                "CA that signed the Geti server's certificate."
            )
        return cls(
            host=host,
            token=token,
            workspace_id=settings.geti_workspace_id or None,
            verify_tls=settings.geti_verify_tls,
            ca_bundle=str(bundle) if bundle else None,
            timeout=settings.stall_timeout,
        )


def _secret(value: object) -> str | None:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    text = str(value).strip() if value else ""
    return text or None


class _KeyGuard:
    """Drops the API key from any redirect that leaves the host, whoever set the retries."""

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:
        retries = kw.get("retries")
        if isinstance(retries, urllib3.Retry):
            # urllib3 strips Authorization and cookies on such redirects, not custom headers.
            dropped = retries.remove_headers_on_redirect | {_KEY_HEADER}
            kw["retries"] = retries.new(remove_headers_on_redirect=dropped)
        return super().urlopen(method, url, redirect=redirect, **kw)  # type: ignore[misc]


class _GuardedPoolManager(_KeyGuard, urllib3.PoolManager):
    pass


class _GuardedProxyManager(_KeyGuard, urllib3.ProxyManager):
    pass


class GetiPool(HttpPool):
    """Connection pools that check certificates as the Geti settings ask."""

    def __init__(self, verify_tls: bool, ca_bundle: str | None, max_connections: int = 16) -> None:
        super().__init__(max_connections)
        self._tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify_tls else "CERT_NONE"}
        if verify_tls and ca_bundle:
            self._tls["ca_certs"] = ca_bundle
        self._direct = _GuardedPoolManager(maxsize=max_connections, block=False, **self._tls)
        self._lock = threading.Lock()
        if not verify_tls:
            logger.warning("GETI_VERIFY_TLS is off: the Geti server's certificate is not checked")

    def for_url(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return self._direct
        with self._lock:
            if proxy not in self._proxies:
                self._proxies[proxy] = _GuardedProxyManager(
                    proxy, maxsize=self._max, block=False, **self._tls
                )
            return self._proxies[proxy]


class GetiClient:
    """JSON requests to one Geti server, with its errors turned into ours."""

    def __init__(self, connection: GetiConnection, pool: GetiPool) -> None:
        self.connection = connection
        self.pool = pool

    @property
    def host(self) -> str:
        return self.connection.host

    def url(self, path: str, params: Mapping[str, object] | None = None) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.host}{API_PREFIX}{path}{query}"

    def headers(self) -> dict[str, str]:
        return {_KEY_HEADER: self.connection.token}

    def get_json(
        self,
        path: str,
        what: str,
        params: Mapping[str, object] | None = None,
        missing: errors.ModelDownloadError | None = None,
    ) -> dict[str, Any]:
        """GET ``path`` (under ``/api/v1``) and decode it.

        Args:
            path: the route, e.g. ``/organizations/{org}/workspaces``.
            what: how to name what is asked for in messages, e.g. ``"project 'cards'"``.
            params: query parameters.
            missing: the error to raise for a 404 (a generic one otherwise).

        Raises:
            ModelDownloadError: Geti refused (see :meth:`status_error`), could not be reached or
                its certificate verified (:meth:`transport_error`), or answered no JSON object.
        """
        url = self.url(path, params)
        try:
            response = self.pool.for_url(url).request(
                "GET",
                url,
                headers={**self.headers(), "Accept": "application/json"},
                retries=_JSON_RETRIES,
                timeout=urllib3.Timeout(
                    connect=self.connection.timeout, read=self.connection.timeout
                ),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise self.transport_error(exc) from exc
        if response.status >= 400:
            raise self.status_error(response.status, what, _message(response.data), missing)
        try:
            body = json.loads(response.data)
        except ValueError as exc:
            raise errors.HubError(
                f"{self.host} answered {what} with something other than JSON: check that "
                "GETI_HOST is the Geti server's address."
            ) from exc
        if not isinstance(body, dict):
            raise errors.HubError(f"{self.host} answered {what} with an unexpected document.")
        return body

    def check_download(self, what: str, status: int, headers: Mapping[str, str]) -> None:
        """Raise our error for an export response that will not get better on a retry.

        The transfer retries busy and failing servers (429, 5xx) itself, before asking this.
        """
        if status >= 400:
            raise self.status_error(status, what, "", None)
        if status < 300 and headers.get("Content-Type", "").startswith("text/html"):
            # A login page or a proxy's notice: not the export, however many times we ask.
            raise errors.HubError(
                f"{self.host} answered {what} with a web page, not an archive: check GETI_HOST, "
                "and that GETI_TOKEN is valid."
            )

    def status_error(
        self,
        status: int,
        what: str,
        message: str,
        missing: errors.ModelDownloadError | None,
    ) -> errors.ModelDownloadError:
        """Our error, with what the user can do, for Geti's answer ``status`` to ``what``."""
        if status == 401:
            return errors.UnauthorizedError(
                f"{self.host} rejected GETI_TOKEN when asked for {what}: set GETI_TOKEN to a "
                "valid personal access token (your account menu > Personal access token)."
            )
        if status == 403:
            return errors.UnauthorizedError(
                f"GETI_TOKEN's account may not read {what} on {self.host}: ask the workspace's "
                "administrator for access, or use the token of an account that has it."
            )
        if status == 404:
            return missing or errors.ModelNotFoundError(
                f"{self.host} has no {what}: check the project, the model group and the model id."
            )
        if status == 429 or status >= 500:
            return errors.HubUnreachableError(
                f"{self.host} answered {status} for {what}: the server is busy or down, "
                "try again later."
            )
        detail = f": {message}" if message else "."
        return errors.HubError(f"{self.host} answered {status} for {what}{detail}")

    def transport_error(self, exc: urllib3.exceptions.HTTPError) -> errors.ModelDownloadError:
        """Our error for a request that got no answer: TLS refused, or the host unreachable."""
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        if isinstance(reason, urllib3.exceptions.SSLError):
            if why := _verify_failure(reason):
                return TLSVerificationError(
                    f"the TLS certificate of {self.host} could not be verified ({why}): set "
                    "GETI_CA_BUNDLE to the PEM file of the CA that signed it (or, on a network "
                    "you trust, GETI_VERIFY_TLS=false)."
                )
            return errors.HubUnreachableError(
                f"the TLS handshake with {self.host} failed ({reason}): check the scheme and "
                "port in GETI_HOST."
            )
        return errors.HubUnreachableError(
            f"cannot reach {self.host} ({type(reason).__name__}): check GETI_HOST and the network."
        )


def _message(data: bytes) -> str:
    """Geti's own sentence from an error body ({"error_code", "message", "http_status"})."""
    try:
        body = json.loads(data)
    except ValueError:
        return ""
    return str(body.get("message") or body.get("detail") or "") if isinstance(body, dict) else ""


def _verify_failure(exc: BaseException) -> str | None:
    """Why certificate verification failed, when that is what ``exc`` comes down to."""
    seen: BaseException | None = exc
    while seen is not None:
        for cause in (seen, *(a for a in seen.args if isinstance(a, BaseException))):
            if isinstance(cause, ssl.SSLCertVerificationError):
                return cause.verify_message or str(cause)
        seen = seen.__cause__ or seen.__context__
    return None
