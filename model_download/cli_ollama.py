"""``model-download ollama``: the models of the Ollama server at ``OLLAMA_HOST``.

The server pulls from its registry into its own ``OLLAMA_MODELS``, through the official
``ollama`` client; nothing goes through the store. (``model-download pull ollama:...`` is the
other way: into the store, which ``ollama serve`` can then serve from ``MODELS_DIR/ollama-models``.)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.progress import TaskID
from rich.table import Table

from model_download.cli_options import QuietOpt
from model_download.cli_progress import byte_bars
from model_download.errors import ModelDownloadError

if TYPE_CHECKING:  # the ollama client loads only when a command runs
    from plugins.hubs.ollama_server import OllamaServer, PullProgress

app = typer.Typer(
    help="Pull, list, show and remove the models of the Ollama server at OLLAMA_HOST, "
    "through the official ollama client (the server pulls from its own registry).",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

NamesArg = Annotated[list[str], typer.Argument(help="Ollama names: [namespace/]model[:tag].")]
NameArg = Annotated[str, typer.Argument(help="An Ollama name: [namespace/]model[:tag].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def _server() -> OllamaServer:
    from model_download.runtime import get_registry

    try:
        return get_registry().hub("ollama").server()
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc


class PullBars:
    """A bar per layer of a server's pull, and its other statuses as lines."""

    def __init__(self, console: Console, name: str, enabled: bool = True) -> None:
        self.name = name
        self._bars = byte_bars(console, enabled)
        self._enabled = enabled
        self._layers: dict[str, TaskID] = {}
        self._status = ""

    def __enter__(self) -> PullBars:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bars.__exit__(*exc_info)

    def update(self, line: PullProgress) -> None:
        """Show one progress line of the server's pull."""
        if line.digest and line.total:
            if line.digest not in self._layers:
                label = f"{self.name} {line.digest.removeprefix('sha256:')[:12]}"
                self._layers[line.digest] = self._bars.add_task(label, total=line.total)
            self._bars.update(self._layers[line.digest], completed=line.completed or 0)
        elif line.status != self._status and self._enabled:
            self._bars.console.print(f"{self.name}: {line.status}", highlight=False)
        self._status = line.status


@app.command()
def pull(
    names: NamesArg,
    insecure: Annotated[
        bool, typer.Option(help="Let the server use a registry over plain HTTP or bad TLS.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Have the Ollama server pull models, with a progress bar per layer."""
    server = _server()
    failures = 0
    for name in names:
        try:
            with PullBars(err, name, enabled=not quiet) as bars:
                status = server.pull(name, bars.update, insecure=insecure)
        except ModelDownloadError as exc:
            failures += 1
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            continue
        out.print(f"{name}: {status} on {server.host}", highlight=False)
    if failures:
        raise typer.Exit(1)


@app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """List the models the Ollama server holds."""
    server = _server()
    try:
        models = server.list()
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        rows = [
            {
                "name": m.name,
                "digest": m.digest,
                "size": m.size,
                "modified_at": m.modified_at.isoformat() if m.modified_at else None,
            }
            for m in models
        ]
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "digest", "size", "modified", box=None)
    for m in models:
        modified = f"{m.modified_at:%Y-%m-%d %H:%M}" if m.modified_at else "-"
        size = decimal(m.size) if m.size is not None else "-"
        table.add_row(m.name, (m.digest or "-")[:12], size, modified)
    out.print(table if models else f"no models on the Ollama server at {server.host}")


@app.command()
def show(name: NameArg, as_json: JsonOpt = False) -> None:
    """Show what the Ollama server knows of a model: details, parameters, template."""
    server = _server()
    try:
        shown = server.show(name)
    except ModelDownloadError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        out.print_json(json.dumps(shown))
        return
    out.print(f"[bold]{name}[/bold]  on {server.host}", highlight=False)
    details: dict[str, Any] = shown.get("details") or {}
    for key in ("family", "parameter_size", "quantization_level", "format"):
        if details.get(key):
            out.print(f"{key.replace('_', ' '):<20}{details[key]}", highlight=False)
    if shown.get("capabilities"):
        out.print(f"{'capabilities':<20}{', '.join(shown['capabilities'])}", highlight=False)
    for key in ("parameters", "template"):
        if shown.get(key):
            out.print(f"[bold]{key}[/bold]")
            out.print(shown[key], highlight=False, markup=False)  # templates hold [ and ]


@app.command()
def rm(
    names: NamesArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove models from the Ollama server (its blobs go when no other model uses them)."""
    server = _server()
    if not yes:
        typer.confirm(
            f"Remove {', '.join(names)} from the Ollama server at {server.host}?", abort=True
        )
    for name in names:
        try:
            server.delete(name)
        except ModelDownloadError as exc:
            raise _fail(str(exc)) from exc
        out.print(f"removed {name} from {server.host}", highlight=False)
