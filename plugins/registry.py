"""Finds the hub and converter plugins: the built-in ones and those other packages install.

A package adds a plugin with an entry point in one of two groups::

    [project.entry-points."model_download.hubs"]
    myhub = "my_package.hub:MyHub"            # a HubPlugin subclass

    [project.entry-points."model_download.converters"]
    mytool = "my_package.convert:MyConverter"  # a ConverterPlugin subclass

A plugin that fails to import or to start is listed as unavailable with its reason; it never
stops the service.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from importlib import import_module, metadata
from typing import Literal

from model_download.errors import PluginUnavailableError, UnknownPluginError
from model_download.settings import Settings
from plugins.base import ConverterPlugin, HubPlugin, Plugin

logger = logging.getLogger(__name__)

Kind = Literal["hub", "converter"]

GROUPS: dict[Kind, str] = {
    "hub": "model_download.hubs",
    "converter": "model_download.converters",
}
_BASES: dict[Kind, type[Plugin]] = {"hub": HubPlugin, "converter": ConverterPlugin}

# Loaded even when the package's own entry points are missing (running from a bare checkout).
BUILTINS: dict[Kind, dict[str, str]] = {
    "hub": {
        "huggingface": "plugins.hubs.huggingface:HuggingFaceHub",
        "openvino": "plugins.hubs.openvino:OpenVINOHub",
        "ultralytics": "plugins.hubs.ultralytics:UltralyticsHub",
        "ollama": "plugins.hubs.ollama:OllamaHub",
        "geti": "plugins.hubs.geti:GetiHub",
    },
    "converter": {
        "optimum-openvino": "plugins.converters.optimum_openvino:OptimumOpenVINOConverter",
        "onnx-openvino": "plugins.converters.onnx_openvino:OnnxOpenVINOConverter",
        "ultralytics-openvino": (
            "plugins.converters.ultralytics_openvino:UltralyticsOpenVINOConverter"
        ),
    },
}


@dataclass
class PluginInfo:
    """One plugin as the registry found it."""

    kind: Kind
    name: str
    target: str
    available: bool
    reason: str | None = None
    description: str = ""
    instance: Plugin | None = field(default=None, repr=False)


class Registry:
    """The plugins of one process, loaded once from built-ins and entry points."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._plugins: dict[tuple[Kind, str], PluginInfo] = {}
        self._loaded: set[Kind] = set()
        self._lock = threading.Lock()

    def plugins(self, kind: Kind | None = None) -> list[PluginInfo]:
        """Every plugin found, available or not, sorted by kind and name."""
        for each in GROUPS if kind is None else (kind,):
            self._load_kind(each)
        found = [p for p in self._plugins.values() if kind is None or p.kind == kind]
        return sorted(found, key=lambda p: (p.kind, p.name))

    def _load_kind(self, kind: Kind) -> None:
        # Each kind is loaded when first asked for: a process that only converts does not pay
        # for importing the hubs' SDKs, nor one that only downloads for the converters'.
        with self._lock:
            if kind in self._loaded:
                return
            for name, target in _candidates(kind):
                if (kind, name) not in self._plugins:
                    self._plugins[(kind, name)] = self._load(kind, name, target)
            self._loaded.add(kind)

    def hub(self, name: str) -> HubPlugin:
        """The hub plugin ``name``.

        Raises:
            UnknownPluginError: no such hub; the message lists the known ones.
            PluginUnavailableError: the hub is known but cannot run here, and why.
        """
        plugin = self._get("hub", name)
        assert isinstance(plugin, HubPlugin)
        return plugin

    def converter(self, name: str) -> ConverterPlugin:
        """The converter plugin ``name`` (errors as for :meth:`hub`)."""
        plugin = self._get("converter", name)
        assert isinstance(plugin, ConverterPlugin)
        return plugin

    def _get(self, kind: Kind, name: str) -> Plugin:
        info = self._find(kind, name)
        if info is None:
            known = ", ".join(p.name for p in self.plugins(kind)) or "none"
            raise UnknownPluginError(f"unknown {kind} {name!r}: the known ones are {known}.")
        if info.instance is None:
            raise PluginUnavailableError(f"{kind} {name!r} is unavailable here: {info.reason}")
        return info.instance

    def _find(self, kind: Kind, name: str) -> PluginInfo | None:
        # A built-in is loaded alone: a pull from one hub does not pay for importing every
        # hub's SDK. Another name may come from any package's entry points: read them all.
        target = BUILTINS[kind].get(name)
        if target is None:
            self._load_kind(kind)
            return self._plugins.get((kind, name))
        with self._lock:
            if (kind, name) not in self._plugins:
                self._plugins[(kind, name)] = self._load(kind, name, target)
            return self._plugins[(kind, name)]

    def _load(self, kind: Kind, name: str, target: str) -> PluginInfo:
        info = PluginInfo(kind=kind, name=name, target=target, available=False)
        try:
            cls = _import(target)
            if not (isinstance(cls, type) and issubclass(cls, _BASES[kind])):
                raise TypeError(f"{target} is not a {_BASES[kind].__name__} subclass")
            instance = cls(self.settings)
            instance.check()
        except Exception as exc:  # a broken plugin must never take the service down
            info.reason = f"{type(exc).__name__}: {exc}"
            logger.warning("%s plugin %s is unavailable: %s", kind, name, info.reason)
            return info
        info.available, info.instance = True, instance
        info.description = cls.description
        return info


def _candidates(kind: Kind) -> list[tuple[str, str]]:
    found = list(BUILTINS[kind].items())
    for entry_point in metadata.entry_points(group=GROUPS[kind]):
        found.append((entry_point.name, entry_point.value))
    return found


def _import(target: str) -> object:
    module_name, _, attribute = target.partition(":")
    obj: object = import_module(module_name)
    for part in attribute.split(".") if attribute else ():
        obj = getattr(obj, part)
    return obj
