"""The zswarm command line (typer): ``app`` and ``main``, one module per group of commands.

    common.py   the app, the shared options, config and key loading, logging, and the one
                error-to-exit-code policy every command ends by
    node.py     zswarm node: flags over the file, signals, the ready banner
    ask.py      zswarm ask: the question, the ask, where to ask, the answer shown
    peers.py    zswarm peers (--watch, --browse)
    swarm.py    zswarm models, pull, join
    tools.py    zswarm keygen, http-token, doctor
    version.py  zswarm --version

Each command parses, then calls into the layers below (asks, client, pull, node,
doctor); none holds logic a second command needs.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zswarm.cli.common import app


def _load() -> Any:
    """The typer app with every command registered (the command modules imported)."""
    for name in ("ask", "node", "peers", "swarm", "tools", "version"):
        import_module(f"zswarm.cli.{name}")
    return import_module("zswarm.cli.common").app


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load()
    raise AttributeError(f"module 'zswarm.cli' has no attribute {name!r}")


def interrupted(exc: BaseException) -> bool:
    """Is this a Ctrl-C (alone, or every leaf of an exception group)?"""
    if isinstance(exc, KeyboardInterrupt):
        return True
    leaves = getattr(exc, "exceptions", None)  # a (Base)ExceptionGroup's
    return isinstance(leaves, tuple) and bool(leaves) and all(interrupted(e) for e in leaves)


def main() -> None:
    """The console script. A Ctrl-C at any moment - while Python loads the commands, or in
    one that has not stopped its own work (zswarm ask does, and says so) - ends with exit
    130 and one line, never a traceback."""
    try:
        _load()()
    except BaseException as exc:
        if not interrupted(exc):
            raise
        sys.stderr.write("interrupted\n")
        sys.exit(130)


__all__ = ["app", "main"]
