"""Where exports of stored models may go: folders of the store that are not its own."""

from __future__ import annotations

from model_download.errors import InvalidReferenceError
from model_download.refs import check_relative_path


def check_export_path(folder: str) -> str:
    """A folder for exports: relative, inside the store, and clear of its own folders."""
    relative = check_relative_path(folder, "download_path")
    first = relative.split("/")[0]
    if first.startswith(".") or first in _RESERVED:
        raise InvalidReferenceError(
            f"download_path {folder!r} would mix with the store's own folders: use another name, "
            "e.g. 'exports/team-a'."
        )
    return relative


# Top-level folders of the store that an export must not land in.
_RESERVED = frozenset(
    {
        "huggingface",
        "openvino-ir",
        "ollama",
        "ollama-models",
        "ultralytics",
        "geti",
        "openvino",
        "ovms",
    }
)
