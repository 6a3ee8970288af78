"""The service's settings, read once from the environment (and a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, ByteSize, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DATA_HOME = Path("~/.local/share/model-download").expanduser()


def _env(name: str, *aliases: str) -> AliasChoices:
    # Each setting answers to MODEL_DOWNLOAD_<NAME>, plus the names users already know from the
    # hub tools (MODELS_DIR, HF_TOKEN, ...).
    return AliasChoices(f"MODEL_DOWNLOAD_{name.upper()}", *aliases)


class Settings(BaseSettings):
    """Settings of model-download.

    Every field can be set with ``MODEL_DOWNLOAD_<FIELD>``; some also honour the variable that
    the hub's own tools read (``MODELS_DIR``, ``HF_ENDPOINT``, ``HF_TOKEN``).
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    models_dir: Path = Field(
        _DATA_HOME / "models",
        validation_alias=_env("models_dir", "MODELS_DIR"),
        description="Root of the model store.",
    )
    hf_endpoint: str = Field(
        "https://huggingface.co",
        validation_alias=_env("hf_endpoint", "HF_ENDPOINT"),
        description="Base URL of the Hugging Face hub or a mirror of it.",
    )
    hf_token: SecretStr | None = Field(
        None,
        validation_alias=_env("hf_token", "HF_TOKEN"),
        description="Hugging Face access token, for private and gated models.",
    )
    download_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        validation_alias=_env("download_concurrency"),
        description="How many models a flow downloads at once.",
    )
    file_concurrency: int = Field(
        4,
        ge=1,
        le=64,
        validation_alias=_env("file_concurrency"),
        description="How many files of one model are transferred at once.",
    )
    stall_timeout: float = Field(
        60.0,
        gt=0,
        validation_alias=_env("stall_timeout"),
        description="Seconds without a byte before a transfer is restarted.",
    )
    retries: int = Field(
        5,
        ge=0,
        le=100,
        validation_alias=_env("retries"),
        description="Attempts a file transfer gets after a failure that moved no bytes.",
    )
    fsync: bool = Field(
        True,
        validation_alias=_env("fsync"),
        description="Flush each file to disk before a model is published (survives power cuts).",
    )
    convert_concurrency: int = Field(
        1,
        ge=1,
        le=16,
        validation_alias=_env("convert_concurrency"),
        description="How many conversions a flow runs at once (they are CPU and memory heavy).",
    )
    convert_memory_limit: ByteSize | None = Field(
        None,
        validation_alias=_env("convert_memory_limit"),
        description="Memory a conversion may use, e.g. '8GB' (default: what the system has free).",
    )
    lock_stale_after: float = Field(
        60.0,
        gt=1,
        validation_alias=_env("lock_stale_after"),
        description="Seconds without a heartbeat after which a model lock counts as abandoned.",
    )
    lock_timeout: float | None = Field(
        None,
        validation_alias=_env("lock_timeout"),
        description="Longest wait for another process's download of the same model (none: wait).",
    )
    api_host: str = Field(
        "127.0.0.1", validation_alias=_env("api_host"), description="Address the REST API binds."
    )
    api_port: int = Field(
        8000, ge=1, le=65535, validation_alias=_env("api_port"), description="REST API port."
    )
    api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("api_key"),
        description="When set, every route but /health needs it (X-API-Key or Bearer).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        validation_alias=_env("cors_origins"),
        description="Origins browsers may call the API from (JSON list); none by default.",
    )
    recheck_models: list[str] = Field(
        default_factory=list,
        validation_alias=_env("recheck_models"),
        description='Models the scheduled re-check keeps current, e.g. ["hf:org/name@main"].',
    )
    recheck_cron: str = Field(
        "0 3 * * *",
        validation_alias=_env("recheck_cron"),
        description="When the re-check runs (cron, in UTC).",
    )
    ollama_registry: str = Field(
        "https://registry.ollama.ai",
        validation_alias=_env("ollama_registry"),
        description="The Ollama registry that bare names (ollama:llama3.2) come from.",
    )
    ollama_host: str | None = Field(
        None,
        validation_alias=_env("ollama_host", "OLLAMA_HOST"),
        description="An Ollama server to pull into as well, e.g. 127.0.0.1:11434.",
    )
    ollama_parallel_threshold: ByteSize = Field(
        64 << 20,
        validation_alias=_env("ollama_parallel_threshold"),
        description="Blobs larger than this are fetched as parallel byte ranges.",
    )
    ollama_parallel_parts: int = Field(
        4,
        ge=1,
        le=32,
        validation_alias=_env("ollama_parallel_parts"),
        description="How many ranges such a blob is fetched in.",
    )
    geti_host: str | None = Field(
        None,
        validation_alias=_env("geti_host", "GETI_HOST"),
        description="Base URL of the Intel Geti server, e.g. https://geti.example.com.",
    )
    geti_token: SecretStr | None = Field(
        None,
        validation_alias=_env("geti_token", "GETI_TOKEN"),
        description="Geti personal access token (sent as x-api-key; never logged).",
    )
    geti_workspace_id: str | None = Field(
        None,
        validation_alias=_env("geti_workspace_id", "GETI_WORKSPACE_ID"),
        description="Geti workspace to read (default: the organization's only one).",
    )
    geti_verify_tls: bool = Field(
        True,
        validation_alias=_env("geti_verify_tls", "GETI_VERIFY_TLS"),
        description="Check the Geti server's TLS certificate.",
    )
    geti_ca_bundle: Path | None = Field(
        None,
        validation_alias=_env("geti_ca_bundle", "GETI_CA_BUNDLE"),
        description="PEM file of the CA that signed the Geti server's certificate.",
    )
    ultralytics_base_url: str | None = Field(
        None,
        validation_alias=_env("ultralytics_base_url"),
        description="Where YOLO weights are fetched from (default: Ultralytics' releases).",
    )
    ultralytics_dataset: Path | None = Field(
        None,
        validation_alias=_env("ultralytics_dataset"),
        description="Local dataset YAML for INT8 calibration of YOLO models.",
    )
    datasets_dir: Path | None = Field(
        None,
        validation_alias=_env("datasets_dir"),
        description="Folder of named calibration datasets (NAME.yaml or NAME/), which a request "
        "names by NAME (the v1 API's config.quantize); default: MODELS_DIR/datasets.",
    )
    ultralytics_imgsz: int | None = Field(
        None,
        ge=32,
        validation_alias=_env("ultralytics_imgsz"),
        description="Image size YOLO models are exported for (default: the model's).",
    )
    prefect_host: str = Field(
        "127.0.0.1",
        validation_alias=_env("prefect_host"),
        description="Address the embedded Prefect server and its UI bind (make run).",
    )
    prefect_port: int = Field(
        4200,
        ge=1,
        le=65535,
        validation_alias=_env("prefect_port"),
        description="Port of the embedded Prefect server and its UI (make run).",
    )
    runner_poll_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        validation_alias=_env("runner_poll_seconds"),
        description="How often the runner of make run asks for new runs: a run waits for it.",
    )
    prefect_home: Path = Field(
        _DATA_HOME / "prefect",
        validation_alias=_env("prefect_home"),
        description="Where the embedded Prefect server keeps its database and results.",
    )

    @property
    def datasets(self) -> Path:
        """Where named calibration datasets are looked up."""
        return self.datasets_dir or self.models_dir / "datasets"

    @field_validator("hf_endpoint", "ollama_registry")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("geti_host", "ultralytics_base_url")
    @classmethod
    def _strip_optional_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("geti_ca_bundle", "ultralytics_dataset", "datasets_dir")
    @classmethod
    def _expand_optional(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("models_dir", "prefect_home")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("hf_token", "api_key", "geti_token")
    @classmethod
    def _empty_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
