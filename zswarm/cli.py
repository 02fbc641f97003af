"""The zswarm command line (typer): node, ask, peers (models, pull, join: cli_swarm.py).
Parses, then calls into the runtime."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import trio
import typer

from zswarm import __version__, cli_ask, cli_node, cli_swarm, client, views
from zswarm.asks import Ask
from zswarm.client import NodeGone
from zswarm.config import Config, load_config
from zswarm.core.limits import admit
from zswarm.core.messages import PeerInfo, Report
from zswarm.core.plan import ASK_STRATEGIES
from zswarm.core.text import printable
from zswarm.errors import (
    ConfigError,
    ModelNotFound,
    RemoteProtocolError,
    ZswarmError,
)
from zswarm.net.security import SwarmKey, http_token, swarm_key, write_key_file

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  rich_markup_mode=None,
                  help="Join the local LLMs on your LAN into one swarm.")
log = logging.getLogger("zswarm")

ConfigOpt = typer.Option(None, "--config", "-c", metavar="FILE", show_default=False,
                         help="swarm.toml (default: built-in defaults)")
KeyOutOpt = typer.Option(..., "--out", "-o", metavar="FILE", help="the key file to create")
FileOpt = typer.Option(None, "--file", "-f", metavar="FILE", show_default=False,
                       help="read the question from this file")


_out = views.say


class _SafeFormatter(logging.Formatter):
    """Log lines of one line each: what peers sent is quoted with its controls escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = printable(record.message)
        return super().formatMessage(record)


def _load(config: Path | None) -> Config:
    try:
        return load_config(config)
    except ZswarmError as exc:
        _out(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _key(cfg: Config) -> SwarmKey | None:
    """The swarm key of the config (exit 2 naming the problem if the file is bad)."""
    try:
        return swarm_key(cfg.security.swarm_key_file, source=cfg.source)
    except ZswarmError as exc:
        _out(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


PeerOpt = typer.Option(None, "--peer", metavar="ENDPOINT", show_default=False,
                       help="a peer's RPC endpoint tcp://host:port (repeatable; added to the "
                       "file's)")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="log at debug level (every peer "
                          "message dropped, every probe)")


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
    _setup_logging(verbose)
    cfg = _load(config)
    try:
        cfg = cli_node.overrides(cfg, federation=federation, name=name, bind=bind,
                                 http_port=http_port, peer=peer, rpc_port=rpc_port,
                                 pub_port=pub_port)
    except ConfigError as exc:
        _out(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _serve(cfg)


def _serve(cfg: Config) -> None:
    """Run the node of ``cfg`` until Ctrl-C (`zswarm node`, and `zswarm join` at its end)."""
    try:
        cli_node.run(cfg)
        _out("stopped", err=True)
    except KeyboardInterrupt:
        _out("stopped", err=True)
    except ZswarmError as exc:
        _out(f"error: {exc}", err=True)
        # the configuration, or a model file that is missing or not GGUF: exit 2, as for ask
        raise typer.Exit(2 if isinstance(exc, (ConfigError, ModelNotFound)) else 1) from None


@app.callback(invoke_without_command=True)
def _version(version: bool = typer.Option(False, "--version", is_eager=True,
                                          help="print the version and exit")) -> None:
    if version:
        _out(f"zswarm {__version__}")
        raise typer.Exit(0)


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
    node_endpoint: str | None = typer.Option(None, "--node", metavar="ENDPOINT",
                                             show_default=False,
                                             help="tcp://host:port of a node"),
    local: bool = typer.Option(False, "--local", help="answer in-process, no node needed"),
    explain: bool = typer.Option(False, "--explain", help="show candidates and scores"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    verbose: bool = VerboseOpt,
) -> None:
    """Ask the swarm QUESTION ("-" reads it from stdin; or --file): the node started with
    --config (or --node), or, when none was started, this machine in-process (said on
    stderr and in the report)."""
    if verbose:
        _setup_logging(True)
    question = cli_ask.question(prompt, prompt_file)
    cfg = _load(config)
    ask = cli_ask.build(cfg, question, strategy, n=n, budget=budget, max_tokens=max_tokens,
                        temperature=temperature, seed=seed, system=system)
    key = _key(cfg)
    node, where = cli_ask.where_to_ask(cfg, key, node_endpoint, local, config)
    try:
        if node is not None:
            with node:
                reply = node.ask(ask.request, strategy=ask.strategy,
                                 deadline_ms=ask.deadline_ms, adaptive=ask.adaptive)
            answer, report = reply.answer, reply.report
        else:
            admit(cfg.limits, ask.request)  # before loading a model for it
            answer, report = trio.run(_ask_local, cfg, ask)
    except NodeGone as exc:  # the node died (or vanished) with the question in it
        _out(f"error: {exc}. Is it running? `zswarm peers{cli_ask.config_arg(config)}` or "
             f"`zswarm doctor{cli_ask.config_arg(config)}` say; start it again with `zswarm "
             f"node{cli_ask.config_arg(config)}`, or ask in-process with --local", err=True)
        raise typer.Exit(1) from None
    except ZswarmError as exc:
        # refused as malformed or over a limit, or a model that is not there: the options
        # or the configuration (exit 2); anything else happened while asking (exit 1)
        bad_input = isinstance(exc, (RemoteProtocolError, ConfigError, ModelNotFound))
        _out(f"error: {exc}" if bad_input else f"error: {exc.kind}: {exc}", err=True)
        raise typer.Exit(2 if bad_input else 1) from None
    cli_ask.show(answer, report, where=where, as_json=as_json, explain=explain,
                 max_tokens=ask.request.params.max_tokens)


async def _ask_local(cfg: Config, ask: Ask) -> tuple[str, Report]:
    from zswarm.runtime.serving import serve_ask
    from zswarm.runtime.swarm import local_swarm

    async with local_swarm(cfg) as swarm:  # the same path as a node's RPC and HTTP asks
        return await serve_ask(swarm.ctx, swarm.coordinator, ask)


@app.command()
def peers(
    config: Path | None = ConfigOpt,
    node_endpoint: str | None = typer.Option(None, "--node", metavar="ENDPOINT",
                                             show_default=False,
                                             help="tcp://host:port of a node"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON array"),
    browse: float | None = typer.Option(None, "--browse", metavar="SECONDS",
                                        help="no node needed: browse mDNS this long (2 s or more: "
                                        "responders answer a record at most once a second)"),
    watch: bool = typer.Option(False, "--watch", "-w",
                               help="a live table, refreshed every second (Ctrl-C to stop)"),
) -> None:
    """List the peers a node knows (or, with --browse, every node answering mDNS)."""
    cfg = _load(config)
    if browse is not None:
        found = _browse(cfg, browse, judge=config is not None)
        if as_json:
            _out(json.dumps([views.peer_json(p) for p in found], ensure_ascii=False))
        else:
            _out(views.peer_text(found) if found else
                       f"no zswarm node answered mDNS within {browse:g} s (try zswarm doctor)")
        return
    key = _key(cfg)
    started = None if node_endpoint else client.node_json(cfg)
    if started is not None and not client.alive(started[0]):
        started = None  # that node is gone
    endpoint = node_endpoint or (started[1] if started else None)
    if endpoint is None:
        _out(f"error: no node is running with {cfg.source} (start one with "
                   "`zswarm node`, pass --node tcp://host:port, or use --browse 2)", err=True)
        raise typer.Exit(1)
    try:
        with client.NodeClient(endpoint, key=key) as node:
            try:  # the same first exchange as ask: a silent node is explained (a key?)
                node.reach()
            except ZswarmError as exc:
                mismatch = client.key_mismatch(cfg, key) if started is not None else ""
                _out(f"error: {mismatch or exc}", err=True)
                raise typer.Exit(1) from None
            reply = None if watch else node.peers()
    except ZswarmError as exc:
        _out(f"error: {exc.kind}: {exc}", err=True)
        raise typer.Exit(1) from None
    if reply is None:
        _watch_peers(endpoint, key)
        return
    if as_json:
        _out(json.dumps([views.peer_json(p) for p in reply.peers], ensure_ascii=False))
        return
    _out(f"swarm key {views.key_state(reply.node.key)}")
    _out(views.peer_summary(reply.peers))
    if reply.peers:
        _out(views.peer_text(reply.peers))


def _watch_peers(endpoint: str, key: SwarmKey | None) -> None:
    """Refresh a rich table every second until Ctrl-C; a node that stops answering is shown."""
    import time

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    def frame() -> Table | Text:
        try:
            reply = client.peers(endpoint, key=key, timeout_s=1.0)
        except ZswarmError as exc:
            return Text(f"{time.strftime('%H:%M:%S')}  {endpoint}: {exc.kind}: {exc} "
                        "(retrying every second)", style="red")
        title = (f"{reply.node.name} ({reply.node.node_id}) {time.strftime('%H:%M:%S')}  "
                 f"{views.peer_summary(reply.peers)}  swarm key "
                 f"{'on' if reply.node.key else 'OFF'}")
        return views.peer_table(reply.peers, title=title)

    try:
        with Live(frame(), console=Console(), auto_refresh=False) as live:
            while True:
                time.sleep(1.0)  # the refresh period, not synchronisation
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass


@app.command()
def keygen(out: Path = KeyOutOpt) -> None:
    """Make a new swarm key: CURVE encryption and membership for every node and client."""
    try:
        key = write_key_file(out)
    except ZswarmError as exc:
        _out(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _out(f"wrote {out} (mode 0600), fingerprint {key.fingerprint}\n"
               "Next, on every machine of the swarm:\n"
               f"  1. copy the file, keeping it private:  scp -p {out} HOST:~/.config/zswarm/\n"
               "  2. in swarm.toml:  [security]\n"
               '                     swarm_key_file = "~/.config/zswarm/'
               f'{out.name}"\n'
               "  3. restart zswarm node. Nodes and clients without this key can no longer\n"
               "     join, read, vote or ask. To rotate the key or revoke one machine, make a\n"
               "     new key and copy it to the machines that stay.")


@app.command("http-token")
def http_token_cmd(config: Path | None = ConfigOpt) -> None:
    """Print the HTTP API key of a keyed swarm (derived from the swarm key; every member
    accepts it): for the status page, curl and OpenAI clients."""
    key = _key(_load(config))
    if key is None:
        _out("error: this config has no [security] swarm_key_file: its HTTP API takes "
                   "the keys in [http] api_keys", err=True)
        raise typer.Exit(2)
    _out(http_token(key))


@app.command()
def doctor(
    config: Path | None = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="one JSON object (ok, findings)"),
    browse: float = typer.Option(2.0, "--browse", metavar="SECONDS",
                                 help="how long to listen for other nodes over mDNS"),
    model: bool = typer.Option(True, "--model/--no-model",
                               help="load the model and generate one token (a few seconds)"),
) -> None:
    """Check this machine for the swarm: address, multicast, mDNS, ports, peers, model.

    Each finding says what is wrong and how to fix it; the exit code is 1 when
    something is wrong (warnings alone give 0).
    """
    cfg = _load(config)
    from zswarm import doctor as checks

    try:
        findings = checks.run_checks(cfg, browse_s=browse, check_model=model)
    except ConfigError as exc:
        _out(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _out(checks.to_json(findings) if as_json else
               f"zswarm doctor ({cfg.source})\n{checks.render(findings)}")
    raise typer.Exit(1 if checks.failed(findings) else 0)


def _browse(cfg: Config, seconds: float, *, judge: bool) -> list[PeerInfo]:
    """Every node answering mDNS; ``judge``: say whether each would be a peer of this
    config's node (without a config there is no node to judge for)."""
    from zswarm.core.claims import foreign
    from zswarm.core.messages import Load, NodeCard
    from zswarm.net.addresses import choose_bind_address
    from zswarm.net.mdns import browse_for

    address = choose_bind_address(cfg.node.bind)
    key = _key(cfg)
    mine = key.fingerprint if key else ""

    me = NodeCard(node_id="browser", name="", model_id="", workers=0, rpc="", pub="",
                  swarm=cfg.federation.swarm, key=mine)

    def verdict(card: NodeCard) -> str:
        if not judge:
            return "key " + ("on" if card.key else "off")
        why = foreign(card, me)  # the nodes' own rule
        return f"not a peer: it {why}" if why else \
            "same swarm" + (", same key" if mine else " (open)")

    return [PeerInfo(node_id=f.card.node_id, name=f.card.name, address=f.address,
                     state="advertised", model_id=f.card.model_id, load=Load(),
                     last_seen_s=None, rtt_ms=None, source="mdns", rpc=f.card.rpc,
                     detail=f"{verdict(f.card)}: swarm {f.card.swarm}, "
                     f"protocol {f.proto}, {f.card.hardware}")
            for f in browse_for(address, seconds)]


def _serve_file(path: Path) -> None:
    _setup_logging(False)
    _serve(_load(path))


cli_swarm.register(app, ConfigOpt, _load, _key, _serve_file)


def main() -> None:
    app()
