"""What a plugin is: a hub that resolves and fetches models, or a converter that transforms them.

Plugins are plain Python with no Prefect in them, so they are easy to test and to reuse; the
Prefect tasks in ``tasks/`` call them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from model_download.refs import ModelReference
from model_download.resolved import RemoteFile, ResolvedModel
from model_download.settings import Settings


class Plugin(ABC):
    """Shared by every plugin kind."""

    #: The name users type, e.g. ``huggingface``.
    name: ClassVar[str]
    #: One line for listings.
    description: ClassVar[str] = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check(self) -> None:
        """Raise :class:`~model_download.errors.PluginUnavailableError` if it cannot run here.

        Called once when the registry loads the plugin; keep it cheap (no network). The
        default has nothing to check.
        """
        return None

    def tool_versions(self) -> dict[str, str]:
        """Versions of the libraries this plugin uses, recorded in manifests."""
        return {}


class HubPlugin(Plugin):
    """A model hub: turns references into resolved models and fetches their files."""

    def validate(self, reference: ModelReference) -> ModelReference:
        """Apply this hub's own rules for ids and revisions; return the reference to use.

        Raises:
            InvalidReferenceError: naming the problem and the fix.
        """
        return reference

    @abstractmethod
    def resolve(self, reference: ModelReference) -> ResolvedModel:
        """Pin ``reference`` to an immutable revision and list the files it selects."""

    @abstractmethod
    def fetch_file(
        self,
        resolved: ResolvedModel,
        file: RemoteFile,
        dest: Path,
        on_bytes: Callable[[int], None],
    ) -> str:
        """Download ``file`` into ``dest``, resuming what is there; return its verified sha256."""


class ConverterPlugin(Plugin):
    """Turns a stored model into another format (OpenVINO IR, say)."""

    @abstractmethod
    def accepts(self, files: list[str], target: str) -> bool:
        """Whether a model made of ``files`` can be converted to ``target`` by this plugin."""

    @abstractmethod
    def convert(self, source: Path, options: dict[str, Any], staging: Path) -> dict[str, Any]:
        """Write the converted model into ``staging``; return what the manifest should record."""
