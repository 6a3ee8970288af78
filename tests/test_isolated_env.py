"""isolated_env: whatever a developer's shell sets, a test sees no hub address nor token of it.

A pytest run in a subprocess, with our conftest as its plugin and hub variables set as a shell
would set them, runs a probe test that reads the settings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, cli_env, settings_variables

PROBE = """
import os

from model_download.settings import Settings
from tests.conftest import settings_variables


def test_probe():
    settings = Settings()
    assert settings.hf_endpoint == "http://127.0.0.1:9" and settings.hf_token is None
    assert settings.ollama_registry == "https://registry.ollama.ai"
    assert settings.ollama_host is None and settings.ultralytics_base_url is None
    assert (settings.geti_host, settings.geti_token, settings.geti_workspace_id) == (None,) * 3
    assert settings.api_key is None and settings.retries == 5
    left = {"MODELS_DIR", "HF_ENDPOINT"}
    assert [k for k in os.environ if k.upper() in settings_variables() - left] == []
    assert "HTTPS_PROXY" not in os.environ
"""

SHELL = {
    "GETI_HOST": "https://geti.example.com",
    "GETI_TOKEN": "geti_pat_from_the_shell",
    "GETI_WORKSPACE_ID": "0" * 24,
    "OLLAMA_HOST": "ollama.example.com:11434",
    "MODEL_DOWNLOAD_OLLAMA_REGISTRY": "https://registry.example.com",
    "MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL": "https://mirror.example.com/assets",
    "MODEL_DOWNLOAD_HF_ENDPOINT": "https://hf-mirror.example.com",
    "hf_token": "hf_read_in_any_case",
    "MODEL_DOWNLOAD_API_KEY": "key",
    "MODEL_DOWNLOAD_RETRIES": "0",
    "HTTPS_PROXY": "http://proxy.example.com:3128",
}


def test_every_settings_variable_is_cleared(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)

    plugins = ["-p", "no:cacheprovider", "-p", "tests.conftest"]  # our conftest, as a plugin
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, "--rootdir", str(tmp_path), str(probe)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=cli_env(**SHELL, PYTHONPATH=str(REPO_ROOT)),
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_variables_include_each_hubs_own() -> None:
    names = settings_variables()
    for name in ("HF_TOKEN", "OLLAMA_HOST", "GETI_HOST", "GETI_TOKEN", "GETI_CA_BUNDLE"):
        assert name in names
    assert "MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL" in names and "MODELS_DIR" in names
