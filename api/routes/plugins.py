from fastapi import APIRouter

from api.deps import RegistryDep
from api.schemas import PluginCapabilities, PluginPublic, PluginsResponse
from plugins.base import HubPlugin
from plugins.registry import PluginInfo

router = APIRouter(tags=["plugins"])

#: The reference's plugin types, by our plugin kinds.
_TYPES = {"hub": "downloader", "converter": "converter"}
_ACTIVATION = (
    "Plugins are the built-in ones and those installed packages add through the "
    "model_download.hubs and model_download.converters entry points. An unavailable one says "
    "why (a missing package or setting): install or set it, then restart the service."
)


@router.get("/plugins")
def list_plugins(registry: RegistryDep) -> PluginsResponse:
    """Hub (downloader) and converter plugins, each with its availability and the reason."""
    found = registry.plugins()
    return PluginsResponse(
        available_plugins={
            label: [_public(p) for p in found if p.kind == kind] for kind, label in _TYPES.items()
        },
        total_count=len(found),
        available_count=sum(p.available for p in found),
        activation_instructions=_ACTIVATION,
    )


def _public(info: PluginInfo) -> PluginPublic:
    hub = info.kind == "hub"
    searches = (
        hub and info.instance is not None and type(info.instance).search is not (HubPlugin.search)
    )
    return PluginPublic(
        name=info.name,
        type=_TYPES[info.kind],
        description=info.description,
        capabilities=PluginCapabilities(
            # Every hub's models download at once with parallel_downloads (and their files with
            # MODEL_DOWNLOAD_FILE_CONCURRENCY); a converter downloads nothing.
            supports_parallel_downloads=hub,
            supports_search=searches,
        ),
        available=info.available,
        unavailable_reason=info.reason,
        reason=info.reason,
    )
