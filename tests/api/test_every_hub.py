"""Every hub through the REST API: one v1 request mixing them, run in parallel by the service.

Each hub is a real server on loopback (a Hugging Face-protocol hub, Debian's OCI registry for
Ollama, a Geti REST server, release assets for Ultralytics); the service's flow runs reach them
through the environment the fixtures set, as a deployment's workers would through theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from model_download.store.manifest import read_manifest
from tests.api.service import Service, run_service
from tests.flows.test_mixed_hubs import _tiny_ir
from tests.plugins.test_geti import geti, ir  # noqa: F401  (fixtures)
from tests.plugins.test_ollama import proxy, push, registry  # noqa: F401  (fixtures)
from tests.plugins.test_ultralytics import IMGSZ, assets, base_url, dataset, weights  # noqa: F401
from tests.servers.hf_hub import FakeHub

pytest.importorskip("openvino")


@pytest.fixture
def service(
    tmp_path: Path,
    hub: FakeHub,
    geti,  # noqa: F811
    registry,  # noqa: F811
    proxy,  # noqa: F811
    base_url: str,  # noqa: F811
    dataset: Path,  # noqa: F811
) -> Iterator[Service]:
    hub.commit("tiny/plain", {"config.json": b"{}", "model.safetensors": b"\0" * 4096})
    hub.commit("OpenVINO/tiny-ir-ov", _tiny_ir(tmp_path))
    push(registry)
    with run_service(
        tmp_path,
        hub,
        MODEL_DOWNLOAD_ULTRALYTICS_BASE_URL=base_url,
        MODEL_DOWNLOAD_ULTRALYTICS_IMGSZ=str(IMGSZ),
        MODEL_DOWNLOAD_DATASETS_DIR=str(dataset.parent),  # config.quantize names a dataset here
    ) as running:
        yield running


def test_one_parallel_request_of_every_hub_completes(service: Service, dataset: Path) -> None:  # noqa: F811
    models = [
        {"name": "tiny/plain", "hub": "huggingface"},
        # Published in IR at its own precision: validated on the device, not converted.
        {"name": "tiny-ir-ov", "hub": "openvino", "config": {"device": "CPU"}},
        {"name": "tiny:latest", "hub": "ollama"},
        {
            "name": "yolov8n",
            "hub": "ultralytics",
            "type": "vision",
            "config": {"precision": "int8", "device": "CPU", "quantize": dataset.stem},
        },
        {
            "name": "card-detection",
            "hub": "geti",
            "config": {"precision": "fp16", "device": "CPU", "geti": {"model_group_id": "ATSS"}},
        },
    ]
    with service.client() as client:
        answer = client.post(
            "/models/download", json={"models": models, "parallel_downloads": True}
        )
        assert answer.status_code == 200, answer.text
        jobs = [service.wait_job(job_id, timeout=400) for job_id in answer.json()["job_ids"]]
        stored = client.get("/models").json()["models"]
        # Each job is found by the name the request gave, whatever the spec made of it.
        by_name = {
            model["name"]: client.get("/models/jobs", params={"model_name": model["name"]}).json()[
                "jobs"
            ]
            for model in models
        }
        results = {r["job_id"]: r for r in client.get("/models/results").json()["results"]}

    assert [job["status"] for job in jobs] == ["completed"] * 5, [job["error"] for job in jobs]
    assert [job["hub"] for job in jobs] == [
        "huggingface",
        "openvino",
        "ollama",
        "ultralytics",
        "geti",
    ]
    for model, job in zip(models, jobs, strict=True):
        assert [j["id"] for j in by_name[model["name"]]] == [job["id"]], model["name"]
        assert by_name[model["name"]][0]["hub"] == model["hub"]
        assert results[job["id"]]["hub"] == model["hub"]
        assert results[job["id"]]["model_name"] == model["name"]
    results = [job["result"] for job in jobs]
    assert [r.get("validated") for r in results] == [None, True, None, True, True]
    assert all(Path(r["stored"]).is_dir() for r in results)
    # In parallel: every run started before the slowest one (the int8 export) had finished.
    assert max(job["started_at"] for job in jobs) < jobs[3]["finished_at"]

    # Ultralytics' int8 was calibrated on the dataset config.quantize named.
    converted = read_manifest(Path(results[3]["converted"]))
    assert converted.extra["conversion"]["calibration_data"] == str(dataset)
    # Ollama's model is in Ollama's layout; Geti's export is the FP16 IR, validated as published.
    assert list((Path(results[2]["stored"]) / "manifests").rglob("latest"))
    geti_files = read_manifest(Path(results[4]["stored"])).files
    assert sorted(f.path for f in geti_files) == ["openvino.bin", "openvino.xml"]
    assert {m["hub"] for m in stored} >= {
        "huggingface",
        "openvino",
        "ollama",
        "ultralytics",
        "geti",
    }
