"""Ollama as users type and read it: the command line, Ollama's own names, and what errors say.

The registry is Debian's ``docker-registry`` behind the counting proxy (see test_ollama.py); the
``model-download ollama`` commands drive ``tests.servers.ollama_api`` through the real ``ollama``
client, since no Ollama server binary can be installed here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_download import errors
from model_download.runtime import get_store
from plugins.hubs.ollama import SHARED_DIR
from tests.plugins.test_ollama import host, hub, proxy, pull, push, registry, server  # noqa: F401
from tests.servers.ollama_api import FakeOllama
from tests.servers.ollama_registry import REQUIRE, CountingProxy, DockerRegistry, require_registry
from tests.test_cli import run


def test_search_prints_a_reference_per_tag_that_pull_takes(
    registry: DockerRegistry,  # noqa: F811
    proxy: CountingProxy,  # noqa: F811
) -> None:
    push(registry)
    push(registry, tag="v1", weights=b"other weights")

    found = run("search", "ollama", "tiny")

    assert found.returncode == 0, found.stderr
    rows = [line.split()[0] for line in found.stdout.splitlines()[1:] if line.strip()]
    assert rows == ["ollama:tiny@latest", "ollama:tiny@v1"]
    pulled = run("pull", rows[1], "--quiet")
    assert pulled.returncode == 0, pulled.stderr
    [stored] = get_store().list()
    assert stored.manifest.requested_revisions == ["v1"]


def test_search_refuses_filters_a_registry_cannot_apply(
    registry: DockerRegistry,  # noqa: F811
    proxy: CountingProxy,  # noqa: F811
) -> None:
    push(registry)
    with pytest.raises(errors.InvalidReferenceError, match=r"by author \(--author"):
        hub().search("tiny", author="library")
    with pytest.raises(errors.InvalidReferenceError, match=r"by tag \(--tag"):
        hub().search("tiny", tags=("gguf",))
    with pytest.raises(errors.InvalidReferenceError, match="search for 'tiny'"):
        hub().search("tiny:v1")
    refused = run("search", "ollama", "tiny", "--tag", "gguf")
    assert refused.returncode == 1 and "--tag" in refused.stderr
    assert proxy.requests == []  # refused before asking the registry


def test_pull_by_ollamas_own_name_with_a_registry_host(
    registry: DockerRegistry,  # noqa: F811
    proxy: CountingProxy,  # noqa: F811
) -> None:
    pushed = push(registry, "team/tiny", "v1")
    name = f"{host(proxy)}/team/tiny:v1"  # host:port/namespace/model:tag, as ollama pull takes

    pulled = run("pull", f"ollama:{name}", "--quiet")

    assert pulled.returncode == 0, pulled.stderr
    [stored] = get_store().list()
    assert stored.manifest.id == f"{host(proxy).replace(':', '+')}/team/tiny"
    assert str(stored.path) in pulled.stdout
    manifest = get_store().root / SHARED_DIR / f"manifests/{host(proxy)}/team/tiny/v1"
    assert manifest.read_bytes() == pushed.manifest
    assert get_store().verify(stored) == []
    assert sum("/blobs/" in r.path for r in proxy.requests) == len(pushed.blobs)


def test_a_digest_no_manifest_has_is_not_called_a_tag(
    registry: DockerRegistry,  # noqa: F811
    proxy: CountingProxy,  # noqa: F811
) -> None:
    push(registry)
    digest = "0" * 64
    with pytest.raises(errors.RevisionNotFoundError, match="no manifest with digest") as info:
        pull(f"ollama:tiny@sha256-{digest}")
    assert f"sha256:{digest}" in str(info.value) and "its tags are latest" in str(info.value)
    assert "no tag" not in str(info.value)


def test_missing_registry_fails_when_ci_requires_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # where no docker-registry is
    assert shutil.which("docker-registry") is None
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install docker-registry"):
        require_registry()
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE}=1"):
        require_registry()


# -- model-download ollama: the server at OLLAMA_HOST ------------------------------------------


def test_the_ollama_commands_pull_list_show_and_remove(server: FakeOllama) -> None:  # noqa: F811
    pulled = run("ollama", "pull", "tiny")

    assert pulled.returncode == 0, pulled.stderr
    assert f"tiny: success on {server.url}" in pulled.stdout
    assert "tiny: pulling manifest" in pulled.stderr  # the statuses, then a bar per layer
    for digest, size in server.layers("tiny"):
        bar = next(line for line in pulled.stderr.splitlines() if digest[7:19] in line)
        assert f"{size}/{size} bytes" in bar or f"{size / 1000:.1f}/{size / 1000:.1f} kB" in bar
    assert [b["model"] for m, p, b in server.requests if p == "/api/pull"] == ["tiny"]

    listed = json.loads(run("ollama", "list", "--json").stdout)
    assert [m["name"] for m in listed] == ["tiny:latest"] and listed[0]["size"] == 1020
    shown = run("ollama", "show", "tiny")
    assert shown.returncode == 0 and "{{ .Prompt }}" in shown.stdout and "gguf" in shown.stdout
    assert json.loads(run("ollama", "show", "tiny", "--json").stdout)["template"]

    removed = run("ollama", "rm", "tiny", "--yes")
    assert removed.returncode == 0 and f"removed tiny from {server.url}" in removed.stdout
    assert "no models on the Ollama server" in run("ollama", "list").stdout


def test_the_ollama_commands_say_what_is_wrong(
    server: FakeOllama,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = run("ollama", "pull", "nothing", "tiny", "--quiet")
    assert missing.returncode == 1 and "check the name and tag" in missing.stderr
    assert "tiny: success" in missing.stdout  # one failure spares the others
    assert "pull it first" in run("ollama", "rm", "nothing", "--yes").stderr

    down = run("ollama", "list", OLLAMA_HOST="http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach the Ollama server" in down.stderr
    monkeypatch.delenv("OLLAMA_HOST")
    unset = run("ollama", "show", "tiny")
    assert unset.returncode == 1 and "set OLLAMA_HOST" in unset.stderr
