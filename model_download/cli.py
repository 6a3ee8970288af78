"""The ``model-download`` command line: pull, list, show, verify and remove models."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from model_download.cli_convert import convert_options, local_dataset, parse_shapes
from model_download.cli_ollama import app as ollama_app
from model_download.cli_options import (
    DatasetOpt,
    DeviceOpt,
    ExcludeOpt,
    GroupSizeOpt,
    IncludeOpt,
    MinCosineOpt,
    PrecisionOpt,
    QuietOpt,
    RatioOpt,
    ShapeOpt,
    SymOpt,
    TaskOpt,
    ToOpt,
    TrustRemoteCodeOpt,
)
from model_download.errors import ModelDownloadError
from model_download.refs import ModelReference, parse_reference
from model_download.runtime import get_registry, get_settings, get_store
from model_download.store.store import CorruptModel, StoredModel

app = typer.Typer(
    help="Fetch AI models from model hubs into one verified, deduplicated store.\n\n"
    "Models are written hub:id\\[@revision], e.g. hf:org/name@v1.0 ('hf' is short for "
    "'huggingface'). The store is at MODELS_DIR; HF_ENDPOINT and HF_TOKEN are honoured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
app.add_typer(ollama_app, name="ollama")

ModelsArg = Annotated[list[str], typer.Argument(help="Models as hub:id\\[@revision].")]
ModelArg = Annotated[str, typer.Argument(help="A model as hub:id\\[@revision].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log each step (retries, reuse of stored files)."),
    ] = False,
) -> None:
    """Fetch AI models from model hubs into one verified, deduplicated store."""
    # The command line is an application: configuring logging here, not at import, is ours.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"invalid setting ({problems}): fix the environment or .env file.") from exc


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


@app.command()
def pull(
    models: ModelsArg,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    quiet: QuietOpt = False,
    to: ToOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = None,
    task: TaskOpt = None,
    group_size: GroupSizeOpt = None,
    ratio: RatioOpt = None,
    sym: SymOpt = None,
    dataset: DatasetOpt = None,
    shape: ShapeOpt = None,
    min_cosine: MinCosineOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
) -> None:
    """Download models into the store, and convert them with --to; repeats cost nothing."""
    from model_download.cli_progress import RichProgress

    try:
        # Every name and option is checked before anything is fetched or written.
        references = [
            parse_reference(m, include=tuple(include or ()), exclude=tuple(exclude or ()))
            for m in models
        ]
        registry = get_registry()
        references = [registry.hub(r.hub).validate(r) for r in references]
        options = convert_options(
            to,
            precision=precision,
            device=device,
            task=task,
            group_size=group_size,
            ratio=ratio,
            sym=sym,
            calibration_data=local_dataset(dataset),
            trust_remote_code=trust_remote_code,
            static_shapes=parse_shapes(shape),
            min_cosine=min_cosine,
        )
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc

    from model_download.cli_pull import pull_all

    try:
        results = pull_all(references, RichProgress(err, enabled=not quiet))
    except KeyboardInterrupt:
        _fail("interrupted: the partial files are kept, and the next pull resumes them.")
        raise typer.Exit(130) from None

    if options is not None:
        from model_download.cli_convert import convert_and_validate

        results = [
            convert_and_validate(r, options, err, quiet) if isinstance(r, StoredModel) else r
            for r in results
        ]

    _print_results(references, results)


def _print_results(references: list[ModelReference], results: list[StoredModel | str]) -> None:
    """Where each model was stored, or why it failed; a failure makes the exit status 1."""
    failures = 0
    for reference, result in zip(references, results, strict=True):
        if isinstance(result, StoredModel):
            out.print(f"{reference}  ->  {result.path}", highlight=False, soft_wrap=True)
        else:
            failures += 1
            err.print(f"[red]error:[/red] {result}", highlight=False)
    if failures:
        raise typer.Exit(1)


@app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """List the models in the store (and any corrupt one, with what to do about it)."""
    try:
        models, broken = get_store().list(), get_store().corrupt()
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc
    for bad in broken:
        err.print(f"[red]corrupt:[/red] {bad.message}", highlight=False, soft_wrap=True)
    if as_json:
        out.print_json(json.dumps([_summary(m) for m in models]))
        return
    table = Table("model", "revision", "files", "size", "stored at", box=None)
    for m in models:
        man = m.manifest
        table.add_row(
            f"{man.hub}:{man.id}",
            man.revision[:12],
            str(len(man.files)),
            _size(man.total_size),
            man.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table if models else f"no models in {get_store().root}")


@app.command()
def show(model: ModelArg, as_json: JsonOpt = False) -> None:
    """Show a stored model: where it is, its revision and its files."""
    _, found, broken = _lookup(model)
    for stored in found:
        if as_json:
            out.print_json(
                json.dumps({"path": str(stored.path), **stored.manifest.model_dump(mode="json")})
            )
            continue
        man = stored.manifest
        out.print(f"[bold]{man.hub}:{man.id}[/bold]  revision {man.revision}", highlight=False)
        out.print(f"path       {stored.path}", highlight=False, soft_wrap=True)
        out.print(f"requested  {', '.join(man.requested_revisions) or '-'}")
        out.print(f"format     {man.format or '-'}")
        out.print(f"stored at  {man.created_at:%Y-%m-%d %H:%M:%S %Z}")
        if man.updated_at:
            out.print(f"updated at {man.updated_at:%Y-%m-%d %H:%M:%S %Z}")
        out.print(f"tools      {', '.join(f'{k} {v}' for k, v in man.tools.items())}")
        table = Table("file", "size", "sha256", box=None)
        for f in man.files:
            table.add_row(f.path, _size(f.size), f.sha256[:16])
        out.print(table)

        from model_download.cli_convert import print_conversions, print_validation

        print_validation(stored, out)
        print_conversions(stored, out)
    if broken:
        raise typer.Exit(1)


@app.command()
def verify(model: ModelArg) -> None:
    """Re-hash a stored model's files against its manifest; report files it does not list."""
    _, found, broken = _lookup(model)
    bad = len(broken)
    for stored in found:
        problems = get_store().verify(stored)
        if problems:
            bad += 1
            err.print(f"[red]{stored.name}: {len(problems)} problem(s)[/red]", highlight=False)
            for problem in problems:
                err.print(f"  {problem}", highlight=False)
            err.print(
                f"  to repair: model-download rm --yes {stored.name}, then pull it again",
                highlight=False,
            )
        else:
            out.print(f"{stored.name}: ok ({len(stored.manifest.files)} files)", highlight=False)
    if bad:
        raise typer.Exit(1)


@app.command()
def rm(
    model: ModelArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a model (one revision, or all without @revision) from the store."""
    reference, stored, broken = _lookup(model)
    if not yes:
        names = ", ".join([*(s.name for s in stored), *(f"{b.name} (corrupt)" for b in broken)])
        typer.confirm(f"Remove {names}?", abort=True)
    try:
        from model_download.pull import remove_models

        removed = remove_models(
            get_store(), get_registry(), reference.hub, reference.id, reference.revision
        )
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc
    for s in removed:
        out.print(f"removed {s.name}", highlight=False)
    for b in broken:
        out.print(f"removed {b.name} (corrupt)", highlight=False)


@app.command()
def search(
    hub: Annotated[str, typer.Argument(help="The hub to search: hf, openvino, ...")],
    query: Annotated[
        str | None,
        typer.Argument(help="Words the model id contains; for ollama, the model to list tags of."),
    ] = None,
    author: Annotated[str | None, typer.Option(help="Only this user's or organisation's.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only models with this tag.")] = None,
    page: Annotated[int, typer.Option(min=1, help="Which page.")] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=500, help="Models a page.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List what a hub offers (a search, one page at a time), as references for pull."""
    from model_download.refs import HUB_ALIASES

    try:
        found = (
            get_registry()
            .hub(HUB_ALIASES.get(hub, hub))
            .search(query, author=author, tags=tuple(tag or ()), page=page, page_size=page_size)
        )
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        out.print_json(found.model_dump_json())
        return
    table = Table(box=None)
    # Folded, never cut: each row is a reference to paste into pull, its tag or commit included.
    table.add_column("model", overflow="fold")
    table.add_column("updated")
    table.add_column("downloads")
    for model in found.models:
        updated = f"{model.updated:%Y-%m-%d}" if model.updated else "-"
        at = f"@{model.revision}" if model.revision else ""
        table.add_row(f"{found.hub}:{model.id}{at}", updated, str(model.downloads or "-"))
    out.print(table if found.models else "no models found")
    if found.has_more:
        out.print(f"more on page {page + 1} (--page {page + 1})")


@app.command()
def plugins(as_json: JsonOpt = False) -> None:
    """List hub and converter plugins, and why any is unavailable."""
    found = get_registry().plugins()
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "kind": p.kind,
                        "name": p.name,
                        "available": p.available,
                        "reason": p.reason,
                        "target": p.target,
                    }
                    for p in found
                ]
            )
        )
        return
    table = Table("kind", "name", "available", "notes", box=None)
    for p in found:
        table.add_row(
            p.kind,
            p.name,
            "yes" if p.available else "[red]no[/red]",
            p.description if p.available else p.reason or "",
        )
    out.print(table)


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address of the Prefect server and UI (MODEL_DOWNLOAD_PREFECT_HOST, 127.0.0.1)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port of the Prefect server and UI (MODEL_DOWNLOAD_PREFECT_PORT, 4200)."),
    ] = None,
    api: Annotated[
        bool,
        typer.Option(
            help="Also start the REST API (MODEL_DOWNLOAD_API_HOST and _PORT, 127.0.0.1:8000)."
        ),
    ] = True,
) -> None:
    """Start the service: a local Prefect server with its UI, the REST API, and a runner."""
    from deployments.serve import run

    run(host=host, port=port, api=api)


def _lookup(model: str) -> tuple[ModelReference, list[StoredModel], list[CorruptModel]]:
    """The stored revisions ``model`` names, and its corrupt ones (reported here, in red)."""
    try:
        reference = parse_reference(model)
        store = get_store()
        broken = store.corrupt(reference.hub, reference.id, reference.revision)
        where = (reference.hub, reference.id, reference.revision)
        found = store.find(*where) if broken else store.require(*where)
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc
    for bad in broken:
        err.print(f"[red]error:[/red] {bad.message}", highlight=False, soft_wrap=True)
    return reference, found, broken


def _summary(stored: StoredModel) -> dict:
    man = stored.manifest
    return {
        "model": f"{man.hub}:{man.id}",
        "revision": man.revision,
        "path": str(stored.path),
        "files": len(man.files),
        "size": man.total_size,
        "created_at": man.created_at.isoformat(),
    }


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
