from fastapi import APIRouter

from api.deps import RegistryDep
from api.schemas import PluginPublic, PluginsResponse

router = APIRouter(tags=["plugins"])


@router.get("/plugins")
def list_plugins(registry: RegistryDep) -> PluginsResponse:
    """Hub (downloader) and converter plugins, each with its availability and the reason."""
    kinds = {"hub": "downloader", "converter": "converter"}
    found = registry.plugins()
    return PluginsResponse(
        available_plugins={
            label: [p.name for p in found if p.kind == kind and p.available]
            for kind, label in kinds.items()
        },
        plugins={
            label: [
                PluginPublic(
                    name=p.name, available=p.available, reason=p.reason, description=p.description
                )
                for p in found
                if p.kind == kind
            ]
            for kind, label in kinds.items()
        },
        total_count=len(found),
        available_count=sum(p.available for p in found),
    )
