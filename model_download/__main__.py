"""``python -m model_download`` is the ``model-download`` command."""

from model_download.cli import app

app(prog_name="model-download")
