"""What the loopback Geti server holds, and how Geti's REST API (2.x) shows it.

The JSON views follow the resource service's REST views (model_rest_views.py): a model group
lists its models' summaries, a model's details list its optimized models.
"""

from __future__ import annotations

import io
import secrets
import zipfile
from dataclasses import dataclass, field

TOKEN = "geti_pat_loopback_0123456789"


def new_id() -> str:
    """An id shaped like Geti's (a MongoDB ObjectId: 24 hex digits)."""
    return secrets.token_hex(12)


@dataclass
class Optimized:
    id: str
    model_format: str  # "OpenVINO" or "ONNX"
    precision: str  # "FP32", "FP16", "INT8"
    files: dict[str, bytes]
    code: dict[str, bytes]
    has_xai_head: bool = False
    export: bytes | None = None  # served as is instead of the zip of ``files`` (a hostile one)


@dataclass
class Model:
    id: str
    version: int
    files: dict[str, bytes]
    optimized: list[Optimized] = field(default_factory=list)
    purged: bool = False
    export: bytes | None = None


@dataclass
class Group:
    id: str
    name: str
    template: str
    task_id: str
    models: list[Model] = field(default_factory=list)


@dataclass
class Project:
    id: str
    name: str
    groups: list[Group] = field(default_factory=list)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int
    sent_key: bool  # an x-api-key header came, valid or not

    @property
    def is_export(self) -> bool:
        return self.path.endswith("/export")


def zip_files(files: dict[str, bytes], *, compress: bool = False) -> bytes:
    """Files zipped as Geti zips them: fixed 1980 dates, so each request gives the same bytes."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def exportable_code(model_xml: bytes, model_bin: bytes) -> dict[str, bytes]:
    """The files of Geti's exportable code zip (OpenVINO models, ``model_only=false``)."""
    return {
        "README.md": b"# Exportable code\n",
        "LICENSE": b"Apache-2.0\n",
        "model/model.xml": model_xml,
        "model/model.bin": model_bin,
        "model/config.json": b'{"model_parameters": {"labels": []}}',
        "python/demo.py": b"print('demo')\n",
        "python/requirements.txt": b"openvino\nopenvino-model-api\n",
        "python/setup.py": b"from setuptools import setup\nsetup()\n",
    }


def project_json(project: Project) -> dict[str, object]:
    tasks = [{"id": new_id(), "title": "Dataset", "task_type": "dataset"}]
    tasks += [{"id": g.task_id, "title": g.name, "task_type": "detection"} for g in project.groups]
    return {
        "id": project.id,
        "name": project.name,
        "creation_time": "2025-01-01T00:00:00+00:00",
        "pipeline": {"tasks": tasks, "connections": []},
        "datasets": [{"id": new_id(), "name": "Dataset", "use_for_training": True}],
    }


def group_json(group: Group) -> dict[str, object]:
    latest = max((m.version for m in group.models), default=0)
    return {
        "id": group.id,
        "name": group.name,
        "model_template_id": group.template,
        "task_id": group.task_id,
        "learning_approach": "fully_supervised",
        "models": [
            {**model_json(m, group), "active_model": m.version == latest} for m in group.models
        ],
    }


def model_json(model: Model, group: Group) -> dict[str, object]:
    return {
        "id": model.id,
        "name": group.name,
        "version": model.version,
        "creation_date": f"2025-01-{model.version:02d}T00:00:00+00:00",
        "size": sum(len(v) for v in model.files.values()),
        "score_up_to_date": True,
        "purge_info": {"is_purged": model.purged, "purge_time": None, "user_uid": None},
        "lifecycle_stage": "active",
    }


def optimized_json(optimized: Optimized, group: Group) -> dict[str, object]:
    xai = " with XAI head" if optimized.has_xai_head else ""
    return {
        "id": optimized.id,
        "name": f"{group.name} {optimized.model_format} {optimized.precision}{xai}",
        "version": 1,
        "creation_date": "2025-01-01T00:00:00+00:00",
        "model_format": optimized.model_format,
        "precision": [optimized.precision],
        "has_xai_head": optimized.has_xai_head,
        "target_device": "CPU",
        "target_device_type": None,
        "size": sum(len(v) for v in optimized.files.values()),
        "optimization_type": "POT" if optimized.precision == "INT8" else "MO",
        "optimization_objectives": {},
        "model_status": "SUCCESS",
        "configurations": [],
        "lifecycle_stage": "active",
    }
