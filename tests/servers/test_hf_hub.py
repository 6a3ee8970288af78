"""The fake Hub must satisfy the real huggingface_hub client, or tests built on it prove nothing."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import httpx
import pytest
from huggingface_hub import (
    HfApi,
    constants,
    file_download,
    get_hf_file_metadata,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.servers.hf_hub import FakeHub
from tests.servers.hf_hub_repos import git_blob_sha1

DATA = bytes(range(256)) * 100  # 25_600 bytes: LFS by size, and every offset is recognisable


@pytest.fixture(autouse=True)
def _hf_stays_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # huggingface_hub reads its environment once, at import: the module constants are what count.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    # With telemetry on, building the user agent fetches an agent list from huggingface.co.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


@pytest.fixture
def hub(tmp_path: Path):
    with FakeHub(tmp_path / "hub") as hub:
        yield hub


def download(hub: FakeHub, tmp_path: Path, repo_id: str, filename: str, **kwargs) -> bytes:
    kwargs.setdefault("token", False)
    path = hf_hub_download(
        repo_id, filename, endpoint=hub.url, cache_dir=tmp_path / "cache", **kwargs
    )
    return Path(path).read_bytes()


def test_snapshot_download_gives_identical_bytes(hub: FakeHub, tmp_path: Path) -> None:
    files = {
        "config.json": b'{"hidden": 8}',
        "model.safetensors": os.urandom(30_000),
        "sub/dir/notes.txt": b"n" * 20_000,  # LFS by size alone
        "tokenizer.model": b"tok",  # LFS by extension alone
    }
    sha = hub.commit("org/model", files)
    folder = Path(snapshot_download("org/model", endpoint=hub.url, cache_dir=tmp_path / "c"))
    assert folder.name == sha
    assert {p: (folder / p).read_bytes() for p in files} == files
    assert sorted(r.file for r in hub.file_requests("org/model")) == sorted(files)

    hub.commit("gpt2", {"config.json": b"{}"})  # a bare name, as legacy repos have
    folder = snapshot_download("gpt2", endpoint=hub.url, cache_dir=tmp_path / "c")
    assert (Path(folder) / "config.json").read_bytes() == b"{}"


def test_resolve_headers(hub: FakeHub) -> None:
    sha = hub.commit("org/model", {"model.bin": DATA, "config.json": b"{}"})
    meta = get_hf_file_metadata(f"{hub.url}/org/model/resolve/main/model.bin", token=False)
    assert (meta.commit_hash, meta.etag, meta.size) == (
        sha,
        hashlib.sha256(DATA).hexdigest(),
        25_600,
    )
    with httpx.Client() as client:
        response = client.head(f"{hub.url}/org/model/resolve/main/config.json")
    assert response.headers["ETag"] == f'"{git_blob_sha1(b"{}")}"'
    assert response.headers["Content-Length"] == "2"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "X-Linked-Etag" not in response.headers


def test_branch_tag_and_commit_revisions(hub: FakeHub, tmp_path: Path) -> None:
    first = hub.commit("org/model", {"w.txt": b"v1", "old.txt": b"old"}, tag="v1.0")
    second = hub.commit("org/model", {"w.txt": b"v2"}, delete=["old.txt"])
    pr = hub.commit("org/model", {"w.txt": b"pr"}, branch="refs/pr/1")
    feature = hub.commit("org/model", {"w.txt": b"ft"}, branch="feature/x", tag="release/2")
    api = HfApi(endpoint=hub.url, token=False)
    cases = [
        ("main", second, b"v2"),
        ("v1.0", first, b"v1"),
        (first, first, b"v1"),
        ("refs/pr/1", pr, b"pr"),
        ("feature/x", feature, b"ft"),
        ("release/2", feature, b"ft"),
    ]
    for revision, sha, data in cases:
        assert api.model_info("org/model", revision=revision).sha == sha
        assert download(hub, tmp_path, "org/model", "w.txt", revision=revision) == data
    assert api.model_info("org/model").sha == second
    assert download(hub, tmp_path, "org/model", "old.txt", revision="v1.0") == b"old"
    with pytest.raises(EntryNotFoundError):
        download(hub, tmp_path, "org/model", "old.txt")
    refs = api.list_repo_refs("org/model")
    assert {b.name for b in refs.branches} == {"main", "refs/pr/1", "feature/x"}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": first, "release/2": feature}


def test_list_repo_tree_follows_pages(tmp_path: Path) -> None:
    files = {f"dir/f{i}.txt": b"%d" % i for i in range(5)}
    files |= {"a.json": b"{}", "dir/sub/big.gguf": b"gguf"}
    with FakeHub(tmp_path / "hub", page_size=2) as hub:
        hub.commit("org/model", files)
        api = HfApi(endpoint=hub.url, token=False)
        entries = list(api.list_repo_tree("org/model", recursive=True))
        pages = [r for r in hub.requests if "/tree/" in r.path]
        top = [e.path for e in api.list_repo_tree("org/model")]
        sub = [e.path for e in api.list_repo_tree("org/model", path_in_repo="dir/sub")]
        with pytest.raises(EntryNotFoundError):
            list(api.list_repo_tree("org/model", path_in_repo="nope"))
    assert [e.path for e in entries] == sorted([*files, "dir", "dir/sub"])
    # Every link carries the original query, or later pages would stop being recursive.
    assert [r.query.get("cursor") for r in pages] == [None, "2", "4", "6", "8"]
    assert all(r.query["recursive"] == "true" for r in pages)
    assert top == ["a.json", "dir"]
    assert sub == ["dir/sub/big.gguf"]
    by_path = {e.path: e for e in entries}
    assert by_path["dir/f1.txt"].blob_id == git_blob_sha1(b"1")
    assert by_path["dir/f1.txt"].lfs is None
    big = by_path["dir/sub/big.gguf"]
    assert (big.lfs.sha256, big.lfs.size) == (hashlib.sha256(b"gguf").hexdigest(), 4)
    assert big.blob_id != git_blob_sha1(b"gguf")  # git holds the LFS pointer, not the bytes


def test_private_repo_needs_a_granted_token(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/secret", {"a.txt": b"s"}, private=True)
    hub.add_token("hf_reader", grants=["org/secret"])
    hub.add_token("hf_other")
    for token, status in ((False, 401), ("hf_other", 404)):
        with pytest.raises(RepositoryNotFoundError) as caught:
            snapshot_download("org/secret", endpoint=hub.url, cache_dir=tmp_path, token=token)
        assert caught.value.response.status_code == status
        assert not isinstance(caught.value, GatedRepoError)
    folder = snapshot_download(
        "org/secret", endpoint=hub.url, cache_dir=tmp_path, token="hf_reader"
    )
    assert (Path(folder) / "a.txt").read_bytes() == b"s"
    assert HfApi(endpoint=hub.url).model_info("org/secret", token="hf_reader").private is True
    assert all(r.has_auth for r in hub.file_requests())


def test_gated_repo_lists_openly_but_guards_files(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/gated", {"model.safetensors": DATA}, gated=True)
    hub.add_token("hf_granted", grants=["org/gated"])
    hub.add_token("hf_plain")
    api = HfApi(endpoint=hub.url, token=False)
    assert api.model_info("org/gated").gated == "auto"
    assert [e.path for e in api.list_repo_tree("org/gated")] == ["model.safetensors"]
    for token, status in ((False, 401), ("hf_plain", 403)):
        with pytest.raises(GatedRepoError) as caught:
            download(hub, tmp_path, "org/gated", "model.safetensors", token=token)
        assert caught.value.response.status_code == status
    with pytest.raises(GatedRepoError):
        snapshot_download("org/gated", endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert download(hub, tmp_path, "org/gated", "model.safetensors", token="hf_granted") == DATA


def test_unknown_repo_revision_and_file(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/model", {"a.txt": b"a"})
    api = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        download(hub, tmp_path, "org/missing", "a.txt")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/model", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download("org/model", revision="nope", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, "org/model", "a.txt", revision="nope")
    with pytest.raises(EntryNotFoundError):
        download(hub, tmp_path, "org/model", "missing.txt")


def test_invalid_token_is_not_mistaken_for_a_missing_repo(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/model", {"a.txt": b"a"})
    with pytest.raises(HfHubHTTPError) as from_api:
        HfApi(endpoint=hub.url).model_info("org/model", token="hf_bogus")
    with pytest.raises(HfHubHTTPError) as from_download:
        download(hub, tmp_path, "org/model", "a.txt", token="hf_bogus")
    for caught in (from_api, from_download):
        assert not isinstance(caught.value, RepositoryNotFoundError)
        assert caught.value.response.status_code == 401
        assert "Invalid credentials" in str(caught.value)


def test_search_lists_expanded_fields_only_and_filters_by_tag(tmp_path: Path) -> None:
    with FakeHub(tmp_path / "hub", page_size=1) as hub:  # pages: the Link must keep every value
        sha = hub.commit("org/a", {"config.json": b"{}"}, model_tags=["onnx", "bert"])
        hub.commit("org/b", {"config.json": b"{}"}, model_tags=["bert"])
        api = HfApi(endpoint=hub.url, token=False)

        [plain] = api.list_models(search="org/a")
        [onnx] = api.list_models(filter="onnx", expand=["sha", "lastModified"])
        both = api.list_models(filter=["bert"], expand=["tags"])

        assert plain.id == "org/a" and plain.tags == ["onnx", "bert"]
        assert plain.sha is None and plain.last_modified is None  # as the real Hub leaves out
        assert (onnx.id, onnx.sha, onnx.tags) == ("org/a", sha, None)
        assert onnx.last_modified is not None and onnx.downloads is None
        assert [(m.id, m.sha) for m in both] == [("org/a", None), ("org/b", None)]
        with pytest.raises(HfHubHTTPError, match="expand"):
            list(api.list_models(expand=["nothing"]))  # type: ignore[list-item]


def test_range_requests(hub: FakeHub) -> None:
    hub.commit("org/model", {"model.bin": DATA})
    url = f"{hub.url}/org/model/resolve/main/model.bin"
    with httpx.Client() as client:
        for header, expected, content_range in [
            ("bytes=10-", DATA[10:], "bytes 10-25599/25600"),
            ("bytes=10-19", DATA[10:20], "bytes 10-19/25600"),
            ("bytes=25590-99999", DATA[25590:], "bytes 25590-25599/25600"),
            ("bytes=-5", DATA[-5:], "bytes 25595-25599/25600"),
        ]:
            response = client.get(url, headers={"Range": header})
            assert (response.status_code, response.content) == (206, expected)
            assert response.headers["Content-Range"] == content_range
        response = client.get(url, headers={"Range": "bytes=25600-"})
        assert response.status_code == 416
        assert response.headers["Content-Range"] == "bytes */25600"
        assert client.get(url).content == DATA


def _open(hub: FakeHub, path: str) -> http.client.HTTPResponse:
    # http.client rather than httpx: it shows a cut body as IncompleteRead with the bytes received.
    conn = http.client.HTTPConnection("127.0.0.1", int(hub.url.rsplit(":", 1)[1]), timeout=5)
    conn.request("GET", path)
    return conn.getresponse()


def test_cut_sends_full_headers_then_part_of_the_body(hub: FakeHub) -> None:
    hub.commit("org/model", {"model.bin": DATA})
    hub.cut("model.bin", after_bytes=1000)
    response = _open(hub, "/org/model/resolve/main/model.bin")
    assert (response.status, response.headers["Content-Length"]) == (200, "25600")
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert caught.value.partial == DATA[:1000]
    assert _open(hub, "/org/model/resolve/main/model.bin").read() == DATA  # used up
    assert [r.sent for r in hub.file_requests("org/model")] == [1000, 25_600]


def test_client_resumes_a_cut_download_with_a_range(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client waits 1 s before resuming, and only keeps whole chunks of 10 MiB by default.
    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda _: None))
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 512)
    hub.commit("org/model", {"model.bin": DATA})
    hub.cut("model.bin", after_bytes=1024)
    assert download(hub, tmp_path, "org/model", "model.bin") == DATA
    gets = hub.file_requests("org/model")
    assert [(r.range, r.status, r.sent) for r in gets] == [
        (None, 200, 1024),
        ("bytes=1024-", 206, 24_576),
    ]


def test_stall_goes_silent_then_hangs_up(hub: FakeHub) -> None:
    hub.commit("org/model", {"model.bin": DATA})
    hub.stall("model.bin", after_bytes=100, seconds=0.5)
    response = _open(hub, "/org/model/resolve/main/model.bin")
    assert response.read(100) == DATA[:100]
    started = time.monotonic()
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert caught.value.partial == b""
    assert 0.4 < time.monotonic() - started < 3


def test_stop_does_not_wait_out_a_stall(tmp_path: Path) -> None:
    hub = FakeHub(tmp_path / "hub").start()
    hub.commit("org/model", {"model.bin": DATA})
    hub.stall("model.bin", after_bytes=10, seconds=60)
    response = _open(hub, "/org/model/resolve/main/model.bin")
    assert response.read(10) == DATA[:10]
    started = time.monotonic()
    hub.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(http.client.IncompleteRead):
        response.read()


def test_fail_answers_a_status_without_body(hub: FakeHub) -> None:
    hub.commit("org/model", {"model.bin": DATA})
    url = f"{hub.url}/org/model/resolve/main/model.bin"
    hub.fail("model.bin", status=503)
    with httpx.Client() as client:
        assert client.head(url).status_code == 200  # HEADs transfer no bytes: left alone
        failed = client.get(url)
        assert (failed.status_code, failed.content) == (503, b"")
        assert client.get(url).status_code == 200
        hub.fail("*", status=500, times=2)
        with pytest.raises(HfHubHTTPError) as caught:
            HfApi(endpoint=hub.url, token=False).model_info("org/model")
        assert caught.value.response.status_code == 500
        assert client.get(url).status_code == 500
        assert client.get(url).status_code == 200


def test_lfs_redirect_to_a_cdn_origin(tmp_path: Path) -> None:
    with FakeHub(tmp_path / "hub", redirect_lfs=True) as hub:
        hub.commit("org/secret", {"model.safetensors": DATA, "config.json": b"{}"}, private=True)
        hub.add_token("hf_reader", grants=["org/secret"])
        folder = Path(
            snapshot_download(
                "org/secret", endpoint=hub.url, cache_dir=tmp_path / "c", token="hf_reader"
            )
        )
        with httpx.Client() as client:
            redirect = client.get(
                f"{hub.url}/org/secret/resolve/main/model.safetensors",
                headers={"Authorization": "Bearer hf_reader"},
            )
        gets = {r.file: r for r in hub.file_requests("org/secret")}
    assert (folder / "model.safetensors").read_bytes() == DATA
    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith(f"{hub.cdn_url}/cdn/")
    assert redirect.headers["X-Linked-Size"] == "25600"
    assert gets["model.safetensors"].path.startswith("/cdn/")
    assert not gets["model.safetensors"].has_auth  # the client keeps its token on the Hub
    assert gets["config.json"].path.startswith("/org/secret/resolve/")
    assert gets["config.json"].has_auth


def test_request_log(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/model", {"a.txt": b"a"})
    hub.commit("org/other", {"b.txt": b"b"})
    download(hub, tmp_path, "org/model", "a.txt")
    download(hub, tmp_path, "org/other", "b.txt")
    assert [r.file for r in hub.file_requests("org/model")] == ["a.txt"]
    assert [r.file for r in hub.file_requests("org/model", method="HEAD")] == ["a.txt"]
    assert [r.file for r in hub.file_requests()] == ["a.txt", "b.txt"]
    assert {(r.method, r.status, r.has_auth) for r in hub.requests} == {
        ("HEAD", 200, False),
        ("GET", 200, False),
    }
    hub.clear_log()
    assert hub.requests == []


def test_runs_standalone_until_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "tests.servers.hf_hub", "--root", str(tmp_path)]
    command += ["--repo", "org/bench", "--file", "a.bin=0.01", "--file", "d/b.bin=0.02"]
    cwd = Path(__file__).resolve().parents[2]
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            response = httpx.head(f"{url}/org/bench/resolve/main/d/b.bin")
            assert response.headers["Content-Length"] == "20000"
        finally:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
