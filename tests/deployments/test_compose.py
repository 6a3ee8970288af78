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


def test_ports_are_published_on_loopback_unless_opened() -> None:
    services = load()["services"]
    for name in ("prefect-server", "api", "ollama"):
        for port in services[name]["ports"]:
            # "${VAR:-127.0.0.1}:host:container", or a literal loopback address.
            address = port.rsplit(":", 2)[0]
            default = address.removeprefix("${").removesuffix("}").partition(":-")[2] or address
            assert default == "127.0.0.1", (name, port)
    assert "MODEL_DOWNLOAD_API_KEY" in services["api"]["environment"]


def test_restart_policies_and_ollama_sharing_the_stores_folder() -> None:
    from plugins.hubs.ollama import SHARED_DIR

    services = load()["services"]
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
    # The server reads the folder the store links every Ollama model into.
    assert services["ollama"]["environment"]["OLLAMA_MODELS"] == f"/models/{SHARED_DIR}"
    for name in ("api", "worker"):
        assert "OLLAMA_HOST" in services[name]["environment"]


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
