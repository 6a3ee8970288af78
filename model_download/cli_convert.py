"""The command line's conversion stage (``pull --to openvino``) and its validation reports."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from rich.console import Console
from rich.table import Table

from model_download.conversion import ConvertOptions
from model_download.errors import InvalidReferenceError, ModelDownloadError, ValidationFailed
from model_download.runtime import get_registry, get_settings, get_store
from model_download.store.store import StoredModel


def convert_and_validate(
    stored: StoredModel, options: ConvertOptions, console: Console, quiet: bool
) -> StoredModel | str:
    """Convert ``stored`` and validate the result, showing each stage; the error text on failure.

    A failure leaves the store as it was: conversions made for this request are removed again.
    """
    from model_download.convert import (
        convert_stored,
        discard_new_conversions,
        stored_conversions,
    )

    store, registry = get_store(), get_registry()
    name = f"{stored.manifest.hub}:{stored.manifest.id}"
    before = stored_conversions(stored, options, store=store, registry=registry)
    try:
        with (
            console.status(f"converting {name} to {options.precision}...", spinner="dots") as s,
            _tools_quiet(quiet),
        ):
            if quiet:
                s.stop()
            converted = convert_stored(
                stored, options, store=store, registry=registry, settings=get_settings()
            )
            s.update(f"validating {name} on {options.device}...")
            return _validated(converted, options, console, name)
    except Exception as exc:  # any failure is this model's: the others are still reported
        discard_new_conversions(stored, options, before, store=store, registry=registry)
        if isinstance(exc, ModelDownloadError):
            return str(exc)
        return f"converting {name} failed unexpectedly ({type(exc).__name__}: {exc})."


def _validated(
    converted: StoredModel, options: ConvertOptions, console: Console, name: str
) -> StoredModel:
    from model_download.validate import failure_reasons, validate_stored

    validated, reports = validate_stored(converted, options, store=get_store())
    for report in reports:
        for warning in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {report.model}: {warning}", highlight=False)
    record = validated.manifest.extra["validation"]
    if not record["passed"]:
        print_validation(validated, console)
        raise ValidationFailed(
            f"{name} failed validation: {failure_reasons(record)}; see the report above."
        )
    return validated


@contextmanager
def _tools_quiet(quiet: bool) -> Iterator[None]:
    """With --quiet, keep nncf's tables and progress bars off the terminal while converting."""
    if not quiet:
        yield
        return
    try:
        import nncf
    except ImportError:  # nothing of nncf's to silence
        yield
        return
    # nncf logs its tables at INFO, and its progress bars go to standard output whatever the level.
    previous = logging.getLogger("nncf").level
    nncf.set_log_level(logging.WARNING)
    try:
        with open(os.devnull, "w") as sink, redirect_stdout(sink):
            yield
    finally:
        nncf.set_log_level(previous)


def print_validation(stored: StoredModel, console: Console) -> None:
    """The validation report recorded in a model's manifest, as tables."""
    from model_download.validate import headline

    record = stored.manifest.extra.get("validation")
    if not record:
        return
    color = "green" if record["passed"] else "red"
    console.print(f"[{color}]{headline(record)}[/{color}]", highlight=False)
    for report in record["reports"]:
        table = Table("check", "value", "ok", box=None, title=report["model"], title_justify="left")
        for row in _rows(report):
            table.add_row(row["check"], row["value"], "yes" if row["ok"] else "[red]no[/red]")
        console.print(table)


def _rows(report: dict) -> list[dict]:
    from plugins.converters.validation import ValidationReport

    return ValidationReport.model_validate(report).rows()


def print_conversions(stored: StoredModel, console: Console) -> None:
    """The stored conversions of a downloaded model, one line each."""
    from model_download.convert import CONVERTED_HUB

    man = stored.manifest
    found = get_store().find(CONVERTED_HUB, f"{man.hub}/{man.id}")
    mine = [c for c in found if c.manifest.extra.get("source", {}).get("revision") == man.revision]
    if not mine:
        return
    table = Table("conversion", "precision", "validated", "path", box=None)
    for conv in mine:
        validation = conv.manifest.extra.get("validation")
        ok = "-" if not validation else ("yes" if validation["passed"] else "[red]no[/red]")
        precision = conv.manifest.extra.get("conversion", {}).get("options", {}).get("precision")
        table.add_row(conv.manifest.revision, precision or "-", ok, str(conv.path))
    console.print(table)


def parse_shapes(items: list[str] | None) -> dict[str, int] | None:
    if not items:
        return None
    shapes = {}
    for item in items:
        name, _, size = item.partition("=")
        if name not in ("batch", "sequence") or not size.isdigit() or int(size) < 1:
            raise InvalidReferenceError(
                f"--shape {item!r}: write batch=N or sequence=N with N a positive number."
            )
        shapes[name] = int(size)
    return shapes


#: Options whose flag is not their field's name.
_FLAGS = {
    "calibration_data": "dataset",
    "static_shapes": "shape",
    "sym": "sym/--asym",
    "min_cosine": "min-cosine",
}
#: Flags that are off unless given: off means "not given", not a value to pass on.
_OFF_FLAGS = {"trust_remote_code"}


def local_dataset(given: str | None) -> str | None:
    """A dataset path that exists here made absolute (flows may run elsewhere); else a name."""
    if given is None:
        return None
    path = Path(given).expanduser()
    return str(path.absolute()) if path.exists() else given


def convert_options(to: str | None, **given) -> ConvertOptions | None:
    """The conversion options of a pull, or None without --to; options given are never dropped.

    Raises:
        InvalidReferenceError: an option is given without --to, or does not apply.
    """
    # 0, 0.0 and --asym (False) are values the user gave: only "not given" is left out.
    chosen = {
        k: v for k, v in given.items() if v is not None and not (k in _OFF_FLAGS and v is False)
    }
    if to is None:
        if chosen:
            flags = ", ".join(f"--{_FLAGS.get(k, k).replace('_', '-')}" for k in chosen)
            raise InvalidReferenceError(f"{flags} apply to a conversion: add --to openvino.")
        return None
    return ConvertOptions.checked(to=to, **chosen)
