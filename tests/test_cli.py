"""The command line, run as a user runs it: a separate process with its environment."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from model_download.store.manifest import MANIFEST_NAME
from tests.conftest import REPO_ROOT, cli_env
from tests.servers.hf_hub import FakeHub

COMMANDS = ["pull", "list", "show", "verify", "rm", "plugins", "serve"]


def run(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "model_download", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=cli_env(COLUMNS="200", **env),
        cwd=REPO_ROOT,
        timeout=120,
    )


def _files() -> dict[str, bytes]:
    return {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(120_000)}


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None) -> None:
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: model-download" in result.stdout
    if command is None:
        for name in COMMANDS:
            assert name in result.stdout


def test_pull_list_show_verify_rm(hub: FakeHub, isolated_env: Path) -> None:
    files = _files()
    commit = hub.commit("org/model", files, tag="v1.0")

    pulled = run("pull", "hf:org/model@v1.0")
    assert pulled.returncode == 0, pulled.stderr
    folder = isolated_env / "huggingface" / "org" / "model" / commit
    assert f"huggingface:org/model@v1.0  ->  {folder}" in pulled.stdout
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]

    listed = run("list")
    assert "huggingface:org/model" in listed.stdout and commit[:12] in listed.stdout
    shown = run("show", "hf:org/model@v1.0")
    assert str(folder) in shown.stdout
    assert hashlib.sha256(files["model.safetensors"]).hexdigest()[:16] in shown.stdout
    assert run("verify", "hf:org/model").returncode == 0

    corrupt = folder / "config.json"
    os.chmod(corrupt, 0o644)
    corrupt.write_bytes(b'{"a": 2}')
    verified = run("verify", "hf:org/model")
    assert verified.returncode == 1 and "config.json: sha256" in verified.stderr

    assert run("rm", "hf:org/model", stdin="n\n").returncode != 0  # declined: kept
    assert folder.exists()
    removed = run("rm", "--yes", "hf:org/model")
    assert removed.returncode == 0 and "removed huggingface:org/model@" in removed.stdout
    assert not folder.exists()
    assert "no models" in run("list").stdout


def test_pull_with_patterns_and_json_output(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    assert run("pull", "-q", "hf:org/model", "--include", "*.json").returncode == 0
    shown = run("show", "--json", "hf:org/model")
    assert '"path": "config.json"' in shown.stdout and "model.safetensors" not in shown.stdout


def test_a_failed_pull_exits_non_zero_and_names_the_problem(hub: FakeHub) -> None:
    hub.commit("org/model", _files())
    result = run("pull", "hf:org/model", "hf:org/absent")
    assert result.returncode == 1
    assert "huggingface:org/absent@main was not found" in result.stderr
    assert "huggingface:org/model@main  ->" in result.stdout  # the good one still landed


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("nohub:org/model", "unknown hub 'nohub': the known ones are geti, huggingface"),
        ("hf:../../etc", "'..'"),
        ("hf:org/model@bad..rev", "is malformed"),
        ("org/model", "has no hub"),
        ("hf:a/b/c", "not a Hugging Face model id"),
    ],
)
def test_bad_input_writes_nothing(
    hub: FakeHub, isolated_env: Path, model: str, message: str
) -> None:
    result = run("pull", "hf:org/fine", model)
    assert result.returncode == 1
    assert message in result.stderr
    assert not isolated_env.exists()
    assert hub.requests == []


def test_show_of_a_missing_model_says_how_to_pull_it() -> None:
    result = run("show", "hf:org/nothing")
    assert result.returncode == 1
    assert "model-download pull huggingface:org/nothing" in result.stderr


def test_plugins_lists_the_hubs() -> None:
    result = run("plugins", "--json")
    assert '"name": "huggingface"' in result.stdout and '"available": true' in result.stdout


def test_an_invalid_setting_is_named() -> None:
    result = run("list", MODEL_DOWNLOAD_RETRIES="many")
    assert result.returncode == 1
    assert "invalid setting (MODEL_DOWNLOAD_RETRIES" in result.stderr


def test_a_corrupt_manifest_is_reported_and_a_pull_replaces_it(
    hub: FakeHub, isolated_env: Path
) -> None:
    commit = hub.commit("org/model", _files())
    assert run("pull", "-q", "hf:org/model").returncode == 0
    manifest = isolated_env / "huggingface" / "org" / "model" / commit / MANIFEST_NAME
    os.chmod(manifest, 0o644)
    manifest.write_text('{"hub": "huggingface"')  # cut short
    name = f"huggingface:org/model@{commit}"
    remedy = f"Remove it (model-download rm {name}), then pull it again."

    listed = run("list")
    assert f"{name} at" in listed.stderr and remedy in listed.stderr.replace("\n", " ")
    for command in ("show", "verify"):
        result = run(command, "hf:org/model")
        assert result.returncode == 1, result
        assert "is corrupt: its manifest cannot be read" in result.stderr
        assert "Traceback" not in result.stderr

    pulled = run("pull", "-q", "hf:org/model")
    assert pulled.returncode == 0, pulled.stderr
    assert run("verify", "hf:org/model").returncode == 0
    assert "corrupt" not in run("list").stderr

    manifest.chmod(0o644)
    manifest.write_text("[]")
    removed = run("rm", "--yes", "hf:org/model")
    assert removed.returncode == 0 and f"removed {name} (corrupt)" in removed.stdout
    assert not manifest.parent.exists()


def test_models_dir_under_a_file_is_named(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/model", _files())
    (tmp_path / "afile").write_text("")
    for args in (("pull", "-q", "hf:org/model"), ("list",)):
        result = run(*args, MODELS_DIR=str(tmp_path / "afile" / "models"))
        assert result.returncode == 1
        assert f"{tmp_path / 'afile'} is a file. Set MODELS_DIR to a folder" in " ".join(
            result.stderr.split()
        )
        assert "Traceback" not in result.stderr


def test_an_empty_pattern_is_refused_in_a_sentence(hub: FakeHub) -> None:
    result = run("pull", "hf:org/model", "--include", "")
    assert result.returncode == 1
    assert "an include pattern is empty ('')" in result.stderr
    assert "validation error" not in result.stderr
    assert hub.requests == []


def test_a_disk_error_is_named_for_its_model_and_spares_the_others(hub: FakeHub) -> None:
    hub.commit("org/small", {"config.json": b"{}"})
    hub.commit("org/big", {"model.safetensors": os.urandom(300_000)})

    def limit_file_size() -> None:
        # Writing past RLIMIT_FSIZE fails with EFBIG (once SIGXFSZ is ignored): a real disk
        # error from the write path, as a full disk would give, without filling one.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = subprocess.run(
        [sys.executable, "-m", "model_download", "pull", "-q", "hf:org/big", "hf:org/small"],
        capture_output=True,
        text=True,
        env=cli_env(COLUMNS="200"),
        cwd=REPO_ROOT,
        timeout=120,
        preexec_fn=limit_file_size,
    )

    assert result.returncode == 1
    assert "error: cannot write" in result.stderr and "model.safetensors" in result.stderr
    assert "ulimit -f" in result.stderr and "Traceback" not in result.stderr
    assert "huggingface:org/small@main  ->" in result.stdout


BUGGY_HUB = """
from plugins.base import HubPlugin

class BuggyHub(HubPlugin):
    name = "buggyhub"
    description = "a third-party hub with a bug"

    def resolve(self, reference):
        raise KeyError("sha")

    def fetch_file(self, resolved, file, dest, on_bytes):
        raise NotImplementedError
"""


def test_an_unexpected_error_is_reported_for_its_model_alone(hub: FakeHub, tmp_path: Path) -> None:
    hub.commit("org/model", _files())
    site = tmp_path / "site"
    dist = site / "buggy_hub-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: buggy-hub\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[model_download.hubs]\nbuggyhub = buggy_hub:BuggyHub\n")
    (site / "buggy_hub.py").write_text(BUGGY_HUB)

    result = run("pull", "buggyhub:org/a", "hf:org/model", PYTHONPATH=str(site))

    assert result.returncode == 1
    assert "buggyhub:org/a: unexpected KeyError: 'sha'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "huggingface:org/model@main  ->" in result.stdout
