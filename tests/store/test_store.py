from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from model_download.errors import ModelNotInStoreError
from model_download.store.manifest import Manifest, ManifestFile, Selection
from model_download.store.store import ModelStore


def _stage(store: ModelStore, revision: str, files: dict[str, bytes], **extra) -> Manifest:
    """Write files into the revision's staging folder and adopt them, as a pull does."""
    staging = store.staging_dir("huggingface", "org/model", revision)
    entries = []
    for path, data in files.items():
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        store.blobs.adopt(sha, target)
        entries.append(ManifestFile(path=path, size=len(data), sha256=sha))
    return Manifest(hub="huggingface", id="org/model", revision=revision, files=entries, **extra)


def _publish(store: ModelStore, revision: str, files: dict[str, bytes], **extra):
    manifest = _stage(store, revision, files, **extra)
    staging = store.staging_dir("huggingface", "org/model", revision)
    return store.publish(staging, manifest)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_publish_lists_and_finds_by_revision_and_ref(store: ModelStore) -> None:
    stored = _publish(
        store,
        "a" * 40,
        {"config.json": b"{}", "w/model.bin": b"x" * 100},
        requested_revisions=["main"],
    )
    assert stored.path == store.root / "huggingface" / "org/model" / ("a" * 40)
    assert (stored.path / "w" / "model.bin").read_bytes() == b"x" * 100
    assert [m.name for m in store.list()] == [f"huggingface:org/model@{'a' * 40}"]
    assert store.find("huggingface", "org/model", "main")[0].path == stored.path
    assert os.readlink(store.root / "huggingface" / "org/model" / "@main") == "a" * 40
    assert not store.staging_dir("huggingface", "org/model", "a" * 40).exists()


def test_identical_content_is_stored_once(store: ModelStore) -> None:
    big = os.urandom(200_000)
    one = _publish(store, "1" * 40, {"model.bin": big, "config.json": b"1"})
    two = _publish(store, "2" * 40, {"model.bin": big, "config.json": b"2"})
    first, second = (one.path / "model.bin").stat(), (two.path / "model.bin").stat()
    assert first.st_ino == second.st_ino
    assert first.st_nlink == 3  # two models and the blob


def test_delete_keeps_content_another_model_uses(store: ModelStore) -> None:
    shared = os.urandom(50_000)
    one = _publish(
        store, "1" * 40, {"model.bin": shared, "only-one.txt": b"one"}, requested_revisions=["v1"]
    )
    two = _publish(store, "2" * 40, {"model.bin": shared})
    only_one_blob = store.blobs.path(hashlib.sha256(b"one").hexdigest())
    assert only_one_blob.exists()

    store.delete("huggingface", "org/model", "v1")

    assert not one.path.exists()
    assert not only_one_blob.exists()
    assert store.blobs.path(hashlib.sha256(shared).hexdigest()).exists()
    assert store.verify(two) == []
    assert not (store.root / "huggingface" / "org/model" / "@v1").is_symlink()
    store.delete("huggingface", "org/model")
    assert not (store.root / "huggingface").exists()
    assert list((store.root / ".store" / "blobs").rglob("*.*")) == []


def test_pulls_with_different_patterns_add_up(store: ModelStore) -> None:
    _publish(store, "a" * 40, {"config.json": b"{}"}, selections=[Selection(include=["*.json"])])
    merged = _publish(
        store, "a" * 40, {"model.bin": b"weights"}, selections=[Selection(include=["*.bin"])]
    )
    assert sorted(f.path for f in merged.manifest.files) == ["config.json", "model.bin"]
    assert (merged.path / "config.json").read_bytes() == b"{}"
    assert [s.include for s in merged.manifest.selections] == [["*.json"], ["*.bin"]]


def test_verify_finds_corruption_and_missing_files(store: ModelStore) -> None:
    stored = _publish(store, "a" * 40, {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000})
    target = stored.path / "a.bin"
    os.chmod(target, 0o644)
    target.write_bytes(b"A" + b"a" * 999)
    (stored.path / "b.bin").unlink()
    problems = store.verify(stored)
    assert any(p.startswith("a.bin: sha256") for p in problems)
    assert "b.bin: missing" in problems


def test_stored_files_are_read_only(store: ModelStore) -> None:
    stored = _publish(store, "a" * 40, {"a.bin": b"a"})
    assert not os.stat(stored.path / "a.bin").st_mode & 0o222


def test_missing_model_says_how_to_get_it(store: ModelStore) -> None:
    with pytest.raises(ModelNotInStoreError, match="model-download pull huggingface:org/x"):
        store.require("huggingface", "org/x")


def test_unfinished_staging_is_never_listed(store: ModelStore) -> None:
    _stage(store, "a" * 40, {"a.bin": b"partial"})
    assert store.list() == []
    assert store.find("huggingface", "org/model") == []
