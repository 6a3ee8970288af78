"""The REST API as clients see it: a real service (Prefect server, runner, uvicorn) on loopback."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import HF_SECRET
from tests.api.conftest import model_files as _files
from tests.api.service import API_KEY, Service, free_port, start_api


def test_health_needs_no_key_and_docs_are_served(service: Service) -> None:
    assert httpx.get(f"{service.api}/health").json() == {"status": "ok"}
    root = service.api.removesuffix("/api/v1")
    assert httpx.get(f"{root}/docs").status_code == 200
    paths = httpx.get(f"{service.api}/openapi.json").json()["paths"]
    assert "/api/v1/models/download" in paths and "/api/v1/jobs/{job_id}/cancel" in paths


def test_the_api_key_is_enforced(service: Service) -> None:
    with service.client(key=None) as client:
        assert client.get("/plugins").status_code == 401
    with service.client(key="wrong") as client:
        assert client.get("/jobs").status_code == 401
    with service.client() as client:
        assert client.get("/plugins").status_code == 200
    bearer = httpx.get(f"{service.api}/plugins", headers={"Authorization": f"Bearer {API_KEY}"})
    assert bearer.status_code == 200


def test_a_v1_request_becomes_a_completed_job_with_files_in_the_store(service: Service) -> None:
    files = _files("v1")
    service.hub.commit("org/tiny", files)
    body = {
        "models": [
            {
                "name": "org/tiny",
                "hub": "huggingface",
                "type": "llm",
                "is_ovms": False,
                "revision": None,
                "config": {},
            }
        ],
        "parallel_downloads": False,
    }
    with service.client() as client:
        response = client.post("/models/download", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "processing" and len(answer["job_ids"]) == 1

    job = service.wait_job(answer["job_ids"][0])

    assert job["status"] == "completed", job
    assert job["model_name"] == "org/tiny" and job["progress"]["percent"] == 100.0
    size = sum(len(data) for data in files.values())
    assert job["progress"]["bytes_total"] == job["progress"]["bytes_done"] == size
    stored = Path(job["result"]["stored"])
    assert stored.is_relative_to(service.models) and (stored / "model.safetensors").is_file()
    with service.client() as client:
        listed = client.get("/models").json()["models"]
        assert any(m["name"] == "org/tiny" for m in listed)
        found = client.get("/models/jobs", params={"model_name": "org/tiny"}).json()
        assert answer["job_ids"][0] in [j["id"] for j in found["jobs"]]


def test_a_stored_request_answers_at_once_without_a_run(service: Service) -> None:
    service.hub.commit("org/cached", _files("cached"))
    body = {"models": [{"name": "org/cached", "hub": "huggingface"}]}
    with service.client() as client:
        first = client.post("/models/download", json=body).json()
        service.wait_job(first["job_ids"][0])
        service.hub.clear_log()
        started = time.monotonic()
        again = client.post("/models/download", json=body)
        elapsed = time.monotonic() - started
    assert again.json()["status"] == "completed"
    assert again.json()["job_ids"] == first["job_ids"]  # the job that stored it answers
    assert elapsed < 2 and service.hub.requests == []
    assert service.wait_job(again.json()["job_ids"][0], timeout=5)["status"] == "completed"

    # Stored already, so nothing but the export would touch the disk: the path is refused first.
    with service.client() as client:
        for bad in ("team\x00a", "t" * 300):
            refused = client.post("/models/download", params={"download_path": bad}, json=body)
            assert refused.status_code == 400 and "download_path" in refused.text, refused.text
        placed = client.post("/models/download", params={"download_path": "team-ok"}, json=body)
        assert placed.json()["status"] == "completed"
        # No run made this answer, yet its job shows where the files are, as a run's would.
        job = client.get(f"/jobs/{placed.json()['job_ids'][0]}").json()
    exported = service.models / "team-ok" / "huggingface" / "org/cached"
    assert (exported / "config.json").is_file()
    assert job["status"] == "completed" and job["stage"] == "done", job
    assert job["result"]["exported"] == str(exported)
    assert (Path(job["result"]["stored"]) / "config.json").is_file() and job["result"]["size"] > 0

    # A request Prefect cannot record (its server is down) writes nothing.
    port = free_port()
    env = {**service.env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    api = start_api(env, port)
    try:
        down = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/models/download",
            params={"download_path": "team-down"},
            json=body,
            headers={"X-API-Key": API_KEY},
            timeout=60,
        )
    finally:
        api.terminate()
        api.wait(timeout=20)
    assert down.status_code == 503, down.text
    assert not (service.models / "team-down").exists()


def _task_times(service: Service, job_id: str) -> tuple[float, float]:
    """When the job's work ran: from its first task run's start to its last one's end."""
    # Task runs reach Prefect's database through its event stream: a moment after the flow.
    deadline, seen = time.monotonic() + 30, None
    while True:
        runs = httpx.post(
            f"{service.prefect}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [job_id]}}},
            timeout=30,
        ).json()
        ended = [t for t in runs if t["end_time"]]
        if runs and len(ended) == len(runs) and len(runs) == seen:  # all ended, and no more
            starts = [_epoch(t["start_time"]) for t in runs if t["start_time"]]
            return min(starts), max(_epoch(t["end_time"]) for t in runs)
        seen = len(runs)
        assert time.monotonic() < deadline, runs
        time.sleep(1)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_parallel_downloads_run_together_and_in_turn_otherwise(service: Service) -> None:
    for name in ("org/p1", "org/p2", "org/s1", "org/s2"):
        service.hub.commit(name, _files(name))
    # Each model's download stalls (then resumes) for 3 s: runs that overlap ran together.
    service.hub.stall("model.safetensors", after_bytes=1000, seconds=3, times=4)
    try:
        models = [{"name": n, "hub": "huggingface"} for n in ("org/p1", "org/p2")]
        with service.client() as client:
            parallel = client.post(
                "/models/download", json={"models": models, "parallel_downloads": True}
            ).json()
        jobs = [service.wait_job(job_id) for job_id in parallel["job_ids"]]
        assert [j["status"] for j in jobs] == ["completed", "completed"]
        (start1, end1), (start2, end2) = (_task_times(service, j) for j in parallel["job_ids"])
        assert max(start1, start2) < min(end1, end2), "the parallel jobs did not overlap"

        models = [{"name": n, "hub": "huggingface"} for n in ("org/s1", "org/s2")]
        service.hub.clear_log()
        with service.client() as client:
            serial = client.post("/models/download", json={"models": models}).json()
        first, second = (service.wait_job(job_id) for job_id in serial["job_ids"])
    finally:
        service.hub.clear_faults()
    assert first["status"] == second["status"] == "completed"
    (_, end1), (start2, _) = (_task_times(service, j) for j in serial["job_ids"])
    assert start2 >= end1, "the second job started before the first had finished"
    order = [r.repo_id for r in service.hub.file_requests()]
    assert order == sorted(order)  # every file of org/s1 came before any of org/s2


def test_a_running_job_can_be_cancelled(service: Service) -> None:
    service.hub.commit("org/slow", {"model.bin": os.urandom(200_000)})
    service.hub.stall("model.bin", after_bytes=1000, seconds=120)
    with service.client() as client:
        job_id = client.post(
            "/models/download", json={"models": [{"name": "org/slow", "hub": "huggingface"}]}
        ).json()["job_ids"][0]
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{job_id}").json()["status"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        cancelled = client.post(f"/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200
    assert service.wait_job(job_id, timeout=90)["status"] == "cancelled"
    service.hub.clear_faults()


def test_job_status_survives_a_restart_of_the_api(service: Service) -> None:
    service.hub.commit("org/kept", _files("kept"))
    with service.client() as client:
        job_id = client.post(
            "/models/download", json={"models": [{"name": "org/kept", "hub": "huggingface"}]}
        ).json()["job_ids"][0]
    before = service.wait_job(job_id)
    port = free_port()
    other = start_api(service.env, port)  # a fresh API process: nothing in its memory
    try:
        after = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}", headers={"X-API-Key": API_KEY}
        ).json()
    finally:
        other.terminate()
        other.wait(timeout=20)
    assert after["status"] == before["status"] == "completed"
    assert after["result"] == before["result"]


def test_a_token_used_for_a_private_repo_is_stored_nowhere(service: Service) -> None:
    service.hub.commit("org/private", _files("private"), private=True)
    # The service's token does not open this one: the hub refuses it, the job fails.
    service.hub.add_token("hf_another_token_0987654321", grants=["org/closed"])
    service.hub.commit("org/closed", _files("closed"), private=True)
    with service.client() as client:
        answer = client.post(
            "/models/download", json={"models": [{"name": "org/private", "hub": "huggingface"}]}
        )
        job = service.wait_job(answer.json()["job_ids"][0])
        assert job["status"] == "completed", job
        assert HF_SECRET not in client.get(f"/jobs/{job['id']}").text
        refused = client.post(
            "/models/download", json={"models": [{"name": "org/closed", "hub": "huggingface"}]}
        )
        failed = service.wait_job(refused.json()["job_ids"][0])
        assert failed["status"] == "failed" and failed["error"], failed
        listed = client.get("/jobs").json()["jobs"]
        assert "org/closed" in next(j for j in listed if j["id"] == failed["id"])["error"]
        for text in (client.get(f"/jobs/{failed['id']}").text, client.get("/jobs").text):
            assert HF_SECRET not in text
    for path in service.prefect_home.rglob("*"):
        if path.is_file():
            assert HF_SECRET.encode() not in path.read_bytes(), f"token found in {path}"
    assert HF_SECRET not in (service.prefect_home.parent / "service.log").read_text()


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "fragment"),
    [
        ("post", "/models/download", {"models": []}, 422, "models"),
        ("post", "/models/download", {"model": "x"}, 422, "models"),
        ("post", "/models/download", {"models": [{"name": "", "hub": "huggingface"}]}, 422, "name"),
        (
            "post",
            "/models/download",
            {"models": [{"name": "a/b", "hub": "nohub"}]},
            400,
            "supports geti, huggingface",
        ),
        (
            "post",
            "/models/download",
            {"models": [{"name": "../etc", "hub": "huggingface"}]},
            400,
            "'..'",
        ),
        (
            "post",
            "/models/download?download_path=../../tmp",
            {"models": [{"name": "a/b", "hub": "huggingface"}]},
            400,
            "inside the store",
        ),
        (
            "post",
            "/models/download?download_path=/abs",
            {"models": [{"name": "a/b", "hub": "huggingface"}]},
            400,
            "absolute path",
        ),
        (
            "post",
            "/models/download",
            {"models": [{"name": "a/b", "hub": "openvino", "config": {"precision": "int3"}}]},
            422,
            "precision",
        ),
        (
            "post",
            "/models/download",
            {"models": [{"name": "a/b", "hub": "openvino", "type": "vision", "is_ovms": True}]},
            400,
            "is_ovms prepares",
        ),
        ("get", "/jobs/00000000-0000-0000-0000-000000000000", None, 404, "not found"),
        ("get", "/jobs/not-a-uuid", None, 422, "job_id"),
        ("post", "/jobs/00000000-0000-0000-0000-000000000000/cancel", None, 404, "not found"),
        ("get", "/models/huggingface:org/none", None, 404, "no stored model"),
        ("delete", "/models/huggingface:org/none", None, 404, "not in the store"),
        ("get", "/models/nohub", None, 400, "has no hub"),
    ],
)
def test_bad_input_gets_its_status(
    service: Service, method: str, path: str, body: dict | None, code: int, fragment: str
) -> None:
    with service.client() as client:
        response = client.request(method, path, json=body)
    assert response.status_code == code, response.text
    assert fragment in response.text


def test_a_prefect_server_that_is_down_gives_503(service: Service) -> None:
    port = free_port()
    env = {**service.env, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    api = start_api(env, port)
    base, headers = f"http://127.0.0.1:{port}/api/v1", {"X-API-Key": API_KEY}
    try:
        listed = httpx.get(f"{base}/jobs", headers=headers, timeout=60)
        posted = httpx.post(
            f"{base}/models/download",
            json={"models": [{"name": "org/never-stored", "hub": "huggingface"}]},
            headers=headers,
            timeout=60,
        )
    finally:
        api.terminate()
        api.wait(timeout=20)
    for response in (listed, posted):
        assert response.status_code == 503, response.text
        assert "Prefect server is unreachable" in response.text
