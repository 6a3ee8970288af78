"""The API's results: servables for OpenVINO Model Server, published IR, jobs of a model, and
completed jobs in the reference's shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.api.conftest import model_files as _files
from tests.api.service import Service
from tests.deployments.rest import call


def test_is_ovms_gives_a_model_server_ready_folder(service: Service, tmp_path: Path) -> None:
    pytest.importorskip("optimum.exporters.openvino")
    from tests.models.tiny import build_tiny_gpt2, repo_files

    service.hub.commit("tiny/llm", repo_files(build_tiny_gpt2(tmp_path / "gpt2", seed=7)))
    body = {
        "models": [
            {
                "name": "tiny/llm",
                "hub": "openvino",
                "type": "llm",
                "is_ovms": True,
                "config": {"precision": "int8", "device": "CPU", "cache_size": 2},
            }
        ]
    }
    with service.client() as client:
        answer = client.post("/models/download", json=body).json()
    job = service.wait_job(answer["job_ids"][0], timeout=300)

    assert job["status"] == "completed", job
    servable = Path(job["result"]["ovms"])
    graph = (servable / "graph.pbtxt").read_text()
    assert "HttpLLMCalculator" in graph and "cache_size: 2" in graph and '"CPU"' in graph
    assert (servable / "openvino_model.xml").is_file()
    assert (servable / "openvino_tokenizer.xml").is_file()
    config = json.loads((servable.parent.parent / "config.json").read_text())
    assert {"name": "tiny/llm", "base_path": "tiny/llm"} in config["mediapipe_config_list"]


def test_a_hub_is_listed_page_by_page(service: Service) -> None:
    for name in ("org/list-a", "org/list-b"):
        service.hub.commit(name, _files(name))
    with service.client() as client:
        page = client.post(
            "/models/list", json={"hub": "hf", "search": "list-", "page_size": 1}
        ).json()
        assert [m["id"] for m in page["models"]] == ["org/list-a"] and page["has_more"]
        unknown = client.post("/models/list", json={"hub": "nohub"})
    assert unknown.status_code == 400 and "known ones are" in unknown.text


def test_an_openvino_ir_model_is_validated_without_conversion(
    service: Service, tmp_path: Path
) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    ov.save_model(ov.Model([ops.relu(x)], [x], "tiny"), tmp_path / "openvino_model.xml")
    service.hub.commit(
        "OpenVINO/tiny-ir-ov",
        {
            "openvino_model.xml": tmp_path / "openvino_model.xml",
            "openvino_model.bin": tmp_path / "openvino_model.bin",
        },
    )
    body = {
        "models": [
            {
                "name": "tiny-ir-ov",
                "hub": "openvino",
                "config": {"device": "CPU"},
            }
        ]
    }
    with service.client() as client:
        answer = client.post("/models/download", json=body).json()
    job = service.wait_job(answer["job_ids"][0])
    assert job["status"] == "completed", job
    assert job["result"]["converted"] == job["result"]["stored"]  # used as published
    assert job["result"]["validated"] is True


def test_jobs_of_a_model_are_found_past_the_limit_and_newest_first(service: Service) -> None:
    service.hub.commit("org/older", _files("older"))
    service.hub.commit("org/newer", _files("newer"))
    with service.client() as client:
        old = client.post("/models/download", json={"models": [{"name": "org/older", "hub": "hf"}]})
        assert old.status_code == 400  # "hf" is the CLI's short name, not a v1 hub
        older = client.post(
            "/models/download", json={"models": [{"name": "org/older", "hub": "huggingface"}]}
        ).json()["job_ids"][0]
        service.wait_job(older)
        newer = client.post(
            "/models/download", json={"models": [{"name": "org/newer", "hub": "huggingface"}]}
        ).json()["job_ids"][0]
        service.wait_job(newer)
        # The filter runs in Prefect, before the limit: the older job is still found.
        found = client.get("/models/jobs", params={"model_name": "org/older", "limit": 1}).json()
        assert [j["id"] for j in found["jobs"]] == [older]
        assert found["jobs"][0]["hub"] == "huggingface"
        none = client.get("/models/jobs", params={"model_name": "org/never-asked"})
        assert none.status_code == 404 and "org/never-asked" in none.json()["detail"]

        # A queued run (not started, so without a start time) is the newest job, listed first.
        # Through Prefect's REST API as the UI does (retrying while SQLite is locked).
        deployment = call(f"{service.prefect}/deployments/name/pipeline/pipeline")
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        queued = call(
            f"{service.prefect}/deployments/{deployment['id']}/create_flow_run",
            {
                "parameters": {"models": [{"id": "org/queued", "convert": None}]},
                "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
            },
        )["id"]
        try:
            listed = client.get("/jobs", params={"limit": 3}).json()["jobs"]
        finally:
            client.post(f"/jobs/{queued}/cancel")
    assert [j["id"] for j in listed][:2] == [queued, newer], listed
    assert listed[0]["status"] == "queued"


def test_results_in_the_references_shape(service: Service) -> None:
    service.hub.commit("org/result", _files("result"))
    with service.client() as client:
        job_id = client.post(
            "/models/download", json={"models": [{"name": "org/result", "hub": "huggingface"}]}
        ).json()["job_ids"][0]
        job = service.wait_job(job_id)
        results = client.get("/models/results").json()
    assert set(results) == {"results", "total"} and results["total"] == len(results["results"])
    mine = next(r for r in results["results"] if r["job_id"] == job_id)
    assert mine == {
        "job_id": job_id,
        "model_name": "org/result",
        "hub": "huggingface",
        "operation_type": "download",
        "status": "success",
        "model_path": job["result"]["stored"],
        "is_ovms": False,
        "completion_time": job["completion_time"],
    }


def test_is_ovms_serves_a_model_published_in_ir(service: Service, tmp_path: Path) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    x = ops.parameter([1, 4], ov.Type.f32, name="x")
    ov.save_model(ov.Model([ops.relu(x)], [x], "tiny"), tmp_path / "openvino_model.xml")
    service.hub.commit(
        "OpenVINO/tiny-embed-ov",
        {name: tmp_path / name for name in ("openvino_model.xml", "openvino_model.bin")},
    )
    body = {
        "models": [
            {
                "name": "tiny-embed-ov",
                "hub": "openvino",
                "type": "embeddings",
                "is_ovms": True,
                "config": {"openvino_config": {"num_streams": 2}},
            }
        ]
    }
    with service.client() as client:
        answer = client.post("/models/download", json=body)
    assert answer.status_code == 200, answer.text
    job = service.wait_job(answer.json()["job_ids"][0])
    assert job["status"] == "completed", job
    servable = Path(job["result"]["ovms"])
    graph = (servable / "graph.pbtxt").read_text()
    assert "EmbeddingsCalculatorOV" in graph and '"NUM_STREAMS": "2"' in graph
    assert (servable / "openvino_model.xml").is_file()
