"""`zswarm node`: run a node until Ctrl-C - the flags over the file, signals, the banner.

Owns: which flag changes which config key, the first-signal-drains / second-stops
rule, what the terminal shows once the node is up, and ``serve`` (the run that
`zswarm join` ends in too). The node itself is zswarm/node.py's (the composition root).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
import typer

from zswarm import views
from zswarm.cli.common import ConfigOpt, PeerOpt, VerboseOpt, app, failed, load, setup_logging
from zswarm.config import Config, override
from zswarm.errors import ZswarmError

if TYPE_CHECKING:
    from zswarm.statedir import NodeInfo

log = logging.getLogger("zswarm")


@app.command()
def node(config: Path | None = ConfigOpt,
         federation: bool | None = typer.Option(
             None, "--federation/--no-federation", show_default=False,
             help="join the swarm or not (default: [federation] enabled, on)"),
         name: str | None = typer.Option(None, "--name", metavar="NAME", show_default=False,
                                         help="this node's name (default: [node] name, the "
                                         "host name)"),
         bind: str | None = typer.Option(None, "--bind", metavar="ADDRESS", show_default=False,
                                         help='address to listen on, or "auto" (default: '
                                         "[node] bind, auto)"),
         http_port: int | None = typer.Option(None, "--http-port", metavar="PORT",
                                              show_default=False, help="0 = any free port "
                                              "(default: [ports] http, 17615)"),
         rpc_port: int | None = typer.Option(None, "--rpc-port", metavar="PORT",
                                             show_default=False, help="0 = any free port "
                                             "(default: [ports] rpc, 17617)"),
         pub_port: int | None = typer.Option(None, "--pub-port", metavar="PORT",
                                             show_default=False, help="0 = any free port "
                                             "(default: [ports] pub, 17616)"),
         peer: list[str] | None = PeerOpt,
         verbose: bool = VerboseOpt) -> None:
    """Run a node: load the model into workers and serve until Ctrl-C. Flags win over the file."""
    setup_logging(verbose)
    cfg = load(config)
    try:
        cfg = overrides(cfg, federation=federation, name=name, bind=bind, http_port=http_port,
                        peer=peer, rpc_port=rpc_port, pub_port=pub_port)
    except ZswarmError as exc:
        failed(exc)
    serve(cfg)


def serve(cfg: Config) -> None:
    """Run the node of ``cfg`` until Ctrl-C (`zswarm node`, and `zswarm join` at its end):
    a bad config or model file exits 2, as for ask; a failure while running, 1."""
    try:
        run(cfg)
    except KeyboardInterrupt:
        pass
    except ZswarmError as exc:
        failed(exc)
    views.say("stopped", err=True)


def serve_file(path: Path) -> None:
    """`zswarm node --config PATH` (what join runs once it wrote PATH)."""
    setup_logging(False)
    serve(load(path))


def overrides(cfg: Config, *, federation: bool | None, name: str | None, bind: str | None,
              http_port: int | None, peer: list[str] | None, rpc_port: int | None = None,
              pub_port: int | None = None) -> Config:
    """The config with the flags given applied (ConfigError naming a bad one)."""
    changes: dict[str, dict[str, Any]] = {"node": {}, "federation": {}, "ports": {}}
    if federation is not None:
        changes["federation"]["enabled"] = federation
    if name is not None:
        changes["node"]["name"] = name
    if bind is not None:
        changes["node"]["bind"] = bind
    for key, port in (("http", http_port), ("rpc", rpc_port), ("pub", pub_port)):
        if port is not None:
            changes["ports"][key] = port
    if peer:
        changes["federation"]["peers"] = [*cfg.federation.peers, *peer]
        if cfg.federation.discovery == "mdns":  # a peer named on the command line is used
            changes["federation"]["discovery"] = "both"
    return override(cfg, changes)


async def _stop_on_signals(drain: trio.Event, scope: trio.CancelScope) -> None:
    """First SIGTERM or Ctrl-C: drain (finish what is in flight). Second: stop now."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for sig in signals:
            if not drain.is_set():
                log.info("%s: draining, then leaving the swarm (again to stop now)",
                         signal.Signals(sig).name)
                drain.set()
            else:
                scope.cancel()
                return


def run(cfg: Config) -> None:
    """Serve until a signal (raises what the node raises, one error, not a group)."""
    from zswarm.node import run_node  # late: `zswarm --help` stays quick
    from zswarm.runtime.local import single_errors

    async def main() -> None:
        drain = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, drain, nursery.cancel_scope)

            async def serve(task_status: trio.TaskStatus[NodeInfo]) -> None:
                await run_node(cfg, drain=drain, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop listening for signals

            views.say(banner(cfg, await nursery.start(serve)), err=True)

    with single_errors():
        trio.run(main)


def banner(cfg: Config, info: NodeInfo) -> str:
    """What a user needs once the node is up: where it serves, and its swarm."""
    fed = cfg.federation
    federation = f"on, discovery {fed.discovery}, swarm {fed.swarm!r}" if info.federation \
        else "off"
    root = f"http://{info.host}:{info.http_port}" if info.http_port else ""
    status = f"{root}/" if root and cfg.http.status_page else "-"
    lines = [f"zswarm node {info.name} ({info.node_id}) ready",
             f"  address {info.host}", f"  model   {info.model_id}",
             f"  workers {info.workers}", f"  rpc     {info.rpc_endpoint}",
             f"  pub     {info.pub_endpoint or '-'}", f"  http    {root + '/v1' if root else '-'}",
             f"  status  {status}", f"  federation {federation}",
             f"  swarm key {views.key_state(info.swarm_key)}"]
    if info.federation:
        lines.append(f"  join    zswarm join '{info.rpc_endpoint}' (on another machine; the "
                     "key pins this node: nobody else can answer in its name)")
        lines.append("  peers   reported in a moment, then logged as they join, die and leave")
    return "\n".join(lines)
