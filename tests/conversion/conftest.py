"""Shared by the conversion tests: tiny models on a loopback hub, and a store to convert in.

The models, the hub and the store live for a whole test module: each conversion runs once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_download.conversion import ConvertOptions
from model_download.convert import CONVERTED_HUB, convert_stored
from model_download.pull import download_resolved, resolve_reference
from model_download.refs import parse_reference
from model_download.settings import Settings
from model_download.store.store import ModelStore, StoredModel
from model_download.validate import validate_stored
from plugins.registry import Registry
from tests.models.tiny import build_tiny_bert, build_tiny_gpt2, build_tiny_onnx, repo_files
from tests.servers.hf_hub import FakeHub


class Service:
    """A store, registry and settings pointed at the module's hub."""

    def __init__(self, root: Path, hub: FakeHub, **settings) -> None:
        self.settings = Settings(models_dir=root, hf_endpoint=hub.url, **settings)
        self.store = ModelStore(root)
        self.registry = Registry(self.settings)

    def pull(self, model: str) -> StoredModel:
        return self.pull_with(model)

    def pull_with(
        self, model: str, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
    ) -> StoredModel:
        reference = parse_reference(model, include=include, exclude=exclude)
        resolved = resolve_reference(reference, self.registry)
        return download_resolved(resolved, store=self.store, registry=self.registry)

    def convert(self, source: StoredModel, **options) -> StoredModel:
        return convert_stored(
            source,
            ConvertOptions(**options),
            store=self.store,
            registry=self.registry,
            settings=self.settings,
        )

    def validate(self, model: StoredModel, **options):
        return validate_stored(model, ConvertOptions(**options), store=self.store)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "bert": build_tiny_bert(root / "bert"),
        "gpt2": build_tiny_gpt2(root / "gpt2"),
        "onnx": build_tiny_onnx(root / "onnx").parent,
    }


@pytest.fixture(scope="module")
def tiny_hub(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> Iterator[FakeHub]:
    with FakeHub(tmp_path_factory.mktemp("hub")) as server:
        for name, folder in models.items():
            server.commit(f"tiny/{name}", repo_files(folder))
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_hub: FakeHub) -> Service:
    return Service(tmp_path_factory.mktemp("store"), tiny_hub)


def variant_repo(tiny_hub: FakeHub, base: Path, repo: str, tmp_path: Path, edit) -> None:
    """Commit ``base`` as ``repo`` with its config.json changed by ``edit`` (other content)."""
    folder = tmp_path / repo.replace("/", "_")
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    tiny_hub.commit(repo, repo_files(folder))


def nothing_converted(store: ModelStore, model_id: str) -> bool:
    """No conversion of ``model_id`` is stored, nor half-made in staging."""
    return store.find(CONVERTED_HUB, model_id) == [] and not list(
        (store.root / ".store" / "staging" / CONVERTED_HUB).glob(f"{model_id}/*/*")
    )
