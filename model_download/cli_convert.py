"""The command line's conversion stage (``pull --to openvino``) and its validation reports."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from model_download.conversion import ConvertOptions
from model_download.errors import InvalidReferenceError, ModelDownloadError
from model_download.runtime import get_registry, get_settings, get_store
from model_download.store.store import StoredModel


def convert_and_validate(
    stored: StoredModel, options: ConvertOptions, console: Console, quiet: bool
) -> StoredModel | str:
    """Convert ``stored`` and validate the result, showing each stage; the error text on failure."""
    from model_download.convert import convert_stored
    from model_download.validate import validate_stored

    name = f"{stored.manifest.hub}:{stored.manifest.id}"
    try:
        with console.status(f"converting {name} to {options.precision}...", spinner="dots") as s:
            if quiet:
                s.stop()
            converted = convert_stored(
                stored,
                options,
                store=get_store(),
                registry=get_registry(),
                settings=get_settings(),
            )
            s.update(f"validating {name} on {options.device}...")
            validated, reports = validate_stored(converted, options, store=get_store())
    except ModelDownloadError as exc:
        return str(exc)
    for report in reports:
        for warning in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {report.model}: {warning}", highlight=False)
    failed = [r.model for r in reports if not r.passed]
    if failed:
        print_validation(validated, console)
        return f"{name} failed validation ({', '.join(failed)}); see the report above."
    return validated


def print_validation(stored: StoredModel, console: Console) -> None:
    """The validation report recorded in a model's manifest, as tables."""
    record = stored.manifest.extra.get("validation")
    if not record:
        return
    verdict = "[green]passed[/green]" if record["passed"] else "[red]failed[/red]"
    console.print(f"validation on {record['device']}: {verdict}")
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
_FLAGS = {"calibration_data": "dataset", "static_shapes": "shape"}


def local_dataset(given: str | None) -> str | None:
    """A dataset path that exists here made absolute (flows may run elsewhere); else a name."""
    if given is None:
        return None
    path = Path(given).expanduser()
    return str(path.absolute()) if path.exists() else given


def convert_options(to: str | None, **given) -> ConvertOptions | None:
    chosen = {k: v for k, v in given.items() if v not in (None, False)}
    if to is None:
        if chosen:
            flags = ", ".join(f"--{_FLAGS.get(k, k).replace('_', '-')}" for k in chosen)
            raise InvalidReferenceError(f"{flags} apply to a conversion: add --to openvino.")
        return None
    return ConvertOptions.checked(to=to, **chosen)
