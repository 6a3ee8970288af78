"""OpenVINO Model Server servables: an IR folder plus the graph and config the server reads.

A servable repository is a folder with ``config.json`` (the servables it holds) and one folder
per servable: the IR files (links into the store) and a ``graph.pbtxt`` that tells the server
to serve it for text generation (chat and completions) or embeddings. Point the server at it
with ``ovms --config_path <repository>/config.json``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from pydantic import BaseModel, Field

from model_download.errors import InvalidReferenceError
from model_download.refs import check_relative_path
from model_download.store.lock import StoreLock
from model_download.store.store import StoredModel

#: The default folder of the servable repository, under the store root.
REPOSITORY = "ovms"
_KINDS = {
    "text-generation-with-past": "text_generation",
    "text-generation": "text_generation",
    "feature-extraction": "embeddings",
}

_TEXT_GENERATION = """\
input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"

node: {{
  name: "LLMExecutor"
  calculator: "HttpLLMCalculator"
  input_stream: "LOOPBACK:loopback"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  input_side_packet: "LLM_NODE_RESOURCES:llm"
  output_stream: "LOOPBACK:loopback"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
  input_stream_info: {{ tag_index: 'LOOPBACK:0', back_edge: true }}
  node_options: {{
    [type.googleapis.com / mediapipe.LLMCalculatorOptions]: {{
      models_path: "./",
      plugin_config: '{plugin_config}',
      enable_prefix_caching: {enable_prefix_caching},
      cache_size: {cache_size},
      max_num_seqs: {max_num_seqs},{extra}
      device: "{device}",
    }}
  }}
  input_stream_handler {{
    input_stream_handler: "SyncSetInputStreamHandler",
    options {{
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] {{
        sync_set {{ tag_index: "LOOPBACK:0" }}
      }}
    }}
  }}
}}
"""

_EMBEDDINGS = """\
input_stream: "REQUEST_PAYLOAD:input"
output_stream: "RESPONSE_PAYLOAD:output"

node {{
  name: "EmbeddingsExecutor"
  calculator: "EmbeddingsCalculatorOV"
  input_side_packet: "EMBEDDINGS_NODE_RESOURCES:embeddings_servable"
  input_stream: "REQUEST_PAYLOAD:input"
  output_stream: "RESPONSE_PAYLOAD:output"
  node_options: {{
    [type.googleapis.com / mediapipe.EmbeddingsCalculatorOVOptions]: {{
      models_path: "./",
      normalize_embeddings: {normalize},{extra}
      target_device: "{device}",
    }}
  }}
}}
"""


class ServableOptions(BaseModel):
    """How to serve a model with OpenVINO Model Server, and the graph options it is served with."""

    name: str = Field(min_length=1, description="Servable name clients ask for, e.g. org/name.")
    cache_size: int = Field(10, ge=1, description="KV cache for text generation, in GB.")
    repository: str = Field(REPOSITORY, description="Repository folder, relative to the store.")
    task: str | None = Field(
        None,
        description="What it serves when the model records no conversion task (IR as "
        "published): text-generation-with-past or feature-extraction.",
    )
    enable_prefix_caching: bool = Field(False, description="Text generation: reuse prompts.")
    max_num_seqs: int = Field(256, ge=1, description="Text generation: sequences at once.")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="Tokens per step.")
    dynamic_split_fuse: bool | None = Field(None, description="Split long prompts.")
    kv_cache_precision: str | None = Field(None, description="KV cache precision, e.g. u8.")
    num_streams: int | None = Field(None, ge=1, description="Embeddings: inference streams.")
    normalize: bool = Field(True, description="Embeddings: L2-normalize the vectors.")


def graph(task: str, device: str, cache_size: int, options: ServableOptions | None = None) -> str:
    """The ``graph.pbtxt`` that serves a model of ``task`` on ``device``."""
    kind = _KINDS.get(task)
    if kind is None:
        raise InvalidReferenceError(
            f"OpenVINO Model Server servables are made for text generation (type llm) and "
            f"embeddings (type embeddings), not for task {task!r}."
        )
    opts = options or ServableOptions(name="-", cache_size=cache_size)
    plugin_config: dict[str, str] = {}
    if kind == "embeddings":
        streams = ""
        if opts.num_streams is not None:
            config = json.dumps({"NUM_STREAMS": str(opts.num_streams)})
            streams = f"\n      plugin_config: '{config}',"
        return _EMBEDDINGS.format(device=device, normalize=_bool(opts.normalize), extra=streams)
    if opts.kv_cache_precision:
        plugin_config["KV_CACHE_PRECISION"] = opts.kv_cache_precision
    extra = ""
    if opts.max_num_batched_tokens is not None:
        extra += f"\n      max_num_batched_tokens: {opts.max_num_batched_tokens},"
    if opts.dynamic_split_fuse is not None:
        extra += f"\n      dynamic_split_fuse: {_bool(opts.dynamic_split_fuse)},"
    return _TEXT_GENERATION.format(
        cache_size=cache_size,
        device=device,
        plugin_config=json.dumps(plugin_config),
        enable_prefix_caching=_bool(opts.enable_prefix_caching),
        max_num_seqs=opts.max_num_seqs,
        extra=extra,
    )


def _bool(value: bool) -> str:
    return "true" if value else "false"


def write_servable(
    converted: StoredModel, options: ServableOptions, device: str, store_root: Path
) -> Path:
    """Lay out ``converted`` as a servable and list it in the repository's ``config.json``.

    The servable folder appears whole (built aside, then renamed into place) and replaces an
    earlier one of the same name.
    """
    # A model published in IR records no conversion: the request's type says what it serves.
    task = converted.manifest.extra.get("conversion", {}).get("task") or options.task or ""
    text = graph(task, device, options.cache_size, options)
    repository = store_root / check_relative_path(options.repository, "repository")
    name = check_relative_path(options.name, "servable name")
    target = repository / name

    staging = repository / ".staging" / uuid.uuid4().hex
    for file in converted.manifest.files:
        dest = staging / file.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(converted.path / file.path, dest)
    (staging / "graph.pbtxt").write_text(text)

    with StoreLock(repository / ".config.lock"):
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            aside = repository / ".staging" / f"old-{uuid.uuid4().hex}"
            os.rename(target, aside)
            _remove_tree(aside)
        os.rename(staging, target)
        _add_to_config(repository / "config.json", name)
    return target


def _add_to_config(config: Path, name: str) -> None:
    data = json.loads(config.read_text()) if config.exists() else {}
    servables = [s for s in data.get("mediapipe_config_list", []) if s.get("name") != name]
    servables.append({"name": name, "base_path": name})
    data["mediapipe_config_list"] = sorted(servables, key=lambda s: s["name"])
    data.setdefault("model_config_list", [])
    tmp = config.with_name(f".config.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, config)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
