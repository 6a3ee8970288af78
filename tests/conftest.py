"""Shared fixtures: every test gets its own store and talks to nothing but loopback."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Prefect keeps results and its profile under PREFECT_HOME: never the user's own.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="model-download-prefect-"))
# Nothing may leave loopback: no analytics, and huggingface_hub reads its endpoint and telemetry
# switches once, at import, before any fixture runs.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
# OpenVINO's and nncf's usage statistics go to a web analytics service unless they see a CI run.
os.environ["CI"] = "true"
# ultralytics must never install packages or fetch weights, fonts or datasets.
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "0"
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="model-download-yolo-"))

from pydantic import AliasChoices  # noqa: E402

from model_download import runtime  # noqa: E402  (after the environment above)
from model_download.settings import Settings  # noqa: E402
from tests.servers.hf_hub import FakeHub  # noqa: E402


def settings_variables() -> frozenset[str]:
    """Every environment variable the settings read (upper case; pydantic-settings reads them
    in any case): hub addresses and tokens among them."""
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names.update(choice.upper() for choice in choices if isinstance(choice, str))
    return frozenset(names)


# What would send a test's loopback request elsewhere: settings, and proxies (urllib3 and httpx
# send even 127.0.0.1 through HTTP_PROXY unless NO_PROXY exempts it).
_CLEARED = settings_variables() | {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--internet", action="store_true", help="also run tests against the real hubs")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--internet"):
        return
    skip = pytest.mark.skip(reason="needs the real hub: run with --internet")
    for item in items:
        if "internet" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh store, no token, and no hub address that could leave this machine.

    Every variable the settings read is cleared first, so a developer's GETI_HOST, OLLAMA_HOST
    or MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL never reaches a test.
    """
    for name in [name for name in os.environ if name.upper() in _CLEARED]:
        monkeypatch.delenv(name)
    models = tmp_path / "models"
    monkeypatch.setenv("MODELS_DIR", str(models))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    runtime.reset()
    yield models
    runtime.reset()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A Hugging Face-protocol server on loopback; HF_ENDPOINT points at it."""
    with FakeHub(tmp_path / "hub-data") as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        runtime.reset()
        yield server


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this test's settings plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real Prefect server with a throw-away database, shared by the session's flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
