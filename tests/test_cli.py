"""The command line, run as a user runs it: a separate process with its environment."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
