"""The download flow on a real (test-harness) Prefect server, against the loopback hub."""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.download import ModelSpec, download_models
from model_download.runtime import get_store
from tests.servers.hf_hub import FakeHub


def _files() -> dict[str, bytes]:
    # Random content: commit ids (and so cache keys) differ from every other test's.
    return {"config.json": os.urandom(16).hex().encode(), "model.safetensors": os.urandom(50_000)}


async def _task_runs(flow_run_id: UUID):
    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


async def _artifacts(flow_run_id: UUID):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_flow_downloads_models_and_a_failure_spares_the_others(
    prefect_server: None, hub: FakeHub
) -> None:
    hub.commit("org/a", _files())
    hub.commit("org/b", _files())
    models = [ModelSpec(id="org/a"), ModelSpec(id="org/missing"), ModelSpec(hub="hf", id="org/b")]

    state = download_models(models=models, concurrency=2, return_state=True)

    assert state.is_failed()
    assert "1 of 3 models failed" in state.message
    assert "org/missing" in state.message and "was not found" in state.message
    stored = {m.manifest.id for m in get_store().list()}
    assert stored == {"org/a", "org/b"}

    flow_run_id = state.state_details.flow_run_id
    artifacts = asyncio.run(_artifacts(flow_run_id))
    table = next(a for a in artifacts if a.type == "table")
    assert "org/missing" in str(table.data) and "stored" in str(table.data)
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 2 and all(float(a.data) == 100.0 for a in progress)


def test_a_repeat_run_is_a_cache_hit_with_no_file_request(
    prefect_server: None, hub: FakeHub
) -> None:
    hub.commit("org/repeat", _files())
    first = download_models(models=[ModelSpec(id="org/repeat")])
    hub.clear_log()

    state = download_models(models=[ModelSpec(id="org/repeat")], return_state=True)

    assert state.is_completed()
    assert state.result()[0].path == first[0].path
    assert hub.file_requests() == []
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    download = next(r for r in runs if r.name.startswith("download "))
    assert download.state.name == "Cached"


def test_a_model_removed_from_the_store_is_downloaded_again(
    prefect_server: None, hub: FakeHub
) -> None:
    hub.commit("org/removed", _files())
    download_models(models=[ModelSpec(id="org/removed")])
    get_store().delete("huggingface", "org/removed")
    hub.clear_log()

    outcome = download_models(models=[ModelSpec(id="org/removed")])

    assert len(hub.file_requests()) == 2
    assert get_store().verify(get_store().find("huggingface", "org/removed")[0]) == []
    assert outcome[0].status == "stored"


def test_bad_input_fails_the_run_before_anything_is_written(
    prefect_server: None, hub: FakeHub
) -> None:
    with pytest.raises(ValueError, match="'..'"):
        download_models(models=[ModelSpec(id="org/../../etc")])
    assert not get_store().root.exists()
    assert hub.requests == []
