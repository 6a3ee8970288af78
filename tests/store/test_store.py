from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from model_download.errors import ModelNotInStoreError, StoreError
from model_download.store.manifest import MANIFEST_NAME, Manifest, ManifestFile, Selection
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


def test_only_the_files_the_manifest_lists_are_published(store: ModelStore) -> None:
    # A truncated file of an earlier, interrupted pull that selected more is in staging.
    staging = store.staging_dir("huggingface", "org/model", "a" * 40)
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"partial")
    (staging / ".model.safetensors.0-9.part").write_bytes(b"part")

    stored = _publish(store, "a" * 40, {"config.json": b"{}"})

    assert sorted(p.name for p in stored.path.iterdir()) == [".model-download.json", "config.json"]
    assert store.verify(stored) == []
    # The partial files wait in staging for the pull that wants them.
    assert (staging / "model.safetensors").read_bytes() == b"partial"
    assert (staging / ".model.safetensors.0-9.part").exists()


def test_staging_with_nothing_left_is_removed(store: ModelStore) -> None:
    _publish(store, "a" * 40, {"w/config.json": b"{}"})
    assert not (store.root / ".store" / "staging" / "huggingface").exists()


def test_verify_reports_files_the_manifest_does_not_list(store: ModelStore) -> None:
    stored = _publish(store, "a" * 40, {"config.json": b"{}"})
    (stored.path / "sub").mkdir()
    (stored.path / "sub" / "stray.bin").write_bytes(b"?")
    assert store.verify(stored) == ["sub/stray.bin: not listed in the manifest"]


def test_a_corrupt_manifest_is_listed_apart_and_replaced_by_a_publish(store: ModelStore) -> None:
    old = os.urandom(10_000)
    stored = _publish(store, "a" * 40, {"old.bin": old}, requested_revisions=["main"])
    old_blob = store.blobs.path(hashlib.sha256(old).hexdigest())
    manifest = stored.path / MANIFEST_NAME
    os.chmod(manifest, 0o644)
    manifest.write_text('{"hub": "huggingface", "id": ')  # cut short

    assert store.list() == []
    assert store.get("huggingface", "org/model", "a" * 40) is None
    [bad] = store.corrupt()
    assert (bad.hub, bad.id, bad.revision, bad.path) == (
        "huggingface",
        "org/model",
        "a" * 40,
        stored.path,
    )
    assert "json_invalid" in bad.reason
    assert f"model-download rm huggingface:org/model@{'a' * 40}" in bad.message
    assert store.corrupt("huggingface", "org/model", "main") == [bad]  # by its branch too

    fixed = _publish(store, "a" * 40, {"new.bin": b"new"})

    assert [m.name for m in store.list()] == [fixed.name] and store.corrupt() == []
    assert sorted(f.path for f in fixed.manifest.files) == ["new.bin"]  # nothing merged
    assert not (fixed.path / "old.bin").exists()
    assert not old_blob.exists()  # its content was used by the corrupt folder alone
    assert store.verify(fixed) == []


def test_delete_removes_a_corrupt_model_and_its_content(store: ModelStore) -> None:
    data = os.urandom(10_000)
    stored = _publish(store, "a" * 40, {"w.bin": data}, requested_revisions=["v1"])
    os.chmod(stored.path / MANIFEST_NAME, 0o644)
    (stored.path / MANIFEST_NAME).write_text("[]")

    assert store.delete("huggingface", "org/model", "v1") == []

    assert not stored.path.exists()
    assert not store.blobs.path(hashlib.sha256(data).hexdigest()).exists()
    assert not (store.root / "huggingface").exists()
    with pytest.raises(ModelNotInStoreError):
        store.delete("huggingface", "org/model")


def test_a_file_in_place_of_the_store_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    store = ModelStore(tmp_path / "afile" / "models")
    for use in (store.list, lambda: store.get("huggingface", "org/model", "a" * 40)):
        with pytest.raises(StoreError, match=r"afile is a file\. Set MODELS_DIR to a folder"):
            use()


def test_a_later_pull_keeps_created_at_and_records_updated_at(store: ModelStore) -> None:
    first = _publish(store, "a" * 40, {"config.json": b"{}"})
    assert first.manifest.updated_at is None
    merged = _publish(store, "a" * 40, {"model.bin": b"w"})
    assert merged.manifest.created_at == first.manifest.created_at
    assert merged.manifest.updated_at is not None
    assert merged.manifest.updated_at > first.manifest.created_at
    assert store.get("huggingface", "org/model", "a" * 40).manifest == merged.manifest


def test_release_keeps_a_blob_that_gains_a_link_while_released(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(5_000)
    sha = hashlib.sha256(data).hexdigest()
    stored = _publish(store, "a" * 40, {"w.bin": data})
    store._discard(stored.path)  # the model is gone: the blob has no other link
    blob = store.blobs.path(sha)
    dest = tmp_path / "other-model" / "w.bin"

    # Another process links the blob into a new model between release's look at the link
    # count and the blob's removal: run its link_into right before the blob leaves its path.
    real_rename, real_unlink = os.rename, os.unlink
    raced = []

    def link_first(src, *args, **kwargs):
        if Path(src) == blob and not raced:
            raced.append(store.blobs.link_into(sha, dest))
        return (real_rename if args else real_unlink)(src, *args, **kwargs)

    monkeypatch.setattr(os, "rename", link_first)
    monkeypatch.setattr(os, "unlink", link_first)
    removed = store.blobs.release(sha)
    monkeypatch.undo()

    assert raced == [True] and removed is False
    assert blob.exists() and blob.stat().st_ino == dest.stat().st_ino
