"""The tiny models must be what the real converter accepts, or tests built on them prove nothing.

Everything runs in-process with the installed tools: transformers loads the folders back, optimum
exports them to OpenVINO IR (model and tokenizer), and OpenVINO compiles and runs the results.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.models.tiny import (
    SENTENCES,
    build_tiny_bert,
    build_tiny_gpt2,
    build_tiny_onnx,
    repo_files,
)

SENTENCE = SENTENCES[0]
# Words the tokenizers never saw in training still have to come out the same from both runtimes.
UNSEEN = "Zebras quietly vex 42 jovial wizards!"


@pytest.fixture(scope="module", autouse=True)
def _no_telemetry() -> Iterator[None]:
    # OpenVINO's and NNCF's telemetry ignore DO_NOT_TRACK and try to reach Google Analytics on
    # import and on every conversion; both stand down when CI is set. Module scope, because the
    # exports below run in module fixtures, before any function-scoped fixture.
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CI", "true")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@dataclass
class Export:
    source: Path
    output: Path
    seconds: float


def export(source: Path, output: Path, task: str) -> Export:
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    start = time.perf_counter()
    main_export(
        model_name_or_path=str(source),
        output=str(output),
        task=task,
        convert_tokenizer=True,
        ov_config=OVConfig(dtype="fp32"),
    )
    seconds = time.perf_counter() - start
    print(f"main_export {source.name} task={task}: {seconds:.2f} s")
    return Export(source, output, seconds)


@pytest.fixture(scope="module")
def bert_ir(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    return export(bert_dir, tmp_path_factory.mktemp("bert-ov"), "feature-extraction")


@pytest.fixture(scope="module")
def gpt2_ir(gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Export:
    return export(gpt2_dir, tmp_path_factory.mktemp("gpt2-ov"), "text-generation-with-past")


def inputs_of(xml: Path) -> dict[str, tuple[str, str]]:
    import openvino as ov

    model = ov.Core().read_model(xml)
    return {
        p.any_name: (p.element_type.get_type_name(), str(p.partial_shape)) for p in model.inputs
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the Hugging Face folders ----------------------------------------------------------------------


def test_bert_folder_loads_with_transformers(bert_dir: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    assert set(repo_files(bert_dir)) == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert json.loads((bert_dir / "config.json").read_text())["architectures"] == ["BertModel"]
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    assert set(tokenizer.all_special_tokens) == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    encoded = tokenizer(SENTENCE, return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[UNK]" not in tokens
    assert tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=True) == SENTENCE.lower()
    assert "[UNK]" not in tokenizer.tokenize(UNSEEN)

    model = AutoModel.from_pretrained(bert_dir)
    assert type(model).__name__ == "BertModel"
    with torch.no_grad():
        hidden = model(**encoded).last_hidden_state
    assert hidden.shape == (1, len(tokens), 32)


def test_gpt2_folder_loads_with_transformers(gpt2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert set(repo_files(gpt2_dir)) == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    tokenizer = AutoTokenizer.from_pretrained(gpt2_dir)
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"
    for text in (SENTENCE, UNSEEN):
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text

    model = AutoModelForCausalLM.from_pretrained(gpt2_dir)
    assert type(model).__name__ == "GPT2LMHeadModel"
    encoded = tokenizer(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**encoded, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, encoded["input_ids"].shape[1] + 4)


# -- conversion to OpenVINO IR ---------------------------------------------------------------------


def test_bert_exports_to_openvino(bert_ir: Export) -> None:
    import openvino as ov

    assert sorted(p.name for p in bert_ir.output.iterdir()) == [
        "config.json",
        "openvino_detokenizer.bin",
        "openvino_detokenizer.xml",
        "openvino_model.bin",
        "openvino_model.xml",
        "openvino_tokenizer.bin",
        "openvino_tokenizer.xml",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert inputs_of(bert_ir.output / "openvino_model.xml") == {
        "input_ids": ("i64", "[?,?]"),
        "attention_mask": ("i64", "[?,?]"),
        "token_type_ids": ("i64", "[?,?]"),
    }
    model = ov.Core().read_model(bert_ir.output / "openvino_model.xml")
    assert not model.get_sinks()
    assert [o.any_name for o in model.outputs] == ["last_hidden_state"]


def test_gpt2_exports_to_a_stateful_openvino_model(gpt2_ir: Export) -> None:
    import openvino as ov

    assert sorted(p.name for p in gpt2_ir.output.iterdir()) == [
        "config.json",
        "generation_config.json",
        "openvino_detokenizer.bin",
        "openvino_detokenizer.xml",
        "openvino_model.bin",
        "openvino_model.xml",
        "openvino_tokenizer.bin",
        "openvino_tokenizer.xml",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    # Stateful: the KV cache lives in OpenVINO variables, reordered between beams by beam_idx.
    assert inputs_of(gpt2_ir.output / "openvino_model.xml") == {
        "input_ids": ("i64", "[?,?]"),
        "attention_mask": ("i64", "[?,?]"),
        "position_ids": ("i64", "[?,?]"),
        "beam_idx": ("i32", "[?]"),
    }
    model = ov.Core().read_model(gpt2_ir.output / "openvino_model.xml")
    assert len(model.get_variables()) == 4  # a key and a value for each of the 2 layers
    assert [o.any_name for o in model.outputs] == ["logits"]


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_tokenizer_ir_matches_transformers(which: str, request: pytest.FixtureRequest) -> None:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations with OpenVINO)
    from transformers import AutoTokenizer

    exported: Export = request.getfixturevalue(f"{which}_ir")
    reference = AutoTokenizer.from_pretrained(exported.source)
    core = ov.Core()
    tokenize = core.compile_model(exported.output / "openvino_tokenizer.xml", "CPU")
    detokenize = core.compile_model(exported.output / "openvino_detokenizer.xml", "CPU")
    for text in (SENTENCE, UNSEEN):
        expected = reference(text)
        got = tokenize([text])
        for name, ids in expected.items():
            assert got[name].tolist() == [ids], name
        decoded = detokenize(np.array([expected["input_ids"]]))["string_output"].tolist()
        assert decoded == [reference.decode(expected["input_ids"], skip_special_tokens=True)]


def test_task_comes_from_the_architecture_not_from_auto(
    bert_dir: Path, gpt2_dir: Path, tmp_path: Path
) -> None:
    """optimum's task="auto" asks the hub and refuses a local folder, so the caller must name it."""
    import transformers
    from optimum.exporters.tasks import TasksManager

    for folder, task in ((bert_dir, "feature-extraction"), (gpt2_dir, "text-generation")):
        with pytest.raises(RuntimeError, match="Cannot infer the task from a local directory"):
            export(folder, tmp_path / folder.name, "auto")
        (architecture,) = json.loads((folder / "config.json").read_text())["architectures"]
        model_class = getattr(transformers, architecture)
        assert TasksManager.infer_task_from_model(model_class) == task


# -- ONNX ------------------------------------------------------------------------------------------


def test_onnx_model_compiles_and_infers(tmp_path: Path) -> None:
    import onnx
    import openvino as ov
    from onnx import numpy_helper

    path = build_tiny_onnx(tmp_path)
    assert path == tmp_path / "model.onnx"
    assert repo_files(tmp_path) == {"model.onnx": path}
    model = ov.Core().read_model(path)
    assert [
        (p.any_name, p.element_type.get_type_name(), str(p.partial_shape)) for p in model.inputs
    ] == [("x", "f32", "[?,16]")]
    assert [(p.any_name, str(p.partial_shape)) for p in model.outputs] == [("y", "[?,8]")]
    # Exact f32: a CPU with native bf16 would otherwise round the matmul to bf16.
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(7).standard_normal((5, 16), dtype=np.float32)
    y = compiled(x)[0]

    weight, bias = (numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer)
    np.testing.assert_allclose(y, np.maximum(x @ weight + bias, 0), rtol=1e-5, atol=1e-5)


# -- determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "weights"),
    [
        (build_tiny_bert, "model.safetensors"),
        (build_tiny_gpt2, "model.safetensors"),
        (build_tiny_onnx, "model.onnx"),
    ],
    ids=["bert", "gpt2", "onnx"],
)
def test_seed_fixes_every_byte(build, weights: str, tmp_path: Path) -> None:
    digests = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        build(tmp_path / name, seed=seed)
        digests[name] = {path: sha256(file) for path, file in repo_files(tmp_path / name).items()}
    assert digests["a"] == digests["b"]
    assert digests["a"][weights] != digests["c"][weights]
    # Only the weights depend on the seed: the tokenizer and config stay the same.
    assert {k: v for k, v in digests["a"].items() if k != weights} == {
        k: v for k, v in digests["c"].items() if k != weights
    }
