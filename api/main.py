"""The REST API: the v1 routes of the reference Model Download service, and more, on Prefect."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, Request, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from api.deps import require_api_key
from api.routes import health, jobs, models, plugins
from model_download import errors
from model_download.runtime import get_settings

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"

# Our errors, by what the client did wrong (or what is missing), and the status that says so.
_STATUSES: list[tuple[type[Exception], int]] = [
    (errors.ModelNotInStoreError, status.HTTP_404_NOT_FOUND),
    (errors.InvalidReferenceError, status.HTTP_400_BAD_REQUEST),
    (errors.UnknownPluginError, status.HTTP_400_BAD_REQUEST),
    (errors.PluginUnavailableError, status.HTTP_400_BAD_REQUEST),
    # The hub answered, and it has no such thing: the client named it wrong, not a hub fault.
    (errors.ModelNotFoundError, status.HTTP_404_NOT_FOUND),
    (errors.RevisionNotFoundError, status.HTTP_404_NOT_FOUND),
    (errors.HubError, status.HTTP_502_BAD_GATEWAY),
    (errors.LockTimeout, status.HTTP_503_SERVICE_UNAVAILABLE),
    (errors.ServiceUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
]


def create_app() -> FastAPI:
    """The API application; settings come from the environment (see README)."""
    settings = get_settings()
    app = FastAPI(
        lifespan=_lifespan,
        title="model-download",
        version="1",
        summary="Fetch AI models into a verified store, convert them to OpenVINO IR, validate.",
        docs_url="/docs",
        openapi_url=f"{PREFIX}/openapi.json",
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    guarded = [Depends(require_api_key)]
    app.include_router(health.router, prefix=PREFIX)
    for router in (models.router, jobs.router, plugins.router):
        app.include_router(router, prefix=PREFIX, dependencies=guarded)
    _add_error_handlers(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with get_client() as client:
        app.state.prefect = client
        yield
    app.state.prefect = None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ModelDownloadError)
    async def our_error(request: Request, exc: errors.ModelDownloadError) -> JSONResponse:
        code = next((c for cls, c in _STATUSES if isinstance(exc, cls)), 400)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(ObjectNotFound)
    async def not_found(request: Request, exc: ObjectNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"not found: {request.url.path}"}, status_code=404)

    @app.exception_handler(PrefectHTTPStatusError)
    async def prefect_error(request: Request, exc: PrefectHTTPStatusError) -> JSONResponse:
        code = exc.response.status_code
        logger.warning("the Prefect server answered %s: %s", code, exc)
        if code < 500:
            detail = f"the Prefect server refused the API's call ({code}): see the API's log."
            return JSONResponse({"detail": detail}, status_code=502)
        # Prefect on SQLite answers 503 while its database is locked, even after its client's
        # own retries: the server is busy, not gone.
        detail = (
            f"the Prefect server answered {code} (busy: its database may be locked): try again "
            "shortly; if it persists, see its log (Postgres serves many writers better than "
            "SQLite)."
        )
        return JSONResponse({"detail": detail}, status_code=503)

    @app.exception_handler(httpx.TransportError)
    async def prefect_down(request: Request, exc: httpx.TransportError) -> JSONResponse:
        logger.warning("Prefect server unreachable: %s", exc)
        return JSONResponse(
            {
                "detail": "the Prefect server is unreachable: start the service (make run) or "
                "check PREFECT_API_URL."
            },
            status_code=503,
        )
