"""Pulls from a Hugging Face-protocol server on loopback, through the real huggingface_hub."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from model_download import errors
from model_download.pull import download_resolved, resolve_reference
from model_download.refs import parse_reference
from model_download.resolved import RemoteFile
from model_download.runtime import get_registry, get_store
from model_download.store.manifest import MANIFEST_NAME
from tests.servers.hf_hub import FakeHub

BIG = 300_000  # over the hub's LFS threshold: published with a sha256


def _files(seed: bytes = b"1") -> dict[str, bytes]:
    return {
        "config.json": b'{"seed": "' + seed + b'"}',
        "model.safetensors": hashlib.sha256(seed).digest() * (BIG // 32),
        "tokenizer/vocab.txt": b"hello\nworld\n" + seed,
        "empty/.gitkeep": b"",  # nothing to fetch, but the file must be there
    }


def pull(text: str, **patterns):
    reference = parse_reference(text, **patterns)
    resolved = resolve_reference(reference, get_registry())
    return download_resolved(resolved, store=get_store(), registry=get_registry())


def test_pull_is_complete_verified_and_described(hub: FakeHub) -> None:
    files = _files()
    commit = hub.commit("org/model", files)

    stored = pull("hf:org/model")

    assert stored.path == get_store().root / "huggingface" / "org/model" / commit
    for path, data in files.items():
        assert (stored.path / path).read_bytes() == data
    manifest = stored.manifest
    assert (manifest.hub, manifest.id, manifest.revision) == ("huggingface", "org/model", commit)
    assert {f.path: f.sha256 for f in manifest.files} == {
        p: hashlib.sha256(d).hexdigest() for p, d in files.items()
    }
    assert "huggingface_hub" in manifest.tools and "model-download" in manifest.tools
    assert get_store().verify(stored) == []
    assert get_store().find("huggingface", "org/model", "main")[0].path == stored.path


def test_second_pull_sends_no_file_request(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    pull("hf:org/model")
    assert len(hub.file_requests()) == 3
    hub.clear_log()

    again = pull("hf:org/model")

    assert hub.file_requests() == []
    assert get_store().verify(again) == []


def test_revisions_sharing_files_store_them_once(hub: FakeHub) -> None:
    v1 = _files(b"1")
    hub.commit("org/model", v1, tag="v1")
    hub.commit(
        "org/model", {"config.json": b'{"seed": "2"}', "extra.bin": os.urandom(BIG)}, tag="v2"
    )

    one = pull("hf:org/model@v1")
    hub.clear_log()
    two = pull("hf:org/model@v2")

    fetched = sorted(r.file for r in hub.file_requests())
    assert fetched == ["config.json", "extra.bin"]  # the shared files came from the store
    for shared in ("model.safetensors", "tokenizer/vocab.txt"):
        assert (one.path / shared).stat().st_ino == (two.path / shared).stat().st_ino
    blobs = [p for p in (get_store().root / ".store" / "blobs").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in blobs) < 2 * BIG + 1000  # not three big copies


def test_moved_branch_downloads_the_new_commit(hub: FakeHub) -> None:
    first = hub.commit("org/model", _files(b"1"))
    pull("hf:org/model@main")
    second = hub.commit("org/model", {"config.json": b"{}"})

    stored = pull("hf:org/model@main")

    assert stored.manifest.revision == second != first
    assert get_store().resolve_ref("huggingface", "org/model", "main") == second
    assert len(get_store().find("huggingface", "org/model")) == 2


def test_include_and_exclude_patterns(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    stored = pull("hf:org/model", include=("*.json", "tokenizer/*"), exclude=("*.txt",))
    assert [f.path for f in stored.manifest.files] == ["config.json"]

    with pytest.raises(errors.RemoteFileNotFoundError, match="loosen the patterns"):
        pull("hf:org/model", include=("*.gguf",))


def test_commit_revision_needs_no_revision_lookup(hub: FakeHub) -> None:
    commit = hub.commit("org/model", _files())
    pull(f"hf:org/model@{commit}")
    assert not [r for r in hub.requests if "/revision/" in r.path]


def test_private_repo_needs_the_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.commit("org/private", _files(), private=True)
    hub.add_token("hf_secret_token", grants=["org/private"])
    with pytest.raises(errors.ModelNotFoundError, match="if the model is private, set HF_TOKEN"):
        pull("hf:org/private")

    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    from model_download import runtime

    runtime.reset()
    stored = pull("hf:org/private")
    assert get_store().verify(stored) == []
    assert "hf_secret_token" not in (stored.path / MANIFEST_NAME).read_text()


def test_gated_repo_says_to_accept_the_terms(hub: FakeHub) -> None:
    hub.commit("org/gated", _files(), gated=True)
    with pytest.raises(errors.GatedModelError, match="accept its terms"):
        pull("hf:org/gated")
    assert get_store().list() == []


def test_rejected_token_says_to_set_hf_token(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.commit("org/model", _files())
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    from model_download import runtime

    runtime.reset()
    with pytest.raises(errors.UnauthorizedError, match="set HF_TOKEN to a valid") as info:
        pull("hf:org/model")
    assert "hf_not_a_real_token" not in str(info.value)


def test_unknown_repo_and_revision(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    with pytest.raises(errors.ModelNotFoundError, match="was not found"):
        pull("hf:org/nothing")
    with pytest.raises(errors.RevisionNotFoundError, match="no revision 'v9'"):
        pull("hf:org/model@v9")
    with pytest.raises(errors.RevisionNotFoundError):
        pull("hf:org/model@" + "0" * 40)


def test_missing_file_is_named(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    resolved = resolve_reference(parse_reference("hf:org/model"), get_registry())
    ghost = resolved.model_copy(update={"files": (RemoteFile(path="ghost.bin", size=3),)})
    with pytest.raises(errors.RemoteFileNotFoundError, match="no file 'ghost.bin'"):
        download_resolved(ghost, store=get_store(), registry=get_registry())


def test_unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    # isolated_env points HF_ENDPOINT at the discard port, where nothing listens.
    with pytest.raises(errors.HubUnreachableError, match="cannot reach http://127.0.0.1:9"):
        pull("hf:org/model")


def test_hub_specific_id_rules() -> None:
    with pytest.raises(errors.InvalidReferenceError, match="not a Hugging Face model id"):
        get_registry().hub("huggingface").validate(parse_reference("hf:a/b/c"))


def test_cut_connection_resumes_and_verifies(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    hub.cut("model.safetensors", after_bytes=100_000)

    stored = pull("hf:org/model")

    gets = [r for r in hub.file_requests() if r.file == "model.safetensors"]
    assert [g.range for g in gets] == [None, "bytes=100000-"]
    assert get_store().verify(stored) == []


def test_stalled_transfer_is_restarted(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DOWNLOAD_STALL_TIMEOUT", "0.5")
    from model_download import runtime

    runtime.reset()
    hub.commit("org/model", _files())
    hub.stall("model.safetensors", after_bytes=50_000, seconds=60)

    started = time.monotonic()
    stored = pull("hf:org/model")

    assert time.monotonic() - started < 20
    gets = [r for r in hub.file_requests() if r.file == "model.safetensors"]
    assert gets[-1].range == "bytes=50000-"
    assert get_store().verify(stored) == []


def test_server_errors_are_retried_then_reported(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.commit("org/model", _files())
    hub.fail("model.safetensors", status=503, times=2)
    assert get_store().verify(pull("hf:org/model")) == []

    monkeypatch.setenv("MODEL_DOWNLOAD_RETRIES", "1")
    from model_download import runtime

    runtime.reset()
    hub.commit("org/model", {"model.safetensors": os.urandom(BIG)})
    hub.fail("model.safetensors", status=503, times=None)
    with pytest.raises(errors.TransferError, match="failed after 2 attempts"):
        pull("hf:org/model")
    assert len(get_store().find("huggingface", "org/model")) == 1  # only the first commit


def test_corrupt_bytes_from_the_hub_are_refused(hub: FakeHub) -> None:
    files = _files()
    hub.commit("org/model", files)
    blob = next(
        p
        for p in (hub.root / "blobs").rglob("*")
        if p.is_file() and p.stat().st_size == len(files["model.safetensors"])
    )
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))

    with pytest.raises(errors.IntegrityError, match="model.safetensors is corrupt"):
        pull("hf:org/model")
    assert get_store().list() == []


def test_openvino_ir_repos_are_marked(hub: FakeHub) -> None:
    hub.commit("someone/ir-model", {"openvino_model.xml": b"<net/>", "openvino_model.bin": b"w"})
    hub.commit("OpenVINO/any", {"README.md": b"hi"})
    hub.commit("org/model", _files())
    assert pull("hf:someone/ir-model").manifest.format == "openvino-ir"
    # What is stored decides, not the organisation nor the files left on the hub.
    assert pull("hf:OpenVINO/any").manifest.format is None
    assert pull("hf:org/model").manifest.format is None
    hub.commit("someone/ir-too", {"openvino_model.xml": b"<net/>", "openvino_model.bin": b"w"})
    assert pull("hf:someone/ir-too", exclude=("*.xml",)).manifest.format is None


def test_partial_download_of_an_earlier_attempt_is_resumed(hub: FakeHub, tmp_path: Path) -> None:
    files = _files()
    commit = hub.commit("org/model", files)
    staging = get_store().staging_dir("huggingface", "org/model", commit)
    (staging).mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(files["model.safetensors"][:120_000])

    stored = pull("hf:org/model")

    gets = [r for r in hub.file_requests() if r.file == "model.safetensors"]
    assert [g.range for g in gets] == ["bytes=120000-"]
    assert get_store().verify(stored) == []


def test_a_partial_file_outside_the_selection_is_never_published(hub: FakeHub) -> None:
    files = _files()
    commit = hub.commit("org/model", files)
    staging = get_store().staging_dir("huggingface", "org/model", commit)
    staging.mkdir(parents=True)
    # Left by an earlier pull of every file, killed while it fetched the weights.
    (staging / "model.safetensors").write_bytes(files["model.safetensors"][:1000])

    stored = pull("hf:org/model", include=("*.json",))

    assert sorted(p.name for p in stored.path.iterdir()) == [MANIFEST_NAME, "config.json"]
    assert get_store().verify(stored) == []
    # The partial file was kept: the pull that wants it resumes it.
    stored = pull("hf:org/model", include=("*.safetensors",))
    gets = [r for r in hub.file_requests() if r.file == "model.safetensors"]
    assert [g.range for g in gets] == ["bytes=1000-"]
    assert sorted(f.path for f in stored.manifest.files) == ["config.json", "model.safetensors"]
    assert get_store().verify(stored) == []


def test_two_models_with_the_same_file_store_it_once(hub: FakeHub) -> None:
    weights = os.urandom(BIG)
    hub.commit("org/one", {"config.json": b"1", "model.safetensors": weights})
    hub.commit("other/two", {"config.json": b"2", "model.safetensors": weights})

    one, two = pull("hf:org/one"), pull("hf:other/two")

    first, second = (one.path / "model.safetensors").stat(), (two.path / "model.safetensors").stat()
    assert first.st_ino == second.st_ino and first.st_nlink == 3  # two models and the blob
    # On disk the store holds the weights once: count each inode's blocks a single time.
    inodes = {}
    for path in get_store().root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            inodes[info.st_ino] = info.st_blocks * 512
    assert BIG <= sum(inodes.values()) < 2 * BIG
    get_store().delete("huggingface", "org/one")
    assert get_store().verify(two) == []


def test_a_failing_file_stops_its_siblings_at_once(hub: FakeHub) -> None:
    commit = hub.commit("org/model", {"config.json": b"{}", "big.safetensors": os.urandom(BIG)})
    # The big file stalls for 30 s (under the stall timeout) while a file the hub does not
    # have answers 404.
    hub.stall("big.safetensors", after_bytes=50_000, seconds=30)
    resolved = resolve_reference(parse_reference("hf:org/model"), get_registry())
    ghost = RemoteFile(path="ghost.bin", size=3)
    resolved = resolved.model_copy(update={"files": (*resolved.files, ghost)})

    started = time.monotonic()
    with pytest.raises(errors.RemoteFileNotFoundError, match="no file 'ghost.bin'"):
        download_resolved(resolved, store=get_store(), registry=get_registry())

    assert time.monotonic() - started < 10
    assert any(r.file == "big.safetensors" for r in hub.file_requests())
    partial = get_store().staging_dir("huggingface", "org/model", commit) / "big.safetensors"
    assert 0 < partial.stat().st_size <= 50_000  # kept for the next pull to resume
    assert get_store().list() == []


def test_a_file_that_cannot_be_written_is_a_store_error_naming_it(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    blocked = get_store().root / ".store" / "staging" / "huggingface"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("")  # a file where the staging folder must go

    with pytest.raises(errors.StoreError, match=rf"cannot write {blocked}.*: a file stands"):
        pull("hf:org/model")
