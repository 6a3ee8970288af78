"""Inputs for validating an IR, built from the model's own signature.

Dynamic dimensions get small defaults (or the static shapes asked for, as NPU needs); values
follow what the inputs' names say (token ids, masks, positions) so a language model runs as
it would on text, and a seed makes the same inputs for a model and its reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_download.errors import InvalidReferenceError, ValidationFailed

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

# Stand-ins for dynamic dimensions: one sample, and a short sequence for every other axis.
_DEFAULT_BATCH = 1
_DEFAULT_LENGTH = 8
_SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog."


def port_name(port: Any, index: int, kind: str) -> str:
    try:
        return port.get_any_name()
    except RuntimeError:  # a port without tensor names
        return f"{kind}{index}"


def by_port(model: ov.Model, by_name: dict[str, Any], xml: Path) -> list[Any]:
    """``by_name``'s values in the order of ``model.inputs``."""
    names = [port_name(port, i, "input") for i, port in enumerate(model.inputs)]
    if set(names) == set(by_name):
        return [by_name[name] for name in names]
    raise ValidationFailed(
        f"{xml.name} takes the inputs {', '.join(names)}, not {', '.join(by_name)}: "
        "compare a model only with the reference IR of the same model"
    )


def concrete_shapes(
    model: ov.Model, static_shapes: dict[str, list[int]] | None, xml: Path
) -> dict[str, list[int]]:
    given = {name: [int(d) for d in shape] for name, shape in (static_shapes or {}).items()}
    names = [port_name(port, i, "input") for i, port in enumerate(model.inputs)]
    if unknown := sorted(set(given) - set(names)):
        raise InvalidReferenceError(
            f"{xml.name} has no input named {', '.join(unknown)}: its inputs are {', '.join(names)}"
        )
    shapes: dict[str, list[int]] = {}
    for name, port in zip(names, model.inputs, strict=True):
        partial = port.get_partial_shape()
        if name in given:
            shapes[name] = given[name]
        elif partial.rank.is_dynamic:
            raise ValidationFailed(
                f"Cannot validate {xml.name}: input {name} has no fixed number of dimensions: "
                "give its shape in static_shapes"
            )
        else:
            rank = len(partial)
            shapes[name] = [
                d.get_length() if d.is_static else default_dim(axis, rank, given)
                for axis, d in enumerate(partial)
            ]
    return shapes


def default_dim(axis: int, rank: int, given: dict[str, list[int]]) -> int:
    # Inputs usually share their batch, and those of one rank their sequence length: an
    # attention_mask must match the input_ids the caller fixed, or the model cannot be reshaped.
    for shape in given.values():
        if axis < len(shape) and (axis == 0 or len(shape) == rank):
            return shape[axis]
    return _DEFAULT_LENGTH if axis else _DEFAULT_BATCH


def sample_inputs(model: ov.Model, shapes: dict[str, list[int]], seed: int) -> dict[str, Any]:
    """Input values by name: the same seed, shapes and signature give the same values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values: dict[str, Any] = {}
    for (name, shape), port in zip(shapes.items(), model.inputs, strict=True):
        element = port.get_element_type()
        kind = element.get_type_name()
        if kind == "string":  # before is_integral(), which OpenVINO says is true for strings
            values[name] = np.full(shape, _SAMPLE_TEXT)
        elif kind == "boolean":
            values[name] = np.ones(shape, dtype=bool)
        elif element.is_real():
            values[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            values[name] = integer_input(name.lower(), shape, element.to_dtype(), rng)
    return values


def integer_input(name: str, shape: list[int], dtype: Any, rng: Any) -> np.ndarray:
    import numpy as np

    if name.endswith("input_ids"):
        # Low ids exist in every vocabulary; 0 is often padding.
        return rng.integers(1, 10, size=shape).astype(dtype)
    if name.endswith("attention_mask"):
        return np.ones(shape, dtype=dtype)
    if name.endswith("position_ids") and shape:
        return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
    if name == "beam_idx" and shape:
        return np.arange(shape[0], dtype=dtype).reshape([shape[0]] + [1] * (len(shape) - 1))
    return np.zeros(shape, dtype=dtype)


def cast(value: Any, element: ov.Type) -> Any:
    import numpy as np
    import openvino as ov

    kind = element.get_type_name()
    if kind == "string":
        return value
    if kind == "bf16":
        # numpy has no bfloat16, and OpenVINO would take float32 bytes as pairs of bf16: keep the
        # upper half of each float32, which is that value in bf16.
        tensor = ov.Tensor(ov.Type.bf16, ov.Shape(list(value.shape)))
        halves = (np.asarray(value, np.float32).view(np.uint32) >> 16).astype(np.uint16)
        tensor.data[...] = halves.view(tensor.data.dtype)
        return tensor
    return np.asarray(value).astype(element.to_dtype(), copy=False)
