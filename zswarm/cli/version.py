"""`zswarm --version`: the package's version, as the app's callback."""

from __future__ import annotations

import typer

from zswarm import __version__
from zswarm.cli.common import app
from zswarm.views import say


@app.callback(invoke_without_command=True)
def _version(version: bool = typer.Option(False, "--version", is_eager=True,
                                          help="print the version and exit")) -> None:
    if version:
        say(f"zswarm {__version__}")
        raise typer.Exit(0)
