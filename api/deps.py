"""What routes depend on: settings, the store, a Prefect client, and the API key check."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from prefect.client.orchestration import PrefectClient, get_client

from model_download.runtime import get_registry, get_settings, get_store
from model_download.settings import Settings
from model_download.store.store import ModelStore
from plugins.registry import Registry


def require_api_key(
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Refuse a request without the configured API key (nothing to check when none is set)."""
    expected = get_settings().api_key
    if expected is None:
        return
    given = x_api_key
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    # Bytes, not str: compare_digest refuses non-ASCII str, and any header may hold some.
    if given is None or not secrets.compare_digest(
        _raw(given), expected.get_secret_value().encode("utf-8")
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API key: send it as X-API-Key or Authorization: Bearer.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _raw(value: str) -> bytes:
    # The server decodes header bytes as latin-1: encoding back gives the bytes the client sent
    # (a UTF-8 key arrives as its UTF-8 bytes).
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


async def prefect_client(request: Request) -> AsyncIterator[PrefectClient]:
    """The app's Prefect client, opened once at start-up (see api.main's lifespan).

    One client for the app's life: a new one per request costs a TLS context and a connection,
    tens of milliseconds, which is most of a cached request's time.
    """
    client = getattr(request.app.state, "prefect", None)
    if client is not None:
        yield client
        return
    async with get_client() as fresh:
        yield fresh


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
PrefectDep = Annotated[PrefectClient, Depends(prefect_client)]
