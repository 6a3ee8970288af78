"""The last step of every converter: does the IR load, compile, run, and still answer right?

A failed check is not an exception: the report comes back with ``passed=False`` and the caller
decides. Only an IR that cannot be read, compiled or run raises :class:`ValidationFailed`.
OpenVINO and numpy are imported inside the functions, as the rest of the service runs without
the conversion stack.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from model_download.errors import InvalidReferenceError, PluginUnavailableError, ValidationFailed
from plugins.converters.validation_inputs import (
    by_port,
    cast,
    concrete_shapes,
    port_name,
    sample_inputs,
)

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

__all__ = ["OutputCheck", "Similarity", "ValidationFailed", "ValidationReport", "validate_ir"]

logger = logging.getLogger(__name__)

#: Devices a model can be validated on; AUTO lets OpenVINO choose among those present.
DEVICES = ("CPU", "GPU", "NPU", "AUTO")
# CPUs with native bf16 (AMX, AVX512-BF16) run fp32 and fp16 IRs in bf16 by default. The
# reference must be exact, and the model under test runs in f32 too, so that the similarity
# measures what the conversion did to the weights, not the device's own rounding (a runtime
# setting that the files do not carry).
_EXACT_CPU = {"INFERENCE_PRECISION_HINT": "f32"}


class _Stored(BaseModel):
    # NaN and infinity are real outcomes (a broken model); keep them valid JSON in the manifest.
    model_config = ConfigDict(ser_json_inf_nan="strings")


class OutputCheck(_Stored):
    """One output of the first inference."""

    name: str
    shape: list[int]
    finite: bool


class Similarity(_Stored):
    """How close the first output is to the fp32 reference IR's on the same inputs."""

    cosine: float
    max_abs_diff: float
    threshold: float
    passed: bool
    output: str


class ValidationReport(_Stored):
    """What :func:`validate_ir` found, ready for a JSON manifest or a table."""

    model: str
    device_requested: str
    device_used: str
    device_present: bool
    inference_precision: str | None = None
    warnings: list[str]
    compile_seconds: float
    latency_ms: float
    inputs: dict[str, list[int]]
    outputs: list[OutputCheck]
    similarity: Similarity | None
    passed: bool

    def rows(self) -> list[dict[str, Any]]:
        """Flatten the report for a Prefect table artifact or a CLI table.

        Returns:
            One dict per check, each with the keys ``check``, ``value`` (a string) and ``ok``.
        """
        rows = [
            _row("model", self.model, True),
            _row("device", f"{self.device_requested} -> {self.device_used}", self.device_present),
            _row("inference precision", self.inference_precision or "device default", True),
            _row("compile time", f"{self.compile_seconds:.3f} s", True),
            _row("latency (median)", f"{self.latency_ms:.3f} ms", True),
        ]
        rows += [_row(f"input {name}", str(shape), True) for name, shape in self.inputs.items()]
        for out in self.outputs:
            value = f"{out.shape} {'finite' if out.finite else 'has NaN or infinite values'}"
            rows.append(_row(f"output {out.name}", value, out.finite))
        if (sim := self.similarity) is not None:
            value = f"cosine {sim.cosine:.6f} >= {sim.threshold}? max |diff| {sim.max_abs_diff:.3g}"
            rows.append(_row(f"similarity of {sim.output} to reference", value, sim.passed))
        rows += [_row("warning", text, False) for text in self.warnings]
        rows.append(_row("passed", str(self.passed), self.passed))
        return rows


def _row(check: str, value: str, ok: bool) -> dict[str, Any]:
    return {"check": check, "value": value, "ok": ok}


def validate_ir(
    model_xml: Path,
    *,
    device: str = "CPU",
    reference_xml: Path | None = None,
    min_cosine: float = 0.99,
    runs: int = 5,
    static_shapes: dict[str, list[int]] | None = None,
    seed: int = 0,
) -> ValidationReport:
    """Load, compile and run an OpenVINO IR, and compare it with its fp32 reference if given.

    Args:
        model_xml: The model's ``.xml``; its ``.bin`` must sit next to it.
        device: CPU, GPU, NPU or AUTO (any case). An absent device falls back to CPU, with a
            warning in the report.
        reference_xml: The fp32 IR of the same model, run on CPU with the same inputs.
        min_cosine: The lowest cosine similarity to the reference that passes.
        runs: How many inferences to time, after the first one whose outputs are checked.
        static_shapes: Input shapes by input name. When given, every input is reshaped to a
            static shape before compiling, as NPU needs; the dynamic dimensions of the inputs
            not named follow these shapes (batch from any, others from those of the same rank).
        seed: Seed of the generator that makes the input values.

    Returns:
        The report; ``passed`` is False when an output is not finite or the similarity is too low.

    Raises:
        InvalidReferenceError: ``device``, ``runs`` or an input name in ``static_shapes`` is wrong.
        ValidationFailed: An IR cannot be read, reshaped, compiled or run.
        PluginUnavailableError: OpenVINO is not installed.
    """
    model_xml, device = Path(model_xml), _normalise_device(device)
    if runs < 1:
        raise InvalidReferenceError(f"runs must be at least 1, not {runs}")
    session = _Session(_import_openvino().Core())
    model = session.read(model_xml, device)
    target, present = session.pick_device(device)
    shapes = concrete_shapes(model, static_shapes, model_xml)
    session.reshape_to = shapes if static_shapes is not None else None
    session.values = sample_inputs(model, shapes, seed)
    config = _EXACT_CPU if target == "CPU" else None
    compiled, compile_seconds = session.compile(model, model_xml, device, target, config)
    outputs, latency_ms = session.run(compiled, model, model_xml, target, runs)
    names = [port_name(port, i, "output") for i, port in enumerate(compiled.outputs)]
    checks = [
        OutputCheck(name=name, shape=list(out.shape), finite=_all_finite(out))
        for name, out in zip(names, outputs, strict=True)
    ]
    similarity = None
    if reference_xml is not None:
        similarity = session.compare(Path(reference_xml), outputs[0], names[0], min_cosine)
    passed = all(c.finite for c in checks) and (similarity is None or similarity.passed)
    logger.info("Validated %s on %s: passed=%s", model_xml.name, target, passed)
    return ValidationReport(
        model=model_xml.name,
        device_requested=device,
        device_used=",".join(compiled.get_property("EXECUTION_DEVICES")) or target,
        device_present=present,
        inference_precision=_inference_precision(compiled),
        warnings=session.warnings,
        compile_seconds=compile_seconds,
        latency_ms=latency_ms,
        inputs=shapes,
        outputs=checks,
        similarity=similarity,
        passed=passed,
    )


def _inference_precision(compiled: Any) -> str | None:
    # Not every device plugin reports it (AUTO and NPU may not).
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return None
    return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)


def _normalise_device(device: str) -> str:
    name = str(device).strip().upper()
    if name not in DEVICES:
        raise InvalidReferenceError(f"Unknown device {device!r}: use one of {', '.join(DEVICES)}")
    return name


def _import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise PluginUnavailableError(
            f"OpenVINO is needed to validate converted models but cannot be imported ({exc}): "
            "install the conversion dependencies (openvino, numpy)"
        ) from exc
    return openvino


def _cause(exc: BaseException) -> str:
    # OpenVINO prefixes the real reason with lines of C++ source locations; the last says why.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else type(exc).__name__


class _Session:
    """One OpenVINO core, the warnings so far, and the inputs both IRs are given."""

    def __init__(self, core: ov.Core) -> None:
        self.core = core
        self.warnings: list[str] = []
        self.values: dict[str, Any] = {}
        self.reshape_to: dict[str, list[int]] | None = None

    def warn(self, text: str) -> None:
        logger.warning(text)
        self.warnings.append(text)

    def read(self, xml: Path, device: str) -> ov.Model:
        if (xml.parent / "openvino_tokenizer.xml").is_file():
            try:
                import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)
            except ImportError as exc:
                self.warn(f"openvino_tokenizers cannot be imported ({exc}): tokenizers won't load")
        try:
            return self.core.read_model(str(xml))
        except RuntimeError as exc:
            raise ValidationFailed(
                f"Cannot read {xml.name} ({xml}) for validation on {device}: {_cause(exc)}. "
                f"The IR is damaged or incomplete (its {xml.with_suffix('.bin').name} must be "
                "next to it): convert the model again"
            ) from exc

    def pick_device(self, device: str) -> tuple[str, bool]:
        """The device to compile on, and whether it is the one requested."""
        if device == "AUTO":
            return device, True
        available = list(self.core.available_devices)
        # Several cards show up as GPU.0, GPU.1...
        if any(name.split(".")[0] == device for name in available):
            return device, True
        self.warn(
            f"{device} is not present on this machine (available: {', '.join(available)}); "
            "the model was compiled and run on CPU instead"
        )
        return "CPU", False

    def compile(
        self, model: ov.Model, xml: Path, device: str, target: str, config: dict | None = None
    ) -> tuple[Any, float]:
        """The compiled model (reshaped first if asked) and the seconds compiling took."""
        if self.reshape_to is not None:
            shapes = by_port(model, self.reshape_to, xml)
            try:
                model.reshape(dict(zip(model.inputs, shapes, strict=True)))
            except RuntimeError as exc:
                raise ValidationFailed(
                    f"Cannot reshape {xml.name} to {self.reshape_to} for {device}: "
                    f"{_cause(exc)}. Give shapes the model accepts in static_shapes"
                ) from exc
        start = time.perf_counter()
        try:
            compiled = self.core.compile_model(model, target, config or {})
        except RuntimeError as exc:
            advice = f"the {target} plugin or its driver is missing or broken: install it"
            if target == "CPU":
                advice = "the IR uses operations this OpenVINO cannot run: convert the model again"
            raise ValidationFailed(
                f"Cannot compile {xml.name} for {device} (on {target}): {_cause(exc)}. {advice}"
            ) from exc
        return compiled, time.perf_counter() - start

    def run(
        self, compiled: Any, model: ov.Model, xml: Path, target: str, runs: int
    ) -> tuple[list[np.ndarray], float]:
        """The outputs of a first inference, and the median latency of ``runs`` more, in ms."""
        import numpy as np

        values = by_port(model, self.values, xml)
        feed = {
            i: cast(v, port.get_element_type())
            for i, (v, port) in enumerate(zip(values, model.inputs, strict=True))
        }
        request = compiled.create_infer_request()
        # Without a reset, each run of a stateful model (KV cache) would continue the last one.
        stateful = bool(model.get_sinks()) or bool(request.query_state())

        def once() -> Any:
            if stateful:
                request.reset_state()
            return request.infer(feed)

        try:
            outputs = [np.array(out, copy=True) for out in once().to_tuple()]
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                once()
                times.append(time.perf_counter() - start)
        except RuntimeError as exc:
            raise ValidationFailed(
                f"{xml.name} compiled on {target} but failed to run: {_cause(exc)}. "
                "The IR or the device plugin is broken: convert the model again"
            ) from exc
        return outputs, statistics.median(times) * 1000.0

    def compare(self, xml: Path, output: np.ndarray, name: str, threshold: float) -> Similarity:
        """Run the reference on CPU in fp32 with the same inputs and compare first outputs."""
        model = self.read(xml, "CPU")
        compiled, _ = self.compile(model, xml, "CPU", "CPU", _EXACT_CPU)
        reference = self.run(compiled, model, xml, "CPU", 1)[0][0]
        if not _comparable(output, reference):
            shapes = f"{output.dtype}{list(output.shape)}, reference {reference.dtype}"
            self.warn(f"Output {name} cannot be compared: {shapes}{list(reference.shape)}")
        return _similarity(output, reference, threshold, name)


def _all_finite(array: np.ndarray) -> bool:
    import numpy as np

    # Integers, booleans and strings cannot hold NaN or infinity.
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def _comparable(out: np.ndarray, ref: np.ndarray) -> bool:
    return out.shape == ref.shape and {out.dtype.kind, ref.dtype.kind} <= set("biuf")


def _similarity(out: np.ndarray, ref: np.ndarray, threshold: float, name: str) -> Similarity:
    import numpy as np

    if not _comparable(out, ref):
        cosine, max_diff = 0.0, float("inf")  # other shapes, or text: no distance to measure
    else:
        a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        # Non-finite outputs make NaN here, which fails the threshold: no need for numpy to warn.
        with np.errstate(invalid="ignore", over="ignore"):
            norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
            if norm_a == 0.0 or norm_b == 0.0:
                # Two silent outputs agree; one silent and one not do not.
                cosine = 1.0 if norm_a == norm_b else 0.0
            else:  # rounding may step just past +-1
                cosine = float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))
            max_diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    passed = cosine >= threshold
    return Similarity(
        cosine=cosine, max_abs_diff=max_diff, threshold=threshold, passed=passed, output=name
    )
