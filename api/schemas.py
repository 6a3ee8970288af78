"""Request and response bodies of the v1 API (the reference Model Download service's names)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

#: Hubs the v1 API names; whether each can run here is the plugin registry's answer.
Hub = Literal[
    "huggingface", "ultralytics", "pipeline-zoo-models", "ollama", "openvino", "geti", "hls"
]
ModelType = Literal[
    "llm",
    "vlm",
    "embeddings",
    "rerank",
    "image_generation",
    "text2speech",
    "speech2text",
    "vision",
    "3d-pose",
    "rppg",
    "ai-ecg",
]
JobStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]
# Every request body refuses a field it does not define (422), so a typo is never dropped.
_STRICT = ConfigDict(extra="forbid")


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


Device = Annotated[Literal["CPU", "GPU", "NPU", "AUTO"], BeforeValidator(_upper)]
Precision = Annotated[Literal["int4", "int8", "fp16", "fp32"], BeforeValidator(_lower)]


class OpenVINOConfig(BaseModel):
    """Export and serving options: the reference's ``openvino_config``, and ours.

    ``precision``, ``device`` and ``cache_size`` here override the same fields of ``config``.
    The serving options shape the OpenVINO Model Server graph (``is_ovms``).
    """

    model_config = _STRICT

    precision: Precision | None = Field(None, description="Overrides config.precision.")
    device: Device | None = Field(None, description="Overrides config.device.")
    cache_size: int | None = Field(None, gt=0, description="Overrides config.cache_size.")
    task: str | None = Field(None, description="Export task, when type does not say it.")
    group_size: int | None = Field(None, description="int4: weights per scale (-1 per row).")
    ratio: float | None = Field(None, description="int4: share of layers in int4.")
    sym: bool | None = Field(None, description="int8/int4: symmetric quantization.")
    trust_remote_code: bool = Field(False, description="Allow the model's own Python code.")
    extra_quantization_params: str | None = Field(
        None, description="Compression flags: '--sym', '--group-size N', '--ratio R'."
    )
    # OpenVINO Model Server graph options (is_ovms).
    enable_prefix_caching: bool | None = Field(None, description="llm: reuse prompt KV cache.")
    max_num_seqs: int | None = Field(None, gt=0, description="llm: sequences served at once.")
    max_num_batched_tokens: int | None = Field(None, gt=0, description="llm: tokens per step.")
    dynamic_split_fuse: bool | None = Field(None, description="llm: split long prompts.")
    kv_cache_precision: Literal["u8"] | None = Field(None, description="llm: KV cache in u8.")
    num_streams: int | None = Field(None, gt=0, description="Parallel inference streams.")
    normalize: bool | None = Field(None, description="embeddings: L2-normalize the vectors.")
    overwrite_models: bool | None = Field(
        None, description="A servable always replaces the earlier one of its name (true only)."
    )
    # Defined by the reference; refused here with the reason (see api.request_options).
    ov_cache_dir: str | None = None
    pipeline_type: str | None = None
    draft_source_model: str | None = None
    max_prompt_len: int | None = None
    prompt_lookup_decoding: bool | None = None
    pooling: str | None = None
    truncate: bool | None = None
    max_doc_length: int | None = None


class GetiConfig(BaseModel):
    """Which model of a Geti project: the reference's ``config.geti``."""

    model_config = _STRICT

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

    model_config = _STRICT

    precision: Precision | None = None
    device: Device | None = None
    cache_size: int | None = Field(None, ge=1, description="KV cache size in GB (LLM serving).")
    quantize: str | None = Field(
        None,
        description="int8 calibration dataset (ultralytics): a name of the service's datasets "
        "folder (NAME.yaml, or NAME/ for -cls models); nothing is downloaded.",
    )
    geti: GetiConfig | None = None
    # The reference's Geti fields, flat in config: the same as config.geti.
    model_group_id: str | None = Field(None, min_length=1, description="Geti: as config.geti.")
    export_type: Literal["base", "optimized"] | None = Field(
        None, description="Geti: as config.geti."
    )
    optimized_model_id: str | None = Field(None, description="Geti: as config.geti.")
    model_only: bool | None = Field(None, description="Geti: as config.geti.")
    openvino_config: OpenVINOConfig | None = None


class ModelRequest(BaseModel):
    """One model of a download request."""

    model_config = _STRICT

    name: str = Field(min_length=1, description="Model name or id on the hub, e.g. org/name.")
    # A string with the v1 hubs as its enum: an unknown hub is a 400 naming the ones served.
    hub: Annotated[str, BeforeValidator(_lower)] = Field(
        description="The hub; the ones this service runs are listed by GET /plugins.",
        json_schema_extra={"enum": list(get_args(Hub))},
    )
    type: ModelType | None = Field(None, description="What the model does; picks the task.")
    is_ovms: bool = Field(False, description="Prepare the model for OpenVINO Model Server.")
    revision: str | None = Field(None, description="Branch, tag or commit.")
    config: ModelConfig | None = None


class ModelDownloadRequest(BaseModel):
    """Models to download (and convert), as one request."""

    model_config = _STRICT

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
    """A job: one model of a request, as its Prefect flow run tells it.

    ``operation_type``, ``start_time`` and ``completion_time`` are the reference's names.
    """

    id: str
    model_name: str | None = Field(None, description="The name as the request gave it.")
    hub: str | None = Field(None, description="The hub as the request gave it.")
    operation_type: Literal["download", "convert"] = "download"
    status: JobStatus
    stage: str | None = None
    progress: Progress = Field(default_factory=Progress)
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    start_time: datetime | None = Field(None, description="When the job was made.")
    completion_time: datetime | None = Field(None, description="When it ended.")


class JobsResponse(BaseModel):
    jobs: list[JobPublic]
    total: int


class ResultPublic(BaseModel):
    """A completed job, in the reference's words."""

    job_id: str
    model_name: str | None
    hub: str | None
    operation_type: Literal["download", "convert"]
    status: Literal["success"] = "success"
    model_path: str | None = Field(description="The servable, export, conversion or download.")
    is_ovms: bool
    completion_time: datetime | None


class ResultsResponse(BaseModel):
    results: list[ResultPublic]
    total: int


class PluginCapabilities(BaseModel):
    supports_parallel_downloads: bool = Field(
        description="Models of one request can download at once (parallel_downloads)."
    )
    supports_search: bool = Field(False, description="POST /models/list lists its models.")


class PluginPublic(BaseModel):
    """A plugin as the reference describes one, with ``reason`` kept as our older name."""

    name: str
    type: Literal["downloader", "converter"]
    description: str = ""
    capabilities: PluginCapabilities
    available: bool
    unavailable_reason: str | None = None
    reason: str | None = Field(None, description="The same as unavailable_reason.")


class PluginsResponse(BaseModel):
    available_plugins: dict[str, list[PluginPublic]] = Field(
        description="Every plugin by type (downloader, converter), available or not."
    )
    total_count: int
    available_count: int
    activation_instructions: str


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
