"""The process's shared objects: settings, plugin registry and store, built once on first use."""

from __future__ import annotations

from functools import lru_cache

from model_download.settings import Settings, get_settings
from model_download.store.store import ModelStore


@lru_cache
def get_registry():
    """The plugin registry (plugins are loaded once per process)."""
    # Imported here: plugins import the core, and the core must not import plugins at load.
    from plugins.registry import Registry

    return Registry(get_settings())


@lru_cache
def get_store() -> ModelStore:
    """The model store at ``MODELS_DIR``."""
    settings = get_settings()
    return ModelStore(
        settings.models_dir,
        lock_stale_after=settings.lock_stale_after,
        lock_timeout=settings.lock_timeout,
    )


def reset() -> None:
    """Forget settings, registry and store, so the next call reads the environment again."""
    for cached in (get_settings, get_registry, get_store):
        cached.cache_clear()


__all__ = ["Settings", "get_registry", "get_settings", "get_store", "reset"]
