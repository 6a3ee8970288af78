"""The options of ``model-download pull``, declared once so the command reads as a list."""

from __future__ import annotations

from typing import Annotated

import typer

CONVERT = "Conversion (with --to)"

IncludeOpt = Annotated[
    list[str] | None,
    typer.Option("--include", "-i", help="Only files matching this glob (repeatable)."),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option("--exclude", "-x", help="Leave out files matching this glob (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ToOpt = Annotated[
    str | None,
    typer.Option("--to", help="Convert after the download: openvino.", rich_help_panel=CONVERT),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(help="Weights: fp32, fp16 (default), int8 or int4.", rich_help_panel=CONVERT),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(help="Validate on CPU (default), GPU, NPU or AUTO.", rich_help_panel=CONVERT),
]
TaskOpt = Annotated[
    str | None,
    typer.Option(
        help="Model task, when its config does not tell (e.g. feature-extraction).",
        rich_help_panel=CONVERT,
    ),
]
GroupSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="int4: weights per scale (default 128; -1: per row).", rich_help_panel=CONVERT
    ),
]
RatioOpt = Annotated[
    float | None,
    typer.Option(
        help="int4: share of layers in int4, the rest int8 (default 1.0).",
        rich_help_panel=CONVERT,
    ),
]
SymOpt = Annotated[
    bool | None,
    typer.Option(
        "--sym/--asym",
        help="int8/int4: symmetric or asymmetric quantization.",
        rich_help_panel=CONVERT,
        show_default=False,
    ),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        help="int8 of YOLO models: calibration images, as a dataset name of the datasets "
        "folder or a dataset YAML (or, for -cls, a folder) path.",
        rich_help_panel=CONVERT,
    ),
]
ShapeOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Static input size for validation, as batch=N or sequence=N (NPU default: "
        "batch=1, sequence=128).",
        rich_help_panel=CONVERT,
    ),
]
MinCosineOpt = Annotated[
    float | None,
    typer.Option(
        "--min-cosine",
        help="Lowest cosine similarity to the fp32 outputs that passes validation (default "
        "per precision: fp16 0.999, int8 0.99, int4 0.95).",
        rich_help_panel=CONVERT,
    ),
]
TrustRemoteCodeOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let a model's own Python code run while converting it.",
        rich_help_panel=CONVERT,
    ),
]
