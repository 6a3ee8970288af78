"""The pulls of one ``model-download pull``: every model at once, each failure its own."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from model_download.cancel import Cancel
from model_download.cli_progress import RichProgress
from model_download.refs import ModelReference
from model_download.runtime import get_registry, get_settings, get_store
from model_download.store.store import StoredModel

logger = logging.getLogger(__name__)


def pull_all(references: list[ModelReference], progress: RichProgress) -> list[StoredModel | str]:
    """Pull the models at once: each one's stored model, or why it failed.

    ``progress`` is entered as a context manager around the pulls. On Ctrl-C every transfer
    stops promptly, keeping its partial file, and the ``KeyboardInterrupt`` goes on.
    """
    cancel = Cancel()
    with progress, ThreadPoolExecutor(get_settings().download_concurrency) as pool:
        futures = [pool.submit(pull_one, r, progress, cancel) for r in references]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            cancel.set("interrupted")
            raise


def pull_one(
    reference: ModelReference, progress: RichProgress, cancel: Cancel
) -> StoredModel | str:
    """Resolve and download one model; its failure, whatever it is, is returned as text."""
    from model_download.errors import ModelDownloadError
    from model_download.pull import download_resolved, resolve_reference

    try:
        resolved = resolve_reference(reference, get_registry())
        return download_resolved(
            resolved,
            store=get_store(),
            registry=get_registry(),
            progress=progress,
            file_concurrency=get_settings().file_concurrency,
            cancel=cancel,
        )
    except ModelDownloadError as exc:
        return str(exc)
    except Exception as exc:
        # Not one of our errors, but still this model's failure alone: the others go on.
        logger.info("pull of %s failed", reference, exc_info=True)
        return (
            f"{reference}: unexpected {type(exc).__name__}: {exc} (run with -v for the "
            "traceback; please report it)"
        )
