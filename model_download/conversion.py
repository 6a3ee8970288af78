"""What a conversion is asked for: target format, precision, device and the options that apply.

Parsed and checked once at the edge (CLI, API, flow parameters) like a model reference.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from model_download.errors import InvalidReferenceError
from model_download.store.manifest import Manifest

PRECISIONS = ("fp32", "fp16", "int8", "int4")
DEVICES = ("CPU", "GPU", "NPU", "AUTO")

#: Lowest cosine similarity to the fp32 result a precision may show before validation fails.
DEFAULT_MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99, "int4": 0.95}
#: Shapes an NPU compiles for when the request gives none: it needs static shapes.
DEFAULT_NPU_SHAPES = {"batch": 1, "sequence": 128}

Precision = Literal["fp32", "fp16", "int8", "int4"]
Device = Literal["CPU", "GPU", "NPU", "AUTO"]


class ConvertOptions(BaseModel):
    """A conversion request: ``precision`` weights, validated on ``device``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    to: Literal["openvino"] = Field("openvino", description="Target format.")
    precision: Precision = Field("fp16", description="Weight format: fp32, fp16, int8 or int4.")
    device: Device = Field("CPU", description="Device to validate on: CPU, GPU, NPU or AUTO.")
    task: str | None = Field(None, description="Model task, when its config does not tell.")
    group_size: int | None = Field(None, description="int4: weights per scale (default 128).")
    ratio: float | None = Field(None, description="int4: share of layers in int4 (default 1.0).")
    sym: bool | None = Field(None, description="int8/int4: symmetric quantization.")
    trust_remote_code: bool = Field(False, description="Allow the model's own Python code to run.")
    calibration_data: str | None = Field(
        None,
        description="int8 calibration images for converters that calibrate (YOLO): a dataset "
        "name in the datasets folder, or a dataset YAML or folder path.",
    )
    static_shapes: dict[str, int] | None = Field(
        None, description="Static input sizes (batch, sequence) for NPU; default 1 x 128."
    )
    min_cosine: float | None = Field(
        None, gt=0, le=1, description="Similarity to fp32 that validation requires."
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: object) -> str:
        text = str(value).strip().lower()
        if text not in PRECISIONS:
            raise InvalidReferenceError(
                f"unknown precision {value!r}: use one of {', '.join(PRECISIONS)}."
            )
        return text

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: object) -> str:
        text = str(value).strip().upper()
        if text not in DEVICES:
            raise InvalidReferenceError(
                f"unknown device {value!r}: use one of {', '.join(DEVICES)}."
            )
        return text

    @model_validator(mode="after")
    def _options_apply(self) -> ConvertOptions:
        int4_only = {"group_size": self.group_size, "ratio": self.ratio}
        for name, value in int4_only.items():
            if value is not None and self.precision != "int4":
                raise InvalidReferenceError(
                    f"{name} applies to int4 only, not to {self.precision}: drop it or ask "
                    "for --precision int4."
                )
        if self.calibration_data is not None and self.precision != "int8":
            raise InvalidReferenceError(
                f"calibration data applies to int8 only, not to {self.precision}: drop it or "
                "ask for int8."
            )
        if self.sym is not None and self.precision not in ("int8", "int4"):
            raise InvalidReferenceError(f"sym applies to int8 and int4, not to {self.precision}.")
        if self.min_cosine is not None and self.precision == "fp32":
            raise InvalidReferenceError(
                "min_cosine is how close fp16, int8 or int4 outputs must stay to fp32's; fp32 is "
                "the reference itself: drop it or ask for another precision."
            )
        if self.group_size is not None and self.group_size != -1 and self.group_size < 1:
            raise InvalidReferenceError("group_size must be a positive number, or -1 (per row).")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise InvalidReferenceError("ratio must be above 0 and at most 1.")
        for name, size in (self.static_shapes or {}).items():
            if name not in DEFAULT_NPU_SHAPES or size < 1:
                raise InvalidReferenceError(
                    f"static shape {name}={size}: give batch and sequence, each at least 1."
                )
        return self

    @classmethod
    def checked(cls, **fields: object) -> ConvertOptions:
        """Options from a request, or the first problem with them as our own error.

        Raises:
            InvalidReferenceError: naming the option at fault.
        """
        try:
            return cls(**fields)
        except ValidationError as exc:
            for error in exc.errors():
                cause = error.get("ctx", {}).get("error")
                if isinstance(cause, InvalidReferenceError):
                    raise cause from None
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidReferenceError(f"invalid conversion options ({problems}).") from None

    @property
    def threshold(self) -> float:
        return self.min_cosine or DEFAULT_MIN_COSINE[self.precision]

    def shapes(self) -> dict[str, int] | None:
        """Static shapes to compile for: given ones, the NPU default, or None (dynamic)."""
        if self.static_shapes:
            return dict(self.static_shapes)
        return dict(DEFAULT_NPU_SHAPES) if self.device == "NPU" else None

    def at(self, precision: str) -> ConvertOptions:
        """The same request at another precision (options that do not apply dropped)."""
        keep = self.model_dump(
            exclude={"precision", "group_size", "ratio", "sym", "min_cosine", "calibration_data"}
        )
        return ConvertOptions(precision=precision, **keep)

    def conversion_fields(self) -> dict:
        """What changes the converted files: the cache key and the manifest record these."""
        # Device and shapes matter to validation only: the IR itself stays device-neutral.
        return self.model_dump(exclude={"device", "min_cosine", "static_shapes"})


def source_digest(manifest: Manifest) -> str:
    """A digest of a stored model's content: its files' paths and sha256."""
    listing = sorted((f.path, f.sha256) for f in manifest.files)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def conversion_key(
    source: Manifest,
    converter: str,
    options: ConvertOptions,
    tools: dict[str, str],
    inputs: dict | None = None,
) -> str:
    """Changes exactly when the converted files could: content, converter, options, tools,
    and what else the converter reads (``inputs``: a calibration dataset, say)."""
    payload = [source_digest(source), converter, options.conversion_fields(), sorted(tools.items())]
    if inputs:
        payload.append(inputs)  # only when present, so keys made without it stay the same
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
