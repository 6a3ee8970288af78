"""The download flow on a real (test-harness) Prefect server, against the loopback hub."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ParameterTypeError

import tasks.download
from flows.download import ModelSpec, download_models
from model_download import runtime
from model_download.errors import ModelDownloadError
from model_download.runtime import get_store
from model_download.store.manifest import MANIFEST_NAME
from tasks.download import download_model
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


def test_progress_artifact_says_bytes_done_of_total(prefect_server: None, hub: FakeHub) -> None:
    files = _files()
    hub.commit("org/progress", files)
    total = sum(len(data) for data in files.values())

    state = download_models(models=[ModelSpec(id="org/progress")], return_state=True)

    artifacts = asyncio.run(_artifacts(state.state_details.flow_run_id))
    [progress] = [a for a in artifacts if a.type == "progress"]
    assert float(progress.data) == 100.0
    assert progress.description == (
        f"Downloaded huggingface:org/progress@main: 50.0 KB of 50.0 KB ({total} of {total} bytes)"
    )


def test_a_transient_failure_is_retried_by_the_task_until_it_passes(
    prefect_server: None, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two attempts inside each transfer (one retry), and three 503s: the first task run gives
    # up, Prefect runs the task again, and that run gets through.
    monkeypatch.setenv("MODEL_DOWNLOAD_RETRIES", "1")
    runtime.reset()
    hub.commit("org/flaky", _files())
    hub.fail("model.safetensors", status=503, times=3)
    # The task's own retry policy (retries=2, transient errors only), with no delay between
    # attempts so that the test does not wait the production 5 s.
    monkeypatch.setattr(
        tasks.download, "download_model", download_model.with_options(retry_delay_seconds=0)
    )

    state = download_models(models=[ModelSpec(id="org/flaky")], return_state=True)

    assert state.is_completed(), state.message
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    download = next(r for r in runs if r.name.startswith("download "))
    assert download.run_count == 2
    statuses = [r.status for r in hub.requests if r.file == "model.safetensors"]
    assert statuses == [503, 503, 503, 200]
    assert get_store().verify(get_store().find("huggingface", "org/flaky")[0]) == []


def test_a_missing_model_fails_once_without_retries(prefect_server: None, hub: FakeHub) -> None:
    state = download_models(models=[ModelSpec(id="org/absent")], return_state=True)

    assert state.is_failed() and "was not found" in state.message
    runs = asyncio.run(_task_runs(state.state_details.flow_run_id))
    resolve = next(r for r in runs if r.name.startswith("resolve "))
    assert resolve.run_count == 1 and resolve.state.is_failed()
    assert not any(r.name.startswith("download ") for r in runs)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec(id="a/b/c"), "not a Hugging Face model id"),
        (ModelSpec(hub="nohub", id="org/model"), "unknown hub 'nohub'"),
        (ModelSpec(id="org/model", include=[""]), "an include pattern is empty"),
    ],
)
def test_a_reference_its_hub_refuses_fails_the_run_at_once(
    prefect_server: None, hub: FakeHub, spec: ModelSpec, message: str
) -> None:
    hub.commit("org/fine", _files())
    with pytest.raises(ModelDownloadError, match=message):
        download_models(models=[ModelSpec(id="org/fine"), spec])
    assert hub.requests == []
    assert not get_store().root.exists()


@pytest.mark.parametrize("concurrency", [0, -1, 65])
def test_concurrency_out_of_bounds_is_refused(prefect_server: None, concurrency: int) -> None:
    with pytest.raises(ParameterTypeError, match="concurrency"):
        download_models(models=[ModelSpec(id="org/any")], concurrency=concurrency)
    schema = download_models.parameters.properties["concurrency"]
    assert {"minimum": 1, "maximum": 64} in [
        {k: v for k, v in option.items() if k in ("minimum", "maximum")}
        for option in schema.get("anyOf", [schema])
    ]


def test_a_cached_model_whose_manifest_broke_is_downloaded_again(
    prefect_server: None, hub: FakeHub
) -> None:
    hub.commit("org/broken", _files())
    [first] = download_models(models=[ModelSpec(id="org/broken")])
    manifest = Path(first.path) / MANIFEST_NAME
    manifest.write_text("{")
    hub.clear_log()

    [again] = download_models(models=[ModelSpec(id="org/broken")])

    assert again.status == "stored" and again.path == first.path
    # The weights still have their blob (sha256 known): only the small file is fetched again.
    assert [r.file for r in hub.file_requests()] == ["config.json"]
    assert get_store().corrupt() == []
    assert get_store().verify(get_store().find("huggingface", "org/broken")[0]) == []
