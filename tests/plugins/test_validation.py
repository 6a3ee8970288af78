"""validate_ir on small IRs built here with OpenVINO itself: real reads, compiles and inferences."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from model_download.errors import InvalidReferenceError
from plugins.converters.validation import ValidationFailed, ValidationReport, validate_ir

np = pytest.importorskip("numpy")
ov = pytest.importorskip("openvino")
ops = pytest.importorskip("openvino.opset13")

HIDDEN, CLASSES = 16, 32


def _named(node, name: str):
    node.output(0).get_tensor().set_names({name})
    return node


def _save(outputs, params, path: Path, *, sinks=(), compress: bool = False) -> Path:
    model = ov.Model([ops.result(out) for out in outputs], list(sinks), list(params), path.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, path, compress_to_fp16=compress)
    return path


def _mlp(path: Path, *, shape=(-1, 4), seed=0, sign=1.0, classes=CLASSES, compress=False) -> Path:
    """x -> MatMul -> Add -> Relu -> MatMul = logits, and Softmax(logits) = probs."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((shape[-1], HIDDEN)).astype(np.float32)
    b1 = rng.standard_normal(HIDDEN).astype(np.float32)
    w2 = sign * rng.standard_normal((HIDDEN, classes)).astype(np.float32)
    x = ops.parameter(list(shape), ov.Type.f32, name="x")
    hidden = ops.relu(ops.add(ops.matmul(x, ops.constant(w1), False, False), ops.constant(b1)))
    logits = _named(ops.matmul(hidden, ops.constant(w2), False, False), "logits")
    probs = _named(ops.softmax(logits, -1), "probs")
    return _save([logits, probs], [x], path, compress=compress)


def _all(condition):
    return ops.reduce_logical_and(condition, ops.constant(np.arange(2, dtype=np.int64)), False)


def _token_model(path: Path) -> Path:
    """Answers log(1) = 0 when every input holds what validate_ir should give it, else -inf."""
    names = ["input_ids", "attention_mask", "token_type_ids", "position_ids"]
    ids, mask, types, positions = (ops.parameter([-1, -1], ov.Type.i64, name=n) for n in names)
    beams = ops.parameter([-1], ov.Type.i32, name="beam_idx")
    flag = ops.parameter([-1], ov.Type.boolean, name="use_cache")
    one, zero = ops.constant(np.int64(1)), ops.constant(np.int64(0))
    checks = [
        _all(ops.greater_equal(ids, one)),
        _all(ops.less(ids, ops.constant(np.int64(10)))),
        _all(ops.equal(mask, one)),
        _all(ops.equal(types, zero)),
        _all(ops.equal(positions, ops.constant(np.arange(8, dtype=np.int64)))),
    ]
    axis0 = ops.constant(np.array([0], dtype=np.int64))
    checks.append(ops.reduce_logical_and(ops.equal(beams, ops.constant(np.int32(0))), axis0))
    checks.append(ops.reduce_logical_and(flag, axis0))
    ok = checks[0]
    for check in checks[1:]:
        ok = ops.logical_and(ok, check)
    score = _named(ops.log(ops.convert(ok, "f32")), "score")
    return _save([score], [ids, mask, types, positions, beams, flag], path)


def test_float_model_with_dynamic_batch_validates_on_cpu(tmp_path: Path) -> None:
    report = validate_ir(_mlp(tmp_path / "model.xml"))
    assert report.passed and report.device_present and not report.warnings
    assert (report.model, report.device_requested, report.device_used) == (
        "model.xml",
        "CPU",
        "CPU",
    )
    assert report.inputs == {"x": [1, 4]}
    assert [(o.name, o.shape, o.finite) for o in report.outputs] == [
        ("logits", [1, CLASSES], True),
        ("probs", [1, CLASSES], True),
    ]
    assert report.compile_seconds > 0 and report.latency_ms > 0
    assert report.similarity is None


def test_integer_inputs_get_ids_ones_zeros_and_positions(tmp_path: Path) -> None:
    report = validate_ir(_token_model(tmp_path / "openvino_model.xml"), runs=1)
    assert report.inputs == {
        "input_ids": [1, 8],
        "attention_mask": [1, 8],
        "token_type_ids": [1, 8],
        "position_ids": [1, 8],
        "beam_idx": [1],
        "use_cache": [1],
    }
    # The model's single output is -inf unless every input held the expected values.
    assert report.outputs[0].finite and report.passed


@pytest.mark.parametrize("device", ["GPU", "NPU"])
def test_absent_device_falls_back_to_cpu_with_a_warning(tmp_path: Path, device: str) -> None:
    report = validate_ir(_mlp(tmp_path / "model.xml"), device=device.lower(), runs=1)
    assert report.device_requested == device and report.device_used == "CPU"
    assert report.device_present is False
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith(f"{device} is not present on this machine")
    assert "run on CPU instead" in report.warnings[0]
    assert report.passed  # the model itself is fine; the warning says where it ran


def test_auto_device_is_always_present(tmp_path: Path) -> None:
    report = validate_ir(_mlp(tmp_path / "model.xml"), device="auto", runs=1)
    assert report.device_requested == "AUTO" and report.device_present
    assert report.device_used == "CPU" and not report.warnings and report.passed


def test_fp16_ir_is_close_to_its_fp32_reference(tmp_path: Path) -> None:
    reference = _mlp(tmp_path / "fp32" / "model.xml")
    compressed = _mlp(tmp_path / "fp16" / "model.xml", compress=True)
    assert (
        compressed.with_suffix(".bin").stat().st_size < reference.with_suffix(".bin").stat().st_size
    )
    similarity = validate_ir(compressed, reference_xml=reference).similarity
    assert similarity is not None and similarity.output == "logits"
    assert similarity.cosine > 0.999 and similarity.passed
    assert 0 < similarity.max_abs_diff < 0.1


def test_heavily_changed_weights_fail_the_comparison(tmp_path: Path) -> None:
    reference = _mlp(tmp_path / "fp32" / "model.xml")
    report = validate_ir(_mlp(tmp_path / "int4" / "model.xml", sign=-1.0), reference_xml=reference)
    assert report.similarity is not None and not report.similarity.passed
    assert report.similarity.cosine == pytest.approx(-1.0)
    assert report.similarity.threshold == 0.99
    assert all(o.finite for o in report.outputs) and report.passed is False


def test_same_seed_gives_both_irs_the_same_inputs(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "model.xml")
    similarity = validate_ir(model, reference_xml=model, seed=7).similarity
    assert similarity is not None
    assert similarity.cosine == pytest.approx(1.0) and similarity.max_abs_diff == 0.0


def test_zero_outputs_compare_as_equal_to_zero_and_unequal_to_anything_else(
    tmp_path: Path,
) -> None:
    def scaled(path: Path, factor: float) -> Path:
        x = ops.parameter([-1, 4], ov.Type.f32, name="x")
        return _save([ops.multiply(x, ops.constant(np.float32(factor)))], [x], path)

    zeros, ones = scaled(tmp_path / "a" / "zeros.xml", 0.0), scaled(tmp_path / "b" / "x.xml", 1.0)
    assert validate_ir(zeros, reference_xml=zeros, runs=1).similarity.cosine == 1.0
    report = validate_ir(zeros, reference_xml=ones, runs=1)
    assert report.similarity.cosine == 0.0 and not report.passed


def test_non_finite_outputs_fail(tmp_path: Path) -> None:
    x = ops.parameter([-1, 4], ov.Type.f32, name="x")
    fine = _named(ops.relu(x), "fine")
    broken = _named(ops.divide(x, ops.constant(np.zeros(4, np.float32))), "broken")
    report = validate_ir(_save([fine, broken], [x], tmp_path / "model.xml"), runs=1)
    assert [(o.name, o.finite) for o in report.outputs] == [("fine", True), ("broken", False)]
    assert report.passed is False
    assert {
        "check": "output broken",
        "value": "[1, 4] has NaN or infinite values",
        "ok": False,
    } in (report.rows())


def test_outputs_of_other_shapes_cannot_pass_the_comparison(tmp_path: Path) -> None:
    reference = _mlp(tmp_path / "fp32" / "model.xml", classes=CLASSES // 2)
    report = validate_ir(_mlp(tmp_path / "int8" / "model.xml"), reference_xml=reference, runs=1)
    assert report.similarity.cosine == 0.0 and not report.passed
    assert report.warnings == [
        f"Output logits cannot be compared: float32[1, {CLASSES}], reference float32[1, 16]"
    ]


def test_nan_similarity_fails_and_survives_json(tmp_path: Path) -> None:
    x = ops.parameter([-1, 4], ov.Type.f32, name="x")
    path = _save([ops.log(ops.negative(ops.abs(x)))], [x], tmp_path / "model.xml")
    report = validate_ir(path, reference_xml=path, runs=1)
    assert not report.outputs[0].finite and not report.similarity.passed and not report.passed
    text = report.model_dump_json()
    assert '"cosine":"NaN"' in text
    assert math.isnan(ValidationReport.model_validate_json(text).similarity.cosine)


def test_stateful_model_runs_from_a_fresh_state(tmp_path: Path) -> None:
    opset6 = pytest.importorskip("openvino.opset6")
    x = ops.parameter([-1, 4], ov.Type.f32, name="x")
    state = opset6.read_value(
        ops.constant(np.zeros((1, 4), np.float32)), "kv", ov.Type.f32, [-1, 4]
    )
    total = ops.add(state, x)
    path = _save([total], [x], tmp_path / "model.xml", sinks=[opset6.assign(total, "kv")])
    report = validate_ir(path, reference_xml=path, runs=3)
    assert report.passed and report.similarity.max_abs_diff == 0.0


def test_static_shapes_reshape_the_model_and_its_reference(tmp_path: Path) -> None:
    reference = _mlp(tmp_path / "fp32" / "model.xml", shape=(-1, -1, 4))
    model = _mlp(tmp_path / "fp16" / "model.xml", shape=(-1, -1, 4), compress=True)
    assert validate_ir(model, runs=1).inputs == {"x": [1, 8, 4]}
    report = validate_ir(
        model, device="NPU", reference_xml=reference, static_shapes={"x": [2, 5, 4]}, runs=1
    )
    assert report.inputs == {"x": [2, 5, 4]}
    assert [o.shape for o in report.outputs] == [[2, 5, CLASSES], [2, 5, CLASSES]]
    assert report.similarity.passed and report.passed
    with pytest.raises(InvalidReferenceError, match="no input named y: its inputs are x"):
        validate_ir(model, static_shapes={"y": [1, 4]})
    with pytest.raises(ValidationFailed, match="Cannot reshape model.xml"):
        validate_ir(model, static_shapes={"x": [2, 5, 3]})


def test_inputs_not_named_in_static_shapes_follow_the_named_ones(tmp_path: Path) -> None:
    ids, mask = (
        ops.parameter([-1, -1], ov.Type.i64, name=n) for n in ("input_ids", "attention_mask")
    )
    beams = ops.parameter([-1], ov.Type.i32, name="beam_idx")
    # Adding the two forces them to one shape: reshaping fails unless the mask follows the ids.
    total = ops.add(ops.convert(ids, "f32"), ops.convert(mask, "f32"))
    path = _save([total, ops.convert(beams, "f32")], [ids, mask, beams], tmp_path / "model.xml")
    report = validate_ir(path, device="NPU", static_shapes={"input_ids": [2, 16]}, runs=1)
    assert report.inputs == {"input_ids": [2, 16], "attention_mask": [2, 16], "beam_idx": [2]}
    assert [o.shape for o in report.outputs] == [[2, 16], [2]] and report.passed


def test_damaged_or_missing_ir_raises_validation_failed(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "model.xml")
    damaged = tmp_path / "damaged" / "broken_model.xml"
    damaged.parent.mkdir()
    damaged.write_text(model.read_text()[:300])
    with pytest.raises(ValidationFailed, match=r"Cannot read broken_model\.xml .* convert"):
        validate_ir(damaged)
    model.with_suffix(".bin").unlink()
    with pytest.raises(ValidationFailed, match=r"model\.xml .*model\.bin must be next to it"):
        validate_ir(model, device="GPU")
    with pytest.raises(ValidationFailed, match="missing.xml"):
        validate_ir(tmp_path / "missing.xml")
    assert issubclass(ValidationFailed, RuntimeError)


@pytest.mark.parametrize("device", ["TPU", "", "GPU.1"])
def test_invalid_device_is_refused(tmp_path: Path, device: str) -> None:
    with pytest.raises(InvalidReferenceError, match="use one of CPU, GPU, NPU, AUTO"):
        validate_ir(tmp_path / "model.xml", device=device)


def test_report_rows_and_json_round_trip(tmp_path: Path) -> None:
    reference = _mlp(tmp_path / "fp32" / "model.xml")
    report = validate_ir(
        _mlp(tmp_path / "bad" / "model.xml", sign=-1.0), device="GPU", reference_xml=reference
    )
    rows = report.rows()
    assert rows and all(set(row) == {"check", "value", "ok"} for row in rows)
    assert all(isinstance(row["value"], str) and isinstance(row["ok"], bool) for row in rows)
    checks = {row["check"]: row for row in rows}
    assert checks["device"] == {"check": "device", "value": "GPU -> CPU", "ok": False}
    # Exact f32 on CPU, even where the CPU would run bf16 by default.
    assert checks["inference precision"]["value"] == "f32" == report.inference_precision
    assert checks["similarity of logits to reference"]["ok"] is False
    assert rows[-1] == {"check": "passed", "value": "False", "ok": False}
    assert ValidationReport.model_validate_json(report.model_dump_json()) == report
    json.loads(report.model_dump_json())  # strict JSON, fit for the manifest
