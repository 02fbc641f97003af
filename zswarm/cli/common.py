"""What every command of the command line shares: the app, its options, and one exit policy.

Owns: the typer ``app`` the commands register on; the options more than one command
takes (``ConfigOpt``, ``VerboseOpt``, ``PeerOpt``, ``NodeOpt``); loading the config and
the swarm key (``load``, ``key_of``); logging to stderr one line per record
(``setup_logging``); and the one policy for how a command ends when something is wrong
(``exit_code``, ``fail``, ``failed``): "error: ..." on stderr, and

    exit 2  what the user gave is wrong: an option, the config, a key or model file,
            a request a node refused as malformed or over its limits
    exit 1  something went wrong doing it: a node that does not answer, a failed
            inference, a deadline, no quorum (the message starts with its kind)
    exit 0  done; for doctor, nothing failed (warnings alone give 0)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

import typer

from zswarm.config import Config, load_config
from zswarm.core.text import printable
from zswarm.errors import ConfigError, ModelNotFound, RemoteProtocolError, ZswarmError
from zswarm.net.security import SwarmKey, swarm_key
from zswarm.views import say

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  rich_markup_mode=None,
                  help="Join the local LLMs on your LAN into one swarm.")

ConfigOpt = typer.Option(None, "--config", "-c", metavar="FILE", show_default=False,
                         help="swarm.toml (default: built-in defaults)")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="log at debug level (every peer "
                          "message dropped, every probe)")
PeerOpt = typer.Option(None, "--peer", metavar="ADDRESS", show_default=False,
                       help="a peer's address tcp://host:port?key=KEY, as it prints it at "
                       "start (repeatable; added to the file's)")
NodeOpt = typer.Option(None, "--node", metavar="ADDRESS", show_default=False,
                       help="a node's address tcp://host:port?key=KEY (its start-up line, "
                       "node.json and zswarm peers show it)")


def exit_code(exc: ZswarmError) -> int:
    """2 for what the user gave (options, config, files, a refused request), else 1."""
    return 2 if isinstance(exc, (ConfigError, ModelNotFound, RemoteProtocolError)) else 1


def fail(message: str, code: int) -> NoReturn:
    """Say "error: ``message``" on stderr and end the command with ``code``."""
    say(f"error: {message}", err=True)
    raise typer.Exit(code)


def failed(exc: ZswarmError, hint: str = "") -> NoReturn:
    """End the command for ``exc`` by the policy (a failure while doing it names its kind)."""
    code = exit_code(exc)
    fail(f"{exc}{hint}" if code == 2 else f"{exc.kind}: {exc}{hint}", code)


def load(config: Path | None) -> Config:
    """The config of --config, or the built-in defaults (exit 2 naming the problem)."""
    try:
        return load_config(config)
    except ZswarmError as exc:
        failed(exc)


def key_of(cfg: Config) -> SwarmKey | None:
    """The swarm key of the config (exit 2 naming the problem if the file is bad)."""
    try:
        return swarm_key(cfg.security.swarm_key_file, source=cfg.source)
    except ZswarmError as exc:
        failed(exc)


def config_arg(config: Path | None) -> str:
    """" --config FILE" when one was given: for the commands a message suggests."""
    return f" --config {config}" if config is not None else ""


class SafeFormatter(logging.Formatter):
    """Log lines of one line each: what peers sent is quoted with its controls escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = printable(record.message)
        return super().formatMessage(record)


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
