"""The Ollama hub against a real OCI registry, and its server calls through the real client.

The registry is Debian's ``docker-registry`` (the distribution project's server), holding models
pushed in Ollama's manifest format; a loopback proxy before it counts requests, cuts responses
and demands tokens. No Ollama server binary exists here (neither Debian, PyPI nor npm has one):
the server calls go through the official ``ollama`` client to ``tests.servers.ollama_api``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_download import errors, runtime
from model_download.pull import download_resolved, remove_models, resolve_reference
from model_download.refs import parse_reference
from model_download.runtime import get_registry, get_store
from model_download.store.store import StoredModel
from plugins.hubs.ollama import SHARED_DIR, OllamaHub
from tests.servers.ollama_api import FakeOllama
from tests.servers.ollama_registry import (
    MODEL,
    TEMPLATE,
    CountingProxy,
    DockerRegistry,
    PushedModel,
    require_registry,
)

WEIGHTS = os.urandom(300_000)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DockerRegistry]:
    require_registry()
    with DockerRegistry(tmp_path / "registry") as server:
        yield server


@pytest.fixture
def proxy(registry: DockerRegistry, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingProxy]:
    """The proxy before the registry, set as the hub's registry."""
    with CountingProxy(registry.url) as counting:
        monkeypatch.setenv("MODEL_DOWNLOAD_OLLAMA_REGISTRY", counting.url)
        monkeypatch.setenv("MODEL_DOWNLOAD_RETRIES", "2")
        runtime.reset()
        yield counting


def hub() -> OllamaHub:
    plugin = get_registry().hub("ollama")
    assert isinstance(plugin, OllamaHub)
    return plugin


def pull(text: str) -> StoredModel:
    resolved = resolve_reference(parse_reference(text), get_registry())
    return download_resolved(resolved, store=get_store(), registry=get_registry())


def push(
    registry: DockerRegistry,
    repo: str = "library/tiny",
    tag: str = "latest",
    weights: bytes = WEIGHTS,
    template: bytes = b"{{ .Prompt }}",
) -> PushedModel:
    return registry.push_model(repo, tag, [(MODEL, weights), (TEMPLATE, template)])


def host(proxy: CountingProxy) -> str:
    return proxy.url.removeprefix("http://")


def test_pull_stores_ollama_layout_and_links_it_into_one_models_dir(
    registry: DockerRegistry, proxy: CountingProxy
) -> None:
    pushed = push(registry)

    stored = pull("ollama:tiny")

    digest = pushed.digest.removeprefix("sha256:")
    manifest = f"manifests/{host(proxy)}/library/tiny/latest"
    assert stored.manifest.id == f"{host(proxy).replace(':', '+')}/library/tiny"
    assert stored.manifest.revision == f"sha256-{digest}"
    assert (stored.path / manifest).read_bytes() == pushed.manifest
    for hex_digest, data in pushed.blobs.items():
        assert (stored.path / f"blobs/sha256-{hex_digest}").read_bytes() == data
    assert get_store().verify(stored) == []

    shared = get_store().root / SHARED_DIR
    for file in stored.manifest.files:
        assert (shared / file.path).stat().st_ino == (stored.path / file.path).stat().st_ino
    # Pinned by digest: the same revision, the manifest under a tag Ollama can name.
    again = pull(f"ollama:tiny@sha256-{digest}")
    assert again.path == stored.path
    assert (shared / f"manifests/{host(proxy)}/library/tiny/sha256-{digest}").is_file()


def test_models_sharing_a_layer_store_it_once(
    registry: DockerRegistry, proxy: CountingProxy
) -> None:
    push(registry)
    template = b"{{ .System }} {{ .Prompt }}"
    push(registry, "team/other", "v1", template=template)
    one = pull("ollama:tiny")
    proxy.clear()

    two = pull("ollama:team/other@v1")

    # Only the layer the first model lacks is fetched: weights and config come from the store.
    fetched = [r.path.rsplit(":", 1)[-1] for r in proxy.blob_requests()]
    assert fetched == [hashlib.sha256(template).hexdigest()]
    weights = f"blobs/sha256-{hashlib.sha256(WEIGHTS).hexdigest()}"
    shared = get_store().root / SHARED_DIR / weights
    inodes = {(m.path / weights).stat().st_ino for m in (one, two)} | {shared.stat().st_ino}
    assert len(inodes) == 1
    blobs = [p for p in (get_store().root / ".store" / "blobs").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in blobs) < len(WEIGHTS) + 10_000


def test_repeat_pull_sends_no_blob_request(registry: DockerRegistry, proxy: CountingProxy) -> None:
    push(registry)
    pull("ollama:tiny")
    assert len(proxy.blob_requests()) == 3
    proxy.clear()

    again = pull("ollama:tiny@latest")

    assert proxy.blob_requests() == []
    assert [r.path for r in proxy.requests] == ["/v2/library/tiny/manifests/latest"]
    assert get_store().verify(again) == []


def test_cut_connection_resumes_mid_blob(registry: DockerRegistry, proxy: CountingProxy) -> None:
    push(registry)
    weights = hashlib.sha256(WEIGHTS).hexdigest()
    proxy.cut = (weights, 100_000)

    stored = pull("ollama:tiny")

    requests = [r for r in proxy.blob_requests() if weights in r.path]
    assert [r.range for r in requests] == [None, "bytes=100000-"]
    assert get_store().verify(stored) == []


def test_large_blob_comes_in_parallel_verified_ranges(
    registry: DockerRegistry, proxy: CountingProxy
) -> None:
    big = os.urandom(3 << 20)
    push(registry, weights=big)
    plugin = hub()
    plugin.parallel_threshold, plugin.parallel_parts = 1 << 20, 4
    digest = hashlib.sha256(big).hexdigest()
    proxy.cut = (digest, 50_000)  # the first range to start is cut, and must resume

    stored = pull("ollama:tiny")

    ranges = sorted(r.range or "" for r in proxy.blob_requests() if digest in r.path)
    starts = {int(r.removeprefix("bytes=").split("-")[0]) for r in ranges}
    assert len(ranges) == 4 and len(starts) == 4  # three parts, one of them twice
    assert all(r.startswith("bytes=") and not r.endswith("-") for r in ranges)
    assert (stored.path / f"blobs/sha256-{digest}").read_bytes() == big
    assert get_store().verify(stored) == []
    assert not list(stored.path.glob("blobs/.*"))  # no part left behind


def test_server_without_ranges_gets_one_stream(
    registry: DockerRegistry, proxy: CountingProxy
) -> None:
    big = os.urandom(3 << 20)
    push(registry, weights=big)
    hub().parallel_threshold = 1 << 20
    proxy.ignore_ranges = True

    stored = pull("ollama:tiny")

    digest = hashlib.sha256(big).hexdigest()
    assert (stored.path / f"blobs/sha256-{digest}").read_bytes() == big
    assert not list(stored.path.glob("blobs/.*"))


def test_manifest_is_fetched_again_by_digest_in_another_process(
    registry: DockerRegistry, proxy: CountingProxy
) -> None:
    pushed = push(registry)
    resolved = resolve_reference(parse_reference("ollama:tiny"), get_registry())
    runtime.reset()  # what a download task in another process starts from

    stored = download_resolved(resolved, store=get_store(), registry=get_registry())

    assert f"/v2/library/tiny/manifests/{pushed.digest}" in [r.path for r in proxy.requests]
    assert get_store().verify(stored) == []


def test_manifest_not_matching_its_digest_is_refused(
    registry: DockerRegistry, proxy: CountingProxy
) -> None:
    push(registry)
    proxy.tamper = "/manifests/"
    with pytest.raises(errors.IntegrityError, match="the registry says"):
        pull("ollama:tiny")
    assert get_store().list() == []


def test_unknown_model_and_unknown_tag(registry: DockerRegistry, proxy: CountingProxy) -> None:
    push(registry)
    with pytest.raises(errors.ModelNotFoundError, match="check the name"):
        pull("ollama:nothing")
    with pytest.raises(errors.RevisionNotFoundError, match="no tag 'nope': its tags are latest"):
        pull("ollama:tiny@nope")
    assert get_store().list() == []


@pytest.mark.parametrize("weights", [WEIGHTS, os.urandom(3 << 20)], ids=["stream", "ranges"])
def test_tampered_blob_is_refused(
    registry: DockerRegistry, proxy: CountingProxy, weights: bytes
) -> None:
    push(registry, weights=weights)
    hub().parallel_threshold = 1 << 20
    stored_blob = registry.blob_file(hashlib.sha256(weights).hexdigest())
    data = bytearray(stored_blob.read_bytes())
    data[1000] ^= 0xFF
    stored_blob.write_bytes(bytes(data))

    with pytest.raises(errors.IntegrityError, match="corrupt"):
        pull("ollama:tiny")

    assert get_store().list() == []
    assert not (get_store().root / SHARED_DIR).exists()
    staged = get_store().root / ".store" / "staging"
    assert not [p for p in staged.rglob("*") if p.name.endswith((".part", ".joining"))]


def test_token_exchange_and_its_refusal(registry: DockerRegistry, proxy: CountingProxy) -> None:
    push(registry)
    push(registry, "team/other")
    proxy.token = "anonymous-token"

    stored = pull("ollama:tiny")

    assert get_store().verify(stored) == []
    assert proxy.token_requests[0] == {
        "service": ["test-registry"],
        "scope": ["repository:library/tiny:pull"],
    }
    proxy.refuse_token = True
    with pytest.raises(errors.UnauthorizedError, match="wants credentials") as info:
        pull("ollama:team/other")
    assert "anonymous-token" not in str(info.value)


def test_token_asked_for_by_blobs_only(registry: DockerRegistry, proxy: CountingProxy) -> None:
    push(registry)
    proxy.token, proxy.protect = "blob-token", "/blobs/"

    stored = pull("ollama:tiny")

    assert get_store().verify(stored) == []
    assert len(proxy.token_requests) == 1


def test_list_tags_and_prune_of_the_shared_dir(
    registry: DockerRegistry, proxy: CountingProxy
) -> None:
    push(registry)
    push(registry, tag="v1", weights=b"other weights")
    assert hub().list_tags("tiny") == ["latest", "v1"]
    page = hub().search("tiny", page_size=1)
    assert [m.revision for m in page.models] == ["latest"] and page.has_more
    with pytest.raises(errors.ModelNotFoundError):
        hub().list_tags("library/nothing")

    stored = pull("ollama:tiny@v1")
    store = get_store()
    remove_models(store, get_registry(), stored.manifest.hub, stored.manifest.id)

    assert hub().prune_shared(store) == []  # removing the model pruned the shared dir already
    assert not any(p.is_file() for p in (store.root / SHARED_DIR).rglob("*"))
    assert not any(p.is_file() for p in (store.root / ".store" / "blobs").rglob("*"))


def test_reference_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime.reset()

    def validated(text: str) -> tuple[str, str | None]:
        ref = hub().validate(parse_reference(text))
        return ref.id, ref.revision

    assert validated("ollama:llama3.2@1b") == ("registry.ollama.ai/library/llama3.2", "1b")
    assert validated("ollama:team/m") == ("registry.ollama.ai/team/m", "latest")
    assert validated("ollama:reg.example+5000/team/m@v1") == ("reg.example+5000/team/m", "v1")
    # Ollama's own spelling: the tag after ':', a registry's port as host:port.
    assert validated("ollama:llama3.2:1b") == ("registry.ollama.ai/library/llama3.2", "1b")
    assert validated("ollama:reg.example:5000/team/m:v1") == ("reg.example+5000/team/m", "v1")
    assert validated("ollama:reg.example:5000/team/m@v1") == ("reg.example+5000/team/m", "v1")
    with pytest.raises(errors.InvalidReferenceError, match="names tag '1b' but the revision"):
        parse_reference("ollama:llama3.2:1b@3b")
    with pytest.raises(errors.InvalidReferenceError, match=r"neither a tag's.*host\[\+port\]"):
        parse_reference("ollama:reg:x/team/m")
    with pytest.raises(errors.InvalidReferenceError, match="invalid part"):
        parse_reference("hf:org/name:1b")  # other hubs keep the core's rule
    with pytest.raises(errors.InvalidReferenceError, match="invalid namespace"):
        validated("ollama:a.b/m")
    with pytest.raises(errors.InvalidReferenceError, match="4 parts"):
        validated("ollama:a/b/c/d")


def test_unreachable_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DOWNLOAD_OLLAMA_REGISTRY", "http://127.0.0.1:9")
    monkeypatch.setenv("MODEL_DOWNLOAD_RETRIES", "0")
    runtime.reset()
    with pytest.raises(errors.HubUnreachableError, match="cannot reach"):
        pull("ollama:tiny")


# -- the Ollama server, through the official client ---------------------------------------------


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    pytest.importorskip("ollama", reason="the ollama client is not installed: pip install ollama")
    with FakeOllama({"tiny": [1000, 20]}, private=("team/secret",)) as fake:
        monkeypatch.setenv("OLLAMA_HOST", fake.url)
        runtime.reset()
        yield fake


def test_server_pull_reports_progress_then_lists_shows_and_deletes(server: FakeOllama) -> None:
    seen = []

    assert hub().server().pull("tiny", seen.append) == "success"

    assert seen[0].status == "pulling manifest" and seen[-1].status == "success"
    done = {p.digest: p.completed for p in seen if p.digest}
    assert done == {digest: size for digest, size in server.layers("tiny")}
    assert [m.name for m in hub().server().list()] == ["tiny:latest"]
    assert hub().server().show("tiny")["template"] == "{{ .Prompt }}"
    hub().server().delete("tiny")
    assert hub().server().list() == []


def test_server_errors_become_ours(server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.ModelNotFoundError, match="check the name and tag"):
        hub().server().pull("nothing")
    with pytest.raises(errors.UnauthorizedError, match="ollama signin"):
        hub().server().pull("team/secret")
    with pytest.raises(errors.ModelNotFoundError, match="pull it first"):
        hub().server().show("tiny")
    with pytest.raises(errors.ModelNotFoundError, match="pull it first"):
        hub().server().delete("tiny")

    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    runtime.reset()
    with pytest.raises(errors.ServiceUnavailableError, match="start it"):
        hub().server().list()
    monkeypatch.delenv("OLLAMA_HOST")
    runtime.reset()
    with pytest.raises(errors.ServiceUnavailableError, match="set OLLAMA_HOST"):
        hub().server().list()
