"""The zswarm command line (typer): node, ask. Parses, then calls into the runtime."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import msgspec
import trio
import typer

from zswarm import client
from zswarm.config import Config, load_config
from zswarm.core.consensus import STRATEGIES
from zswarm.core.messages import ChatMessage, GenerateRequest, Report, SamplingParams
from zswarm.errors import ZswarmError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Join the local LLMs on your LAN into one swarm.")
log = logging.getLogger("zswarm")

ConfigOpt = typer.Option(None, "--config", "-c", help="swarm.toml (default: built-in defaults)")


def _load(config: Path | None) -> Config:
    try:
        return load_config(config)
    except ZswarmError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def node(config: Path | None = ConfigOpt,
         verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run a node: load the model into workers and serve until Ctrl-C."""
    _setup_logging(verbose)
    cfg = _load(config)
    from zswarm.runtime.node import run_node

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run_node, cfg)
            typer.echo(f"zswarm node {info.name} ({info.node_id}) ready\n"
                       f"  model   {info.model_id}\n  workers {info.workers}\n"
                       f"  rpc     {info.rpc_endpoint}", err=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
    except ZswarmError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _explain(answer: str, report: Report) -> str:
    lines = [answer, "", f"strategy {report.strategy}, winner #{report.winner}, "
             f"agreement {report.agreement:.2f}, {len(report.candidates)} of {report.expected} "
             "candidates"]
    lines.append(f"{'#':>2}  {'node/worker':<20} {'score':>8} {'finish':<9} {'ms':>8}  text")
    for i, c in enumerate(report.candidates):
        mark = "*" if i == report.winner else " "
        score = "-" if c.score is None else f"{c.score:.3f}"
        text = " ".join(c.text.split())
        text = text if len(text) <= 60 else text[:57] + "..."
        who = f"{c.node}/{c.worker}"
        lines.append(f"{i:>2}{mark} {who:<20} {score:>8} {c.finish_reason:<9} "
                     f"{c.latency_ms:>8.0f}  {text}")
    timings = ", ".join(f"{k} {v:.0f}" for k, v in report.timings.items())
    lines.append(f"timings: {timings}")
    if report.note:
        lines.append(f"note: {report.note}")
    return "\n".join(lines)


def _as_json(answer: str, report: Report) -> str:
    return json.dumps({
        "answer": answer,
        "strategy": report.strategy,
        "winner": report.winner,
        "agreement": report.agreement,
        "candidates": [
            {"node": c.node, "worker": c.worker, "text": c.text, "score": c.score,
             "finish_reason": c.finish_reason, "latency_ms": c.latency_ms}
            for c in report.candidates
        ],
        "timings": report.timings,
        "note": report.note,
    }, ensure_ascii=False)


@app.command()
def ask(
    prompt: str = typer.Argument(..., help="the question"),
    n: int | None = typer.Option(None, "--n", help="candidates to generate"),
    strategy: str | None = typer.Option(None, "--strategy",
                                           help=f"one of {', '.join(STRATEGIES)}"),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
    temperature: float | None = typer.Option(None, "--temperature"),
    seed: int | None = typer.Option(None, "--seed", help="same seed, same output"),
    system: str | None = typer.Option(None, "--system", help="system prompt"),
    config: Path | None = ConfigOpt,
    node_endpoint: str | None = typer.Option(None, "--node", help="tcp://host:port of a node"),
    local: bool = typer.Option(False, "--local", help="run in-process, no node needed"),
    explain: bool = typer.Option(False, "--explain", help="show candidates and scores"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Ask the swarm (or a local in-process swarm) one question."""
    if verbose:
        _setup_logging(True)
    cfg = _load(config)
    gen = cfg.generation
    strategy = strategy or cfg.consensus.strategy
    if strategy not in STRATEGIES:
        typer.echo(f"error: --strategy must be one of {', '.join(STRATEGIES)}", err=True)
        raise typer.Exit(2)
    system_prompt = gen.system_prompt if system is None else system
    messages = ((ChatMessage(role="system", content=system_prompt),) if system_prompt else ()) + (
        ChatMessage(role="user", content=prompt),)
    try:
        request = msgspec.convert({
            "messages": [msgspec.to_builtins(m) for m in messages],
            "n": n if n is not None else cfg.consensus.n,
            "params": msgspec.to_builtins(SamplingParams(
                max_tokens=max_tokens or gen.max_tokens,
                temperature=gen.temperature if temperature is None else temperature,
                top_p=gen.top_p, top_k=gen.top_k, seed=seed)),
        }, GenerateRequest)
    except msgspec.ValidationError as exc:
        typer.echo(f"error: invalid option: {exc}", err=True)
        raise typer.Exit(2) from None
    deadline_ms = cfg.scheduler.default_deadline_ms
    try:
        endpoint = node_endpoint or (None if local else client.running_node_endpoint(cfg))
        if endpoint is not None:
            reply = client.ask(endpoint, request, strategy=strategy, deadline_ms=deadline_ms)
            answer, report = reply.answer, reply.report
        else:
            answer, report = trio.run(_ask_local, cfg, request, strategy, deadline_ms / 1000)
    except ZswarmError as exc:
        typer.echo(f"error: {exc.kind}: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(_as_json(answer, report))
    elif explain:
        typer.echo(_explain(answer, report))
    else:
        typer.echo(answer.strip())


async def _ask_local(cfg: Config, request: GenerateRequest, strategy: str,
                     deadline_s: float) -> tuple[str, Report]:
    from zswarm.runtime.node import local_swarm

    async with local_swarm(cfg) as swarm:
        return await swarm.coordinator.ask(request, strategy=strategy, deadline_s=deadline_s)


def main() -> None:
    app()
