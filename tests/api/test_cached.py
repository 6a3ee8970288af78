"""Which stored model answers a request without a run (api.cached), on a real store."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.cached import covers, latest_stored, stored_result
from flows.pipeline import PipelineSpec
from model_download.refs import make_reference
from model_download.runtime import get_registry
from model_download.store.manifest import Manifest, ManifestFile, Selection
from model_download.store.store import ModelStore


def publish(
    store: ModelStore,
    revision: str,
    *,
    age_days: int,
    branch: str | None = None,
    include: list[str] | None = None,
) -> None:
    """A stored org/m at ``revision``, made ``age_days`` ago, by a pull with ``include``."""
    staging = store.staging_dir("huggingface", "org/m", revision)
    staging.mkdir(parents=True)
    data = revision.encode()
    (staging / "config.json").write_bytes(data)
    manifest = Manifest(
        hub="huggingface",
        id="org/m",
        revision=revision,
        requested_revisions=[branch] if branch else [],
        selections=[Selection(include=include or [])],
        files=[
            ManifestFile(
                path="config.json", size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
        ],
        created_at=datetime.now(UTC) - timedelta(days=age_days),
    )
    store.publish(staging, manifest)


@pytest.fixture
def store(isolated_env: Path) -> ModelStore:
    return ModelStore(isolated_env)


def test_without_a_revision_the_newest_download_answers(store: ModelStore) -> None:
    # Sorted by name, "aaaa" comes first; it is the older one.
    publish(store, "a" * 40, age_days=3)
    publish(store, "f" * 40, age_days=1)
    assert latest_stored(store, "huggingface", "org/m", None).manifest.revision == "f" * 40


def test_a_branch_answers_through_its_link(store: ModelStore) -> None:
    publish(store, "f" * 40, age_days=1)
    publish(store, "a" * 40, age_days=3, branch="main")  # main last resolved to the old one
    assert latest_stored(store, "huggingface", "org/m", "main").manifest.revision == "a" * 40
    assert latest_stored(store, "huggingface", "org/m", "v9") is None


def test_only_the_models_folder_is_read(store: ModelStore, monkeypatch) -> None:
    publish(store, "a" * 40, age_days=1)

    def whole_store():
        raise AssertionError("a cached request must not read every manifest of the store")

    monkeypatch.setattr(store, "list", whole_store)
    assert latest_stored(store, "huggingface", "org/m", None) is not None
    assert latest_stored(store, "huggingface", "org/other", None) is None


def test_a_partial_pull_does_not_count_as_the_whole_model(store: ModelStore) -> None:
    publish(store, "a" * 40, age_days=1, branch="main", include=["*.json"])
    stored = latest_stored(store, "huggingface", "org/m", "main")
    whole = make_reference(hub="huggingface", id="org/m", revision="main")
    same = make_reference(hub="huggingface", id="org/m", revision="main", include=("*.json",))
    assert not covers(stored.manifest, whole) and covers(stored.manifest, same)
    spec = PipelineSpec(hub="huggingface", id="org/m", convert=None)
    assert stored_result(spec, store, get_registry()) is None  # a run completes it
    publish(store, "a" * 40, age_days=1, branch="main")  # a full pull of the same revision
    assert stored_result(spec, store, get_registry()) is not None
