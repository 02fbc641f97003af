"""What `zswarm ask` decides before it asks: the question, the request, and where to ask.

Owns: reading the question (argument, stdin, --file), building the request from the
config's defaults and the options with the node's own limits named in the errors, and
choosing who answers: the node of --node or of the config, which must answer a status
request first (NodeClient.reach names the likely cause when it does not), or this process,
said on stderr and in the report. Each failure is an exit with its code (2 for options
and configuration, 1 for a node that does not answer) and a message naming the fix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

from zswarm import asks, client, views
from zswarm.asks import Ask, choose_count, new_request
from zswarm.config import ENDPOINT, Config
from zswarm.core.messages import Report
from zswarm.errors import RequestRefused, ZswarmError
from zswarm.net.security import SwarmKey


def question(prompt: str | None, prompt_file: Path | None) -> str:
    """The question from the argument, stdin ("-") or --file (exit 2 if none or both)."""
    if (prompt is None) == (prompt_file is None):
        views.say("error: give the question as an argument, as - (stdin) or with --file, once",
                  err=True)
        raise typer.Exit(2)
    if prompt_file is not None:
        try:
            return prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            views.say(f"error: --file {prompt_file}: {exc}", err=True)
            raise typer.Exit(2) from None
    text = sys.stdin.read() if prompt == "-" else str(prompt)
    if not text.strip():
        views.say("error: the question is empty", err=True)
        raise typer.Exit(2)
    return text


def build(cfg: Config, question: str, strategy: str | None, *, n: int | None,
          budget: int | None, max_tokens: int | None, temperature: float | None,
          seed: int | None, system: str | None) -> Ask:
    """The ask from the config's defaults and the options (exit 2 naming a bad option)."""
    try:
        count, adaptive = choose_count(cfg, strategy, n=n, budget=budget,
                                       temperature=temperature)
        request = new_request(cfg, messages=[{"role": "user", "content": question}],
                              system=system, n=count, max_tokens=max_tokens,
                              temperature=temperature, seed=seed)
        return asks.build(cfg, request, strategy=strategy, adaptive=adaptive)
    except RequestRefused as exc:
        option = _OPTION_OF.get(exc.field)
        said = str(exc)  # "budget must be 1 to 16 ..." reads "--budget must be 1 to 16 ..."
        what = said.removeprefix(exc.field) if said.startswith(exc.field) else f": {said}"
        views.say(f"error: invalid option: {option}{what}" if option
                  else f"error: invalid question: {exc}", err=True)
        raise typer.Exit(2) from None


#: the request's field -> the option that set it
_OPTION_OF = {"n": "--n", "budget": "--budget", "strategy": "--strategy",
              "max_tokens": "--max-tokens", "params.max_tokens": "--max-tokens",
              "params.temperature": "--temperature", "params.seed": "--seed"}


def where_to_ask(cfg: Config, key: SwarmKey | None, node_endpoint: str | None, local: bool,
                  config: Path | None) -> tuple[client.NodeClient | None, str]:
    """(a client of the node that answered, or None for in-process; what the report says
    answered). The ask goes over the client's connection (the caller closes it).

    A node named with --node, or started with this config, must answer a status request
    within 3 s: an error naming the likely cause, never a silent answer from somewhere
    else. In-process only with --local, or when no node was started with this config
    (said on stderr).
    """
    if local:
        return None, "in-process (--local)"
    if node_endpoint is not None and not re.fullmatch(ENDPOINT, node_endpoint):
        views.say(f"error: --node {node_endpoint!r} is not tcp://host:port", err=True)
        raise typer.Exit(2)
    started = None if node_endpoint else client.node_json(cfg)
    endpoint = node_endpoint or (started[1] if started else None)
    if endpoint is None:
        views.say("note: no node is running with this config: answering in-process, on this "
                  f"machine only (start one: zswarm node{config_arg(config)}; --local says "
                  "in-process is meant)", err=True)
        return None, "in-process (no node running with this config)"
    node = None
    try:
        node = client.NodeClient(endpoint, key=key)  # a malformed endpoint fails here
        node.reach()
    except ZswarmError as exc:
        if node is not None:
            node.close()
        mismatch = client.key_mismatch(cfg, key) if started is not None else ""
        if started is not None and client.alive(started[0]):
            views.say(f"error: the node started with this config (pid {started[0]}) is running "
                      f"but does not answer this client: {mismatch or exc}", err=True)
        elif started is not None:
            views.say(f"error: the node started with this config (pid {started[0]}) does not "
                      f"answer: {exc}. Start it again (zswarm node{config_arg(config)}) or ask "
                      "in-process with --local", err=True)
        else:
            views.say(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    return node, f"the node at {endpoint}"


def config_arg(config: Path | None) -> str:
    return f" --config {config}" if config is not None else ""


def show(answer: str, report: Report, *, where: str, as_json: bool, explain: bool,
         max_tokens: int) -> None:
    """The answer (plain, --explain or --json); a winner cut at the token limit is said."""
    if as_json:
        views.say(views.as_json(answer, report, where=where))
    elif explain:
        views.say(views.explain(answer, report, where=where))
    else:
        views.say(answer.strip())
    if report.candidates and report.candidates[report.winner].finish_reason == "length":
        views.say(f"note: the answer was cut at {max_tokens} tokens (--max-tokens)", err=True)
