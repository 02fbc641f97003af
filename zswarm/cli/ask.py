"""`zswarm ask`: the question, the ask, where to ask it, and the answer shown.

Owns: reading the question (argument, stdin, --file), building the ask from the
config's defaults and the options (zswarm/asks.py) with the node's own limits named
in the errors, and choosing who answers: the node of --node or of the config, which
must answer a status request first (NodeClient.reach names the likely cause when it
does not), or this process, said on stderr and in the report (the same serve_ask a
node's RPC and HTTP asks take); one candidate's answer printed as it comes; Ctrl-C and
SIGTERM stopping the ask where it runs (exit 130). Exit codes: cli/common.py's policy.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import trio
import typer

from zswarm import asks, client, views
from zswarm.asks import Ask, choose_count, new_request
from zswarm.cli.common import (
    ConfigOpt,
    NodeOpt,
    VerboseOpt,
    app,
    config_arg,
    fail,
    failed,
    key_of,
    load,
    setup_logging,
)
from zswarm.client import NodeGone
from zswarm.config import ENDPOINT, Config
from zswarm.core.limits import admit
from zswarm.core.messages import ClientProgress, Report
from zswarm.core.plan import ASK_STRATEGIES
from zswarm.core.text import printable
from zswarm.errors import RequestRefused, ZswarmError
from zswarm.net.security import SwarmKey

FileOpt = typer.Option(None, "--file", "-f", metavar="FILE", show_default=False,
                       help="read the question from this file")


def question(prompt: str | None, prompt_file: Path | None) -> str:
    """The question from the argument, stdin ("-") or --file (exit 2 if none or both)."""
    if (prompt is None) == (prompt_file is None):
        fail("give the question as an argument, as - (stdin) or with --file, once", 2)
    if prompt_file is not None:
        try:
            return prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--file {prompt_file}: {exc}", 2)
    text = sys.stdin.read() if prompt == "-" else str(prompt)
    if not text.strip():
        fail("the question is empty", 2)
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
        fail(f"invalid option: {option}{what}" if option else f"invalid question: {exc}", 2)


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
        fail(f"--node {node_endpoint!r} is not a node's address, tcp://host:port?key=KEY "
             "(its start-up line, node.json and zswarm peers show it)", 2)
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
            fail(f"the node started with this config (pid {started[0]}) is running but does "
                 f"not answer this client: {mismatch or exc}", 1)
        if started is not None:
            fail(f"the node started with this config (pid {started[0]}) does not answer: "
                 f"{exc}. Start it again (zswarm node{config_arg(config)}) or ask in-process "
                 "with --local", 1)
        fail(str(exc), 1)
    return node, f"the node at {endpoint}"


def show(answer: str, report: Report, *, where: str, as_json: bool, explain: bool,
         max_tokens: int, shown: bool = False) -> None:
    """The answer (plain, --explain or --json; ``shown``: printed already as it came); a
    winner cut at the token limit is said."""
    if as_json:
        views.say(views.as_json(answer, report, where=where))
    elif explain:
        views.say(views.explain(answer, report, where=where))
    elif not shown:
        views.say(answer.strip())
    if report.candidates and report.candidates[report.winner].finish_reason == "length":
        views.say(f"note: the answer was cut at {max_tokens} tokens (--max-tokens)", err=True)


@app.command()
def ask(
    prompt: str | None = typer.Argument(None, metavar="QUESTION", show_default=False,
                                        hidden=True),
    prompt_file: Path | None = FileOpt,
    n: int | None = typer.Option(None, "--n", metavar="N", show_default=False,
                                 help="exactly N candidates (default: [consensus])"),
    budget: int | None = typer.Option(
        None, "--budget", metavar="N", show_default=False,
        help="at most N candidates, asked in waves until the answer is settled "
        "(confidence, majority, best_of_n; default: [consensus] n or budget, else n = 1)"),
    strategy: str | None = typer.Option(
        None, "--strategy", metavar="NAME", show_default=False,
        help=f"one of {', '.join(ASK_STRATEGIES)} (default: [consensus] strategy)"),
    max_tokens: int | None = typer.Option(None, "--max-tokens", metavar="N", show_default=False,
                                          help="longest answer (default: [generation])"),
    temperature: float | None = typer.Option(
        None, "--temperature", metavar="T", show_default=False,
        help="0 = always the likeliest token (default: [generation])"),
    seed: int | None = typer.Option(None, "--seed", metavar="N", show_default=False,
                                    help="same seed, same output"),
    system: str | None = typer.Option(None, "--system", metavar="TEXT", show_default=False,
                                      help="system prompt"),
    config: Path | None = ConfigOpt,
    node_endpoint: str | None = NodeOpt,
    local: bool = typer.Option(False, "--local", help="answer in-process, no node needed"),
    explain: bool = typer.Option(False, "--explain", help="show candidates and scores"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    stream: bool = typer.Option(True, "--stream/--no-stream",
                                help="print one candidate's answer as it is generated"),
    verbose: bool = VerboseOpt,
) -> None:
    """Ask the swarm QUESTION ("-" reads it from stdin; or --file): the node started with
    --config (or --node), or, when none was started, this machine in-process (said on
    stderr and in the report). Ctrl-C stops the work, on the node and its peers."""
    if verbose:
        setup_logging(True)
    text = question(prompt, prompt_file)
    cfg = load(config)
    ask = build(cfg, text, strategy, n=n, budget=budget, max_tokens=max_tokens,
                        temperature=temperature, seed=seed, system=system)
    key = key_of(cfg)
    node, where = where_to_ask(cfg, key, node_endpoint, local, config)
    printer = _Printer() if stream and not (as_json or explain) and ask.request.n == 1 \
        else None
    progress = _Progress(ask.request.n) if ask.request.n > 1 and sys.stderr.isatty() \
        else None
    signal.signal(signal.SIGTERM, _interrupted)  # as Ctrl-C: the work is stopped first
    try:
        if node is not None:
            with node:
                reply = node.ask(ask.request, strategy=ask.strategy,
                                 deadline_ms=ask.deadline_ms, adaptive=ask.adaptive,
                                 on_token=printer, on_progress=progress)
            answer, report = reply.answer, reply.report
        else:
            admit(cfg.limits, ask.request)  # before loading a model for it
            answer, report = trio.run(_ask_local, cfg, ask, printer, progress)
    except KeyboardInterrupt:  # the node (or this process) has stopped the work
        if progress is not None:
            progress.clear()
        if printer is not None and printer.printed:
            views.say("")
        views.say("cancelled: the ask was stopped", err=True)
        raise typer.Exit(130) from None
    except NodeGone as exc:  # the node died (or vanished) with the question in it
        fail(f"{exc}. Is it running? `zswarm peers{config_arg(config)}` or `zswarm "
             f"doctor{config_arg(config)}` say; start it again with `zswarm "
             f"node{config_arg(config)}`, or ask in-process with --local", 1)
    except ZswarmError as exc:
        if progress is not None:
            progress.clear()
        failed(exc)
    if progress is not None:
        progress.clear()
    if printer is not None and printer.printed:
        printer.end(answer)
        answer_shown = True
    else:
        answer_shown = False
    show(answer, report, where=where, as_json=as_json, explain=explain,
         max_tokens=ask.request.params.max_tokens, shown=answer_shown)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _Printer:
    """One candidate's answer printed as it comes (stdout, flushed each piece)."""

    def __init__(self) -> None:
        self.printed = ""

    def __call__(self, text: str) -> None:
        out = text if self.printed else text.lstrip()  # as the whole answer is shown
        if out:  # a model's text may hold terminal control sequences: escaped, as say() does
            sys.stdout.write(printable(out, keep_lines=True))
            sys.stdout.flush()
            self.printed += out

    def end(self, answer: str) -> None:
        """The answer is in: what the pieces missed (none, normally), then a newline."""
        rest = answer.strip()[len(self.printed):] if answer.strip().startswith(
            self.printed) else ""
        sys.stdout.write(printable(rest.rstrip(), keep_lines=True) + "\n")
        sys.stdout.flush()


class _Progress:
    """While several candidates gather: one line on stderr (a terminal), redrawn as each
    arrives ("3 of 8 candidates: a 2, b 1"), cleared before the answer is shown."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.by_node: dict[str, int] = {}
        self.drawn = False

    def __call__(self, event: ClientProgress) -> None:
        self.arrived(event.node)

    def arrived(self, node: str) -> None:
        self.by_node[node] = self.by_node.get(node, 0) + 1
        nodes = ", ".join(f"{printable(n)[:24]} {c}" for n, c in self.by_node.items())
        received = sum(self.by_node.values())
        sys.stderr.write(f"\r\033[K{received} of {self.expected} candidates: {nodes}")
        sys.stderr.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.drawn = False


async def _ask_local(cfg: Config, ask: Ask, printer: _Printer | None,
                     progress: _Progress | None = None) -> tuple[str, Report]:
    from zswarm.runtime.local import local_node
    from zswarm.runtime.serving import serve_ask

    async with local_node(cfg) as local:  # the same path as a node's RPC and HTTP asks
        return await serve_ask(local.ctx, local.coordinator, ask,
                               on_token=None if printer is None
                               else lambda index, text: printer(text),
                               on_candidate=None if progress is None
                               else lambda cand: progress.arrived(cand.node))
