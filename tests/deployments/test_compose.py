"""docker-compose.yml cannot run here (no Docker engine): check its shape and that the commands
it gives each service exist in this project. test_scale_out runs those same commands for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_volumes_and_health_checks() -> None:
    compose = load()
    services = compose["services"]
    assert {"postgres", "prefect-server", "api", "worker", "ollama"} <= set(services)
    assert {"models", "pgdata"} <= set(compose["volumes"])
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    for name in ("api", "worker"):
        assert "models:/models" in services[name]["volumes"]
        assert services[name]["environment"]["PREFECT_API_URL"].startswith("http://prefect-server")
        assert services[name]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert services["ollama"]["profiles"] == ["ollama"]
    assert "replicas" not in str(services["worker"]) and "container_name" not in services["worker"]


def worker_steps() -> list[list[str]]:
    """The worker's shell command, split into its steps."""
    script = load()["services"]["worker"]["command"][-1]
    return [step.split() for step in script.split("&&")]


def test_each_command_exists_here() -> None:
    services = load()["services"]
    commands = [services["prefect-server"]["command"], services["api"]["command"], *worker_steps()]
    for command in commands:
        program, args = command[0], [a for a in command[1:] if a.startswith("--")]
        assert program in ("prefect", "uvicorn"), command
        words = [a for a in command[1:] if not a.startswith("-")]
        # prefect's subcommands are one word (deploy) or two (server start, work-pool create).
        sub = words[:1] if words[:1] == ["deploy"] else words[:2]
        helped = subprocess.run(
            [sys.executable, "-m", program, *(sub if program == "prefect" else []), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO_ROOT,
        )
        assert helped.returncode == 0, (command, helped.stderr)
        for option in args:
            if option != "--no-prompt":  # a global option of prefect, before the subcommand
                assert option.split("=")[0] in helped.stdout, (command, option)
    app = services["api"]["command"][1]
    module, _, factory = app.partition(":")
    __import__(module)
    assert callable(getattr(sys.modules[module], factory))


def test_the_image_installs_what_the_commands_need() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for folder in ("model_download", "plugins", "tasks", "flows", "deployments", "api"):
        assert f"COPY {folder} ./{folder}" in dockerfile
        assert Path(REPO_ROOT / folder).is_dir()
    assert "constraints.txt" in dockerfile and "prefect.yaml" in dockerfile
