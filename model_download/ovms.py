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
      plugin_config: '{{}}',
      enable_prefix_caching: false,
      cache_size: {cache_size},
      max_num_seqs: 256,
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
      normalize_embeddings: true,
      target_device: "{device}",
    }}
  }}
}}
"""


class ServableOptions(BaseModel):
    """How to serve a converted model with OpenVINO Model Server."""

    name: str = Field(min_length=1, description="Servable name clients ask for, e.g. org/name.")
    cache_size: int = Field(10, ge=1, description="KV cache for text generation, in GB.")
    repository: str = Field(REPOSITORY, description="Repository folder, relative to the store.")


def graph(task: str, device: str, cache_size: int) -> str:
    """The ``graph.pbtxt`` that serves a model of ``task`` on ``device``."""
    kind = _KINDS.get(task)
    if kind is None:
        raise InvalidReferenceError(
            f"OpenVINO Model Server servables are made for text generation (type llm) and "
            f"embeddings (type embeddings), not for task {task!r}."
        )
    if kind == "text_generation":
        return _TEXT_GENERATION.format(cache_size=cache_size, device=device)
    return _EMBEDDINGS.format(device=device)


def write_servable(
    converted: StoredModel, options: ServableOptions, device: str, store_root: Path
) -> Path:
    """Lay out ``converted`` as a servable and list it in the repository's ``config.json``.

    The servable folder appears whole (built aside, then renamed into place) and replaces an
    earlier one of the same name.
    """
    task = converted.manifest.extra.get("conversion", {}).get("task", "")
    text = graph(task, device, options.cache_size)
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
