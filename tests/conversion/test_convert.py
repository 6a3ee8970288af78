"""Download -> convert -> validate of tiny real models, served by the loopback hub.

Conversions run in this process (an optimum-cli start costs seconds of imports). The models,
the hub and the store are shared by the module's tests: each conversion runs once, and the
tests that need a fresh state make their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_download import errors
from model_download.conversion import ConvertOptions
from model_download.store.store import StoredModel
from tests.conversion.conftest import Service, nothing_converted, variant_repo
from tests.models.tiny import (
    SENTENCES,
)
from tests.servers.hf_hub import FakeHub

pytest.importorskip("optimum.exporters.openvino")


def _bin_size(model: StoredModel) -> int:
    return (model.path / "openvino_model.bin").stat().st_size


def test_bert_at_every_precision_loads_runs_and_agrees(service: Service) -> None:
    # The tiny models' layers are 32 and 37 wide: per-row int4 (-1) is what fits them.
    source = service.pull("hf:tiny/bert")
    sizes = {}
    for precision, extra in [
        ("fp32", {}),
        ("fp16", {}),
        ("int8", {}),
        ("int4", {"group_size": -1}),
    ]:
        converted = service.convert(source, precision=precision, **extra)
        validated, reports = service.validate(converted, precision=precision, **extra)
        [report] = reports
        assert report.passed, report.rows()
        assert all(o.finite for o in report.outputs)
        assert report.latency_ms > 0 and report.compile_seconds > 0
        if precision != "fp32":
            assert report.similarity is not None
            assert report.similarity.cosine >= ConvertOptions(precision=precision).threshold
        assert validated.manifest.extra["validation"]["passed"] is True
        assert validated.manifest.extra["source"]["revision"] == source.manifest.revision
        assert service.store.verify(validated) == []
        sizes[precision] = _bin_size(converted)
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]
    assert sizes["int4"] < sizes["fp32"]


def test_output_folder_matches_optimum_cli_layout(service: Service) -> None:
    converted = service.convert(service.pull("hf:tiny/bert"), precision="fp32")
    names = {f.path for f in converted.manifest.files}
    assert {
        "openvino_model.xml",
        "openvino_model.bin",
        "config.json",
        "openvino_tokenizer.xml",
        "openvino_tokenizer.bin",
    } <= names
    assert converted.manifest.extra["conversion"]["task"] == "feature-extraction"


def test_gpt2_with_past_and_its_tokenizer_ir(service: Service) -> None:
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)
    from transformers import AutoTokenizer

    source = service.pull("hf:tiny/gpt2")
    for precision, extra in [
        ("fp32", {}),
        ("fp16", {}),
        ("int4", {"group_size": 16}),
        ("int8", {}),
    ]:
        converted = service.convert(source, precision=precision, **extra)
        _, [report] = service.validate(converted, precision=precision, **extra)
        assert report.passed, report.rows()
        assert converted.manifest.extra["conversion"]["task"] == "text-generation-with-past"
    assert (converted.path / "openvino_detokenizer.xml").is_file()

    tokenizer_ir = ov.Core().compile_model(converted.path / "openvino_tokenizer.xml", "CPU")
    ids = tokenizer_ir([SENTENCES[0]])["input_ids"].tolist()[0]
    assert ids == AutoTokenizer.from_pretrained(source.path)(SENTENCES[0])["input_ids"]


def test_a_repeat_is_stored_once_and_a_changed_option_converts_again(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plugins.converters import compress

    calls = []
    real = compress.compress_ir
    monkeypatch.setattr(compress, "compress_ir", lambda *a, **k: calls.append(a) or real(*a, **k))
    # The tiny models' layers are 32 and 37 wide: per-row int4 (-1) is what fits them.
    source = service.pull("hf:tiny/bert")
    first = service.convert(source, precision="int4", group_size=-1)
    made = len(calls)
    again = service.convert(source, precision="int4", group_size=-1)
    assert len(calls) == made  # not compressed again...
    assert again.manifest.created_at == first.manifest.created_at  # ...nor published again
    other = service.convert(source, precision="int4", group_size=-1, ratio=0.5)
    assert len(calls) == made + 1
    assert other.path != first.path
    assert other.manifest.extra["conversion"]["ratio"] == 0.5


def test_no_hub_request_while_converting(service: Service, tiny_hub: FakeHub) -> None:
    source = service.pull("hf:tiny/gpt2")
    before = list(tiny_hub.requests)
    converted = service.convert(source, precision="int4", group_size=-1, sym=True)
    service.validate(converted, precision="int4", group_size=-1, sym=True)
    assert tiny_hub.requests == before


def test_onnx_converts_to_fp32_and_fp16_only(service: Service) -> None:
    source = service.pull("hf:tiny/onnx")
    for precision in ("fp32", "fp16"):
        converted = service.convert(source, precision=precision)
        _, [report] = service.validate(converted, precision=precision)
        assert report.passed and report.model == "model.xml"
    with pytest.raises(errors.InvalidReferenceError, match="converts to fp16, fp32, not int4"):
        service.convert(source, precision="int4", group_size=64)
    with pytest.raises(errors.InvalidReferenceError, match="apply to transformers models"):
        service.convert(source, precision="fp32", task="feature-extraction")


def test_calibration_data_is_refused_where_int8_needs_none(service: Service) -> None:
    source = service.pull("hf:tiny/bert")
    with pytest.raises(errors.InvalidReferenceError, match="without data, so calibration data"):
        service.convert(source, precision="int8", calibration_data="coco8")


def test_checked_options_raise_our_own_error() -> None:
    with pytest.raises(errors.InvalidReferenceError, match="group_size applies to int4 only"):
        ConvertOptions.checked(precision="int8", group_size=64)
    with pytest.raises(errors.InvalidReferenceError, match="invalid conversion options"):
        ConvertOptions.checked(min_cosine=2)


def test_an_absent_device_is_said_plainly(service: Service) -> None:
    from model_download.validate import headline

    converted = service.convert(service.pull("hf:tiny/bert"), precision="fp32")
    validated, [report] = service.validate(converted, precision="fp32", device="GPU")
    assert report.device_present is False and report.device_used == "CPU"
    assert any("GPU is not present" in w for w in report.warnings)
    record = validated.manifest.extra["validation"]
    assert (record["device"], record["device_used"]) == ("GPU", "CPU")
    assert headline(record) == "validated on CPU (GPU not present on this machine): passed"


def test_npu_defaults_to_batch_1_and_sequence_128(service: Service) -> None:
    converted = service.convert(service.pull("hf:tiny/bert"), precision="fp32")
    validated, [report] = service.validate(converted, precision="fp32", device="NPU")
    assert set(map(tuple, report.inputs.values())) == {(1, 128)}
    record = validated.manifest.extra["validation"]
    assert (record["device"], record["device_used"], record["device_present"]) == (
        "NPU",
        "CPU",
        False,
    )


def test_npu_gets_static_shapes(service: Service) -> None:
    converted = service.convert(service.pull("hf:tiny/bert"), precision="fp32")
    _, [report] = service.validate(
        converted, precision="fp32", device="NPU", static_shapes={"batch": 2, "sequence": 16}
    )
    assert set(map(tuple, report.inputs.values())) == {(2, 16)}
    assert any("NPU is not present" in w for w in report.warnings)


def test_remote_code_is_refused_unless_allowed(
    service: Service, tiny_hub: FakeHub, models: dict[str, Path], tmp_path: Path
) -> None:
    variant_repo(
        tiny_hub,
        models["bert"],
        "tiny/remote",
        tmp_path,
        lambda c: c.update(auto_map={"AutoModel": "modeling_x.XModel"}),
    )
    source = service.pull("hf:tiny/remote")
    with pytest.raises(errors.RemoteCodeRefusedError, match="--trust-remote-code"):
        service.convert(source, precision="fp32")
    assert nothing_converted(service.store, "huggingface/tiny/remote")


def test_a_model_whose_task_is_unknown_names_the_option(
    service: Service, tiny_hub: FakeHub, models: dict[str, Path], tmp_path: Path
) -> None:
    variant_repo(
        tiny_hub,
        models["bert"],
        "tiny/notask",
        tmp_path,
        lambda c: c.update(architectures=["SomethingNobodyKnows"]),
    )
    with pytest.raises(errors.UnsupportedModelError, match="give it with --task"):
        service.convert(service.pull("hf:tiny/notask"), precision="fp32")


def test_an_architecture_optimum_cannot_export_fails_cleanly(
    service: Service, tiny_hub: FakeHub, models: dict[str, Path], tmp_path: Path
) -> None:
    variant_repo(
        tiny_hub,
        models["bert"],
        "tiny/alien",
        tmp_path,
        lambda c: c.update(model_type="alien-arch", architectures=["AlienModel"]),
    )
    with pytest.raises(errors.UnsupportedModelError, match="cannot export"):
        service.convert(service.pull("hf:tiny/alien"), precision="fp32", task="feature-extraction")
    assert nothing_converted(service.store, "huggingface/tiny/alien")


def test_too_little_memory_is_refused_before_work(tiny_hub: FakeHub, tmp_path: Path) -> None:
    tight = Service(tmp_path / "store", tiny_hub, convert_memory_limit=1000)
    source = tight.pull("hf:tiny/bert")
    with pytest.raises(errors.InsufficientMemoryError, match="needs about"):
        tight.convert(source, precision="fp32")
    assert nothing_converted(tight.store, "huggingface/tiny/bert")


def test_a_repo_already_in_ir_is_validated_without_conversion(
    service: Service, tiny_hub: FakeHub
) -> None:
    converted = service.convert(service.pull("hf:tiny/bert"), precision="fp16")
    tiny_hub.commit(
        "OpenVINO/tiny-bert-ov", {f.path: converted.path / f.path for f in converted.manifest.files}
    )
    source = service.pull("hf:OpenVINO/tiny-bert-ov")
    assert source.manifest.format == "openvino-ir"
    assert service.convert(source, precision="int8").path == source.path
    validated, [report] = service.validate(source, precision="int8")
    assert report.passed
    assert any("without conversion" in w for w in report.warnings)
    assert validated.manifest.extra["validation"]["passed"] is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "int3"}, "unknown precision 'int3'"),
        ({"device": "TPU"}, "unknown device 'TPU'"),
        ({"precision": "int8", "group_size": 64}, "group_size applies to int4 only"),
        ({"precision": "fp16", "sym": True}, "sym applies to int8 and int4"),
        ({"precision": "int4", "ratio": 1.5}, "ratio must be above 0"),
        ({"static_shapes": {"height": 3}}, "static shape height=3"),
        ({"precision": "fp16", "calibration_data": "coco8"}, "applies to int8 only"),
        ({"precision": "fp32", "min_cosine": 0.9}, "fp32 is the reference itself"),
    ],
)
def test_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConvertOptions(**options)


def test_the_layout_is_optimum_clis(
    service: Service, models: dict[str, Path], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "optimum-cli"
    out = tmp_path / "cli-out"
    subprocess.run(
        [
            str(cli),
            "export",
            "openvino",
            "--model",
            str(models["gpt2"]),
            "--task",
            "text-generation-with-past",
            "--weight-format",
            "int8",
            str(out),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    ours = service.convert(service.pull("hf:tiny/gpt2"), precision="int8")
    theirs = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f.path for f in ours.manifest.files} == theirs

    # What GenAI and Model Server read off the IR: the runtime options (an f16 KV cache, say),
    # and the records of the tools and of nncf's parameters.
    our_rt, cli_rt = (_rt_info(folder / "openvino_model.xml") for folder in (ours.path, out))
    assert "KV_CACHE_PRECISION" not in our_rt["runtime_options"]
    assert our_rt["optimum"]["nncf_version"]
    assert our_rt == cli_rt
    our_config, cli_config = (
        json.loads((folder / "openvino_config.json").read_text()) for folder in (ours.path, out)
    )
    assert _keys(our_config) == _keys(cli_config)
    # Equal but for the model's name: optimum-cli records the --model it was given, a path here.
    assert our_config["quantization_config"]["tokenizer"] == "tiny/gpt2"
    for config in (our_config, cli_config):
        config["quantization_config"].pop("tokenizer")
    assert our_config == cli_config


_RT_SECTIONS = ("runtime_options", "optimum", "nncf")


def _rt_info(xml: Path) -> dict:
    import openvino as ov

    model = ov.Core().read_model(xml)
    return {s: _plain(model.get_rt_info(s)) for s in _RT_SECTIONS if model.has_rt_info(s)}


def _plain(value):
    # rt_info comes back as OVAny wrappers of dicts of OVAny: unwrap to plain JSON-like values.
    value = getattr(value, "value", value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return str(value)


def _keys(config: dict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in config.items():
        found.add(prefix + key)
        if isinstance(value, dict):
            found |= _keys(value, f"{prefix}{key}.")
    return found
