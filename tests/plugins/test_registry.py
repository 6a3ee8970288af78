from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from model_download.errors import PluginUnavailableError, UnknownPluginError
from model_download.settings import Settings
from plugins.base import HubPlugin
from plugins.registry import Registry


def _install_fake_distribution(root: Path, entry_points: str, modules: dict[str, str]) -> None:
    """A real installed distribution (dist-info on sys.path) declaring our entry points."""
    dist = root / "fake_plugins-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("good_hub", "broken_hub", "failing_hub"):
        sys.modules.pop(name, None)


def test_builtin_hub_is_available() -> None:
    registry = Registry(Settings())
    names = {(p.kind, p.name): p.available for p in registry.plugins()}
    assert names[("hub", "huggingface")] is True
    assert isinstance(registry.hub("huggingface"), HubPlugin)


def test_unknown_hub_names_the_known_ones() -> None:
    with pytest.raises(UnknownPluginError, match="known ones are geti, huggingface"):
        Registry(Settings()).hub("nohub")


def test_entry_point_plugins_are_found_and_broken_ones_reported(plugin_path: Path) -> None:
    _install_fake_distribution(
        plugin_path,
        """
        [model_download.hubs]
        goodhub = good_hub:GoodHub
        brokenhub = broken_hub:BrokenHub
        failinghub = failing_hub:FailingHub
        nothub = good_hub:NOT_A_CLASS
        """,
        {
            "good_hub": """
                from plugins.base import HubPlugin
                NOT_A_CLASS = 42
                class GoodHub(HubPlugin):
                    name = "goodhub"
                    description = "a hub from another package"
                    def resolve(self, reference): raise NotImplementedError
                    def fetch_file(self, resolved, file, dest, on_bytes): raise NotImplementedError
            """,
            "broken_hub": "import package_that_is_not_installed\n",
            "failing_hub": """
                from model_download.errors import PluginUnavailableError
                from plugins.base import HubPlugin
                class FailingHub(HubPlugin):
                    name = "failinghub"
                    def check(self):
                        raise PluginUnavailableError("install the failinghub extra")
                    def resolve(self, reference): raise NotImplementedError
                    def fetch_file(self, resolved, file, dest, on_bytes): raise NotImplementedError
            """,
        },
    )
    assert any(ep.name == "goodhub" for ep in metadata.entry_points(group="model_download.hubs"))

    registry = Registry(Settings())
    found = {p.name: p for p in registry.plugins("hub")}
    assert found["goodhub"].available and found["goodhub"].description
    assert not found["brokenhub"].available
    assert "package_that_is_not_installed" in found["brokenhub"].reason
    assert "install the failinghub extra" in found["failinghub"].reason
    assert "not a HubPlugin subclass" in found["nothub"].reason
    assert registry.hub("goodhub").name == "goodhub"
    with pytest.raises(PluginUnavailableError, match=r"brokenhub.*unavailable"):
        registry.hub("brokenhub")


def test_one_builtin_hub_is_loaded_alone() -> None:
    # A fresh interpreter: this one has imported every plugin already.
    code = textwrap.dedent(
        """
        import sys
        from model_download.settings import Settings
        from plugins.registry import Registry
        Registry(Settings()).hub("ultralytics")
        print(sorted(m for m in sys.modules if m.startswith("plugins.hubs.")))
        """
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "plugins.hubs.ultralytics" in loaded
    assert "plugins.hubs.huggingface" not in loaded and "plugins.hubs.ollama" not in loaded
