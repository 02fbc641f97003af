"""The zswarm command line (typer): ``app`` and ``main``, one module per group of commands.

    common.py   the app, the shared options, config and key loading, logging, and the one
                error-to-exit-code policy every command ends by
    node.py     zswarm node: flags over the file, signals, the ready banner
    ask.py      zswarm ask: the question, the ask, where to ask, the answer shown
    peers.py    zswarm peers (--watch, --browse)
    swarm.py    zswarm models, pull, join
    tools.py    zswarm keygen, http-token, doctor

Each command parses, then calls into the layers below (asks, client, pull, node,
doctor); none holds logic a second command needs.
"""

from __future__ import annotations

import typer

from zswarm import __version__
from zswarm.cli import ask, node, peers, swarm, tools  # noqa: F401 - they register commands
from zswarm.cli.common import app
from zswarm.views import say


@app.callback(invoke_without_command=True)
def _version(version: bool = typer.Option(False, "--version", is_eager=True,
                                          help="print the version and exit")) -> None:
    if version:
        say(f"zswarm {__version__}")
        raise typer.Exit(0)


def main() -> None:
    app()


__all__ = ["app", "main"]
