"""What a failed or refused conversion leaves behind (nothing), and what validation names.

A conversion or validation that fails leaves the store as it was; ``@<precision>`` moves only
to a conversion that passed; published IR is validated as it is, at its own precision; ONNX
variants are left out. Real tiny models, real converters, on the loopback hub.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model_download import errors
from model_download.conversion import ConvertOptions
from model_download.convert import CONVERTED_HUB
from model_download.store.manifest import read_manifest
from tests.conversion.conftest import Service, nothing_converted, variant_repo
from tests.servers.hf_hub import FakeHub

pytest.importorskip("optimum.exporters.openvino")


def test_the_precision_name_moves_only_when_validation_passes(service: Service) -> None:
    source = service.pull("hf:tiny/bert")
    name = ("huggingface/tiny/bert", "int4")
    strict = {"precision": "int4", "group_size": -1, "ratio": 0.8}
    converted = service.convert(source, **strict)
    before = service.store.resolve_ref(CONVERTED_HUB, *name)
    assert before != converted.manifest.revision  # converting alone names nothing

    validated, [report] = service.validate(converted, **strict, min_cosine=1.0)
    assert not report.passed and validated.manifest.extra["validation"]["passed"] is False
    assert service.store.resolve_ref(CONVERTED_HUB, *name) == before
    assert "validation" not in read_manifest(converted.path).extra  # nothing stored changed

    service.validate(converted, **strict)
    assert service.store.resolve_ref(CONVERTED_HUB, *name) == converted.manifest.revision


def test_a_failed_derivation_removes_the_base_it_made_but_not_an_older_one(
    service: Service, tiny_hub: FakeHub, models: dict[str, Path], tmp_path: Path
) -> None:
    variant_repo(tiny_hub, models["bert"], "tiny/fresh", tmp_path, lambda c: c.update(note="x"))
    source = service.pull("hf:tiny/fresh")
    model_id = "huggingface/tiny/fresh"
    # A real failure: no group of 5 weights divides the tiny model's 32-wide layers.
    with pytest.raises(errors.ConversionError, match="weight compression of .* failed"):
        service.convert(source, precision="int4", group_size=5)
    assert nothing_converted(service.store, model_id)

    base = service.convert(source, precision="fp32")
    with pytest.raises(errors.ConversionError, match="weight compression"):
        service.convert(source, precision="int4", group_size=5)
    assert [m.path for m in service.store.find(CONVERTED_HUB, model_id)] == [base.path]


def test_a_failed_validation_is_undone_by_the_caller(
    service: Service, tiny_hub: FakeHub, models: dict[str, Path], tmp_path: Path
) -> None:
    from model_download.convert import discard_new_conversions, stored_conversions

    variant_repo(tiny_hub, models["bert"], "tiny/strict", tmp_path, lambda c: c.update(note="y"))
    source = service.pull("hf:tiny/strict")
    model_id = "huggingface/tiny/strict"
    kept = service.convert(source, precision="fp32")
    options = ConvertOptions(precision="int8", min_cosine=1.0)
    before = stored_conversions(source, options, store=service.store, registry=service.registry)
    assert before == {kept.manifest.revision}

    converted = service.convert(source, precision="int8")
    _, [report] = service.validate(converted, precision="int8", min_cosine=1.0)
    assert not report.passed
    removed = discard_new_conversions(
        source, options, before, store=service.store, registry=service.registry
    )
    assert removed == [converted.name]
    assert [m.path for m in service.store.find(CONVERTED_HUB, model_id)] == [kept.path]
    assert service.store.resolve_ref(CONVERTED_HUB, model_id, "int8") is None


def test_a_pull_without_ir_files_has_nothing_to_validate(
    service: Service, tiny_hub: FakeHub
) -> None:
    converted = service.convert(service.pull("hf:tiny/bert"), precision="fp16")
    tiny_hub.commit(
        "OpenVINO/tiny-noxml-ov",
        {f.path: converted.path / f.path for f in converted.manifest.files},
    )
    source = service.pull_with("hf:OpenVINO/tiny-noxml-ov", exclude=("*.xml",))
    assert source.manifest.format is None  # the files stored hold no IR
    with pytest.raises(errors.ValidationFailed, match="no OpenVINO IR found in"):
        service.validate(source, precision="fp16")


def test_published_ir_refuses_conversion_options_and_reports_its_precision(
    service: Service, tiny_hub: FakeHub
) -> None:
    bert = service.pull("hf:tiny/bert")
    every = [("fp32", {}), ("fp16", {}), ("int8", {}), ("int4", {"group_size": -1})]
    for precision, extra in every:
        converted = service.convert(bert, precision=precision, **extra)
        repo = f"OpenVINO/tiny-{precision}-ov"
        tiny_hub.commit(repo, {f.path: converted.path / f.path for f in converted.manifest.files})
        source = service.pull(f"hf:{repo}")
        # Validated as published: the precision recorded is its own, not the one asked.
        validated, _ = service.validate(source, precision="fp16")
        assert validated.manifest.extra["validation"]["precision"] == precision

    for options, flag in [
        ({"precision": "int4", "group_size": 64}, "--group-size"),
        ({"precision": "int4", "ratio": 0.5}, "--ratio"),
        ({"task": "feature-extraction"}, "--task"),
        ({"precision": "int8", "sym": False}, "--sym/--asym"),
        ({"precision": "int8", "min_cosine": 0.5}, "--min-cosine"),
    ]:
        with pytest.raises(errors.InvalidReferenceError, match=f"published in OpenVINO IR.*{flag}"):
            service.convert(source, **options)


def test_onnx_variants_are_left_out_and_a_broken_file_is_named(
    service: Service, tiny_hub: FakeHub, models: dict[str, Path], tmp_path: Path
) -> None:
    main = models["onnx"] / "model.onnx"
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    tiny_hub.commit(
        "tiny/onnx-variants",
        {"model.onnx": main, "model_quantized.onnx": main, "model_fp16.onnx": main},
    )
    converted = service.convert(service.pull("hf:tiny/onnx-variants"), precision="fp32")
    assert converted.manifest.extra["conversion"]["onnx_files"] == ["model.onnx"]
    assert {f.path for f in converted.manifest.files} == {"model.xml", "model.bin"}

    # Asked for alone, a variant is what there is to convert.
    tiny_hub.commit("tiny/onnx-variant", {"model.onnx": main, "model_fp16.onnx": main})
    only = service.pull_with("hf:tiny/onnx-variant", include=("model_fp16.onnx",))
    converted = service.convert(only, precision="fp32")
    assert converted.manifest.extra["conversion"]["onnx_files"] == ["model_fp16.onnx"]

    tiny_hub.commit("tiny/onnx-broken", {"model.onnx": broken})
    with pytest.raises(errors.ConversionError, match="openvino cannot convert model.onnx of"):
        service.convert(service.pull("hf:tiny/onnx-broken"), precision="fp32")
    assert nothing_converted(service.store, "huggingface/tiny/onnx-broken")
