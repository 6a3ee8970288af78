"""Request and response bodies of the v1 API (the reference Model Download service's names)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Hubs the v1 API names; whether each can run here is the plugin registry's answer.
Hub = Literal[
    "huggingface", "ultralytics", "pipeline-zoo-models", "ollama", "openvino", "geti", "hls"
]
ModelType = Literal[
    "llm", "vlm", "embeddings", "rerank", "image_generation", "text2speech", "speech2text", "vision"
]
JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]


class OpenVINOConfig(BaseModel):
    """Export options of the reference's ``openvino_config``."""

    model_config = ConfigDict(extra="allow")

    task: str | None = None
    group_size: int | None = None
    ratio: float | None = None
    sym: bool | None = None
    trust_remote_code: bool = False


class GetiConfig(BaseModel):
    """Which model of a Geti project: the reference's ``config.geti``."""

    model_group_id: str = Field(min_length=1, description="Model group: its id or name.")
    export_type: Literal["base", "optimized"] = Field(
        "optimized", description="The training framework's weights, or an optimized model."
    )
    optimized_model_id: str | None = Field(
        None, description="Exactly this optimized model (else the one at config.precision)."
    )
    model_only: bool = Field(True, description="The model alone, not Geti's deployable code.")


class ModelConfig(BaseModel):
    """How a model should be prepared: precision and device, and hub-specific options."""

    model_config = ConfigDict(extra="allow")

    precision: Literal["int4", "int8", "fp16", "fp32"] | None = None
    device: Literal["CPU", "GPU", "NPU"] | None = None
    cache_size: int | None = Field(None, ge=1, description="KV cache size in GB (LLM serving).")
    quantize: str | None = Field(
        None,
        description="int8 calibration dataset (ultralytics): a name of the service's datasets "
        "folder (NAME.yaml, or NAME/ for -cls models); nothing is downloaded.",
    )
    geti: GetiConfig | None = None
    openvino_config: OpenVINOConfig | None = None


class ModelRequest(BaseModel):
    """One model of a download request."""

    name: str = Field(min_length=1, description="Model name or id on the hub, e.g. org/name.")
    hub: str = Field(description="huggingface, ollama, ultralytics, openvino or geti.")
    type: ModelType | None = Field(None, description="What the model does; picks the task.")
    is_ovms: bool = Field(False, description="Prepare the model for OpenVINO Model Server.")
    revision: str | None = Field(None, description="Branch, tag or commit.")
    config: ModelConfig | None = None


class ModelDownloadRequest(BaseModel):
    """Models to download (and convert), as one request."""

    models: list[ModelRequest] = Field(min_length=1)
    parallel_downloads: bool = Field(False, description="Run the models at once, not in turn.")


class DownloadResponse(BaseModel):
    message: str
    job_ids: list[str]
    status: Literal["processing", "completed"]


class Progress(BaseModel):
    percent: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None


class JobPublic(BaseModel):
    """A job: one model of a request, as its Prefect flow run tells it."""

    id: str
    model_name: str | None = None
    hub: str | None = None
    status: JobStatus
    stage: str | None = None
    progress: Progress = Field(default_factory=Progress)
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobsResponse(BaseModel):
    jobs: list[JobPublic]
    total: int


class PluginPublic(BaseModel):
    name: str
    available: bool
    reason: str | None = None
    description: str = ""


class PluginsResponse(BaseModel):
    available_plugins: dict[str, list[str]]
    plugins: dict[str, list[PluginPublic]]
    total_count: int
    available_count: int


class FilePublic(BaseModel):
    path: str
    size: int
    sha256: str


class ModelPublic(BaseModel):
    """A stored model and its manifest."""

    id: str = Field(description="hub:id@revision, as the CLI writes it.")
    hub: str
    name: str
    revision: str
    path: str
    format: str | None = None
    size: int
    created_at: datetime
    files: list[FilePublic] | None = None
    extra: dict[str, Any] | None = None


class ModelsResponse(BaseModel):
    models: list[ModelPublic]
    total: int


class ErrorResponse(BaseModel):
    detail: str


class ListRequest(BaseModel):
    """A search of what a hub offers, one page at a time."""

    hub: str = Field(description="huggingface, openvino, ollama, ...")
    search: str | None = Field(None, description="Words the model id contains.")
    author: str | None = Field(None, description="Only models of this user or organisation.")
    tags: list[str] = Field(default_factory=list, description="Only models with these tags.")
    page: int = Field(1, ge=1)
    page_size: int = Field(20, ge=1, le=500)
