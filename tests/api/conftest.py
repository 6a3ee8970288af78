"""The service the API tests share: a Prefect server, a runner and uvicorn on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.api.service import Service, run_service
from tests.servers.hf_hub import FakeHub

HF_SECRET = "hf_private_token_value_1234567890"


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    with FakeHub(root / "hub") as hub:
        hub.add_token(HF_SECRET, grants=["org/private"])
        with run_service(root, hub, HF_TOKEN=HF_SECRET) as running:
            yield running


def model_files(seed: str) -> dict[str, bytes]:
    """A small repo's files, different for each seed."""
    return {
        "config.json": json.dumps({"seed": seed}).encode(),
        "model.safetensors": os.urandom(60_000),
    }
