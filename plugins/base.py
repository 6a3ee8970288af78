"""What a plugin is: a hub that resolves and fetches models, or a converter that transforms them.

Plugins are plain Python with no Prefect in them, so they are easy to test and to reuse; the
Prefect tasks in ``tasks/`` call them.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from model_download.conversion import ConvertOptions
from model_download.errors import InvalidReferenceError, PluginUnavailableError
from model_download.listing import SearchPage
from model_download.refs import ModelReference
from model_download.resolved import RemoteFile, ResolvedModel
from model_download.settings import Settings
from model_download.store.manifest import Manifest
from model_download.store.store import ModelStore, StoredModel


def require_packages(*modules: str, extra: str = "openvino") -> None:
    """Raise PluginUnavailableError naming the first of ``modules`` that is not installed.

    Looks the modules up without importing them: heavy SDKs load only when a plugin works.
    """
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            raise PluginUnavailableError(
                f"{module} is not installed: install the project's {extra!r} extra "
                f"(pip install 'model-download[{extra}]')."
            )


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

    def search(
        self,
        query: str | None,
        *,
        author: str | None = None,
        tags: tuple[str, ...] = (),
        page: int = 1,
        page_size: int = 20,
    ) -> SearchPage:
        """One page of the models this hub offers that match ``query`` (and the filters).

        Raises:
            InvalidReferenceError: this hub cannot list its models.
        """
        raise InvalidReferenceError(f"the {self.name} hub cannot list its models.")

    def on_stored(self, stored: StoredModel, store: ModelStore) -> None:
        """Called after a model of this hub is in the store (new or found): a place to lay it
        out for a tool that reads its own layout. Must be idempotent. The default does nothing.
        """
        return None

    def on_deleted(self, store: ModelStore) -> None:
        """Called after models of this hub were removed: undo what :meth:`on_stored` laid out
        for them. The default does nothing."""
        return None

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
    """Turns a stored model into fp32 OpenVINO IR; lower precisions are derived from that IR.

    The compression to fp16, int8 and int4 and the validation are shared by every converter
    (``plugins.converters.compress`` and ``plugins.converters.validation``).
    """

    #: The format this converter produces.
    target: ClassVar[str] = "openvino"
    #: Asked before converters with a higher number, when several accept a model.
    priority: ClassVar[int] = 100
    #: Whether lower precisions derive from its fp32 IR (False: it makes each one itself).
    derives_precisions: ClassVar[bool] = True
    #: The precisions it can deliver (fp32 is converted; the others derive from it).
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32", "fp16", "int8", "int4"})
    #: Whether its int8 is calibrated on data (``calibration_data``) rather than data-free.
    calibrates: ClassVar[bool] = False

    @abstractmethod
    def accepts(self, manifest: Manifest) -> bool:
        """Whether this converter can convert the stored model ``manifest`` describes."""

    def check_options(self, manifest: Manifest, options: ConvertOptions) -> None:
        """Refuse options that do not apply to this converter or model (before any work).

        Raises:
            InvalidReferenceError: naming the option and what applies instead.
        """
        if options.precision not in self.precisions:
            offered = ", ".join(sorted(self.precisions))
            raise InvalidReferenceError(
                f"{self.name} converts to {offered}, not {options.precision}."
            )
        if options.calibration_data is not None and not self.calibrates:
            raise InvalidReferenceError(
                f"{self.name} compresses weights without data, so calibration data does not "
                f"apply to {manifest.hub}:{manifest.id}: drop it."
            )

    def cache_inputs(self, manifest: Manifest, options: ConvertOptions) -> dict[str, Any]:
        """What else changes this converter's output (a dataset, an image size): part of the
        conversion's cache key. The default: nothing."""
        return {}

    def extra_checks(self, source: Path, converted: Path, record: dict[str, Any]) -> dict | None:
        """Checks of a converted model beyond the shared validation; ``{"passed": bool, ...}``
        or None when there are none."""
        return None

    @abstractmethod
    def convert(
        self, source: Path, manifest: Manifest, options: ConvertOptions, staging: Path
    ) -> dict[str, Any]:
        """Write the fp32 IR of the model in ``source`` into ``staging``.

        Returns:
            What the manifest should record about the conversion (the task, say).
        """
