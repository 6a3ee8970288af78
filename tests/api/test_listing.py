"""POST /api/v1/models/list for the Ollama hub: a model's tags, refused filters, unknown models.

The app runs in-process through Starlette's test client, not entered as a context manager so
that its lifespan (a Prefect client) does not run: listing needs no Prefect server. The registry
behind it is Debian's ``docker-registry`` (see tests/plugins/test_ollama.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.plugins.test_ollama import proxy, push, registry  # noqa: F401  (fixtures)
from tests.servers.ollama_registry import CountingProxy, DockerRegistry

LIST = "/api/v1/models/list"


@pytest.fixture
def client(registry: DockerRegistry, proxy: CountingProxy) -> Iterator[TestClient]:  # noqa: F811
    push(registry)
    push(registry, tag="v1", weights=b"other weights")
    client = TestClient(create_app())
    yield client
    client.close()


def test_an_ollama_models_tags_are_listed_page_by_page(client: TestClient) -> None:
    answer = client.post(LIST, json={"hub": "ollama", "search": "tiny"})
    second = client.post(LIST, json={"hub": "ollama", "search": "tiny", "page": 2, "page_size": 1})

    assert answer.status_code == 200, answer.text
    page = answer.json()
    listed = [(m["id"], m["revision"]) for m in page["models"]]
    assert listed == [("tiny", "latest"), ("tiny", "v1")]
    assert page["hub"] == "ollama" and not page["has_more"]
    assert [m["revision"] for m in second.json()["models"]] == ["v1"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"search": "tiny", "author": "library"}, "author"),
        ({"search": "tiny", "tags": ["gguf"]}, "tag"),
        ({"search": "tiny:v1"}, "names a tag"),
        ({}, "name one"),
    ],
)
def test_what_a_registry_cannot_do_is_a_400(
    client: TestClient,
    proxy: CountingProxy,  # noqa: F811
    body: dict,
    named: str,
) -> None:
    proxy.clear()
    refused = client.post(LIST, json={"hub": "ollama", **body})
    assert refused.status_code == 400, refused.text
    assert named in refused.json()["detail"]
    assert proxy.requests == []


def test_an_unknown_model_is_a_404(client: TestClient) -> None:
    missing = client.post(LIST, json={"hub": "ollama", "search": "nothing"})
    assert "no model" in missing.json()["detail"]
    assert missing.status_code == 404
