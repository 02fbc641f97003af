"""Joining a swarm from the command line: `zswarm models`, `zswarm pull`, `zswarm join`.

The work is zswarm/pull.py's; join writes swarm.toml, checks its ports, pulls the
model and runs the node (cli/node.py's ``serve_file``). Exit codes: cli/common.py's
policy.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import tomli_w
import typer

from zswarm import client, cores, doctor, statedir
from zswarm.cli.common import ConfigOpt, NodeOpt, app, exit_code, fail, failed, key_of, load
from zswarm.cli.node import serve_file
from zswarm.config import Config, load_config, parse_config
from zswarm.core.catalog import held_by
from zswarm.core.ids import new_request_id
from zswarm.core.messages import ModelOffer, ModelRequest, PeersReply
from zswarm.core.names import shown
from zswarm.errors import ModelNotFound, PeerUnavailable, ZswarmError
from zswarm.net.security import SwarmKey, swarm_key
from zswarm.pull import Progress, holders, models_dir, pull
from zswarm.views import say

DirOpt = typer.Option(None, "--dir", metavar="DIR", show_default=False,
                      help="default: STATE_DIR/models")
KeyFileOpt = typer.Option(None, "--key", metavar="FILE", show_default=False,
                          help="the swarm's key file")
NameOpt = typer.Option(socket.gethostname() or "zswarm", "--name", metavar="NAME",
                       help="this node's name")
StateDirOpt = typer.Option(None, "--state-dir", metavar="DIR", show_default=False,
                           help="default: ~/.local/state/zswarm")
def PortOpt(name: str, default: int) -> Any:  # noqa: N802 - a typer option, like the others
    return typer.Option(None, f"--{name}-port", metavar="PORT", show_default=False,
                        help=f"0 = any free port (default: {default})")


def _another_node_here(bind: str) -> bool:
    """Does something hold this machine's default zswarm ports (another node, most likely)?"""
    try:
        return bool(doctor.ports_taken(parse_config({"node": {"bind": bind}})))
    except ZswarmError:
        return False


OutOpt = typer.Option(Path("swarm.toml"), "--config", "-c", metavar="FILE",
                      help="the swarm.toml to write")


def _fail(exc: ZswarmError) -> NoReturn:
    failed(exc, " (is a node listening there? A keyed swarm answers only holders of its "
           "key: [security] swarm_key_file)" if isinstance(exc, PeerUnavailable) else "")


def _member(cfg: Config, key: SwarmKey | None, node: str | None) -> str:
    endpoint = node or client.running_node_endpoint(cfg, key=key)
    if endpoint is None:
        peers = cfg.federation.peers
        if peers:
            return peers[0]
        fail(f"no node is running with {cfg.source}, and it names no [federation] peers: "
             "pass --node tcp://host:port of any member", 1)
    return endpoint


def swarm_models(reply: PeersReply, key: SwarmKey | None) -> list[dict[str, Any]]:
    """Each model in the swarm: its id, name, size (asked of one holder) and holders,
    each with the model's state there (core/catalog.py)."""
    states: dict[str, list[dict[str, str]]] = {}
    members = [(reply.node, reply.load)] + [(p, p.load) for p in reply.peers
                                            if p.state == "alive" and p.model_id]
    names = shown((who.node_id, who.name) for who, _ in members)  # two "pi"s differ
    for who, figures in members:
        for held, state in held_by(who, figures):
            states.setdefault(held.model_id, []).append(
                {"node": names[who.node_id], "state": state, "name": held.name})
    out = []
    for model_id in sorted(states):
        try:
            _, found = holders(reply, model_id)
        except ModelNotFound:  # a member's card without an RPC endpoint
            found = []
        size = None
        for holder in found[:2]:
            try:
                with client.NodeClient(holder.rpc, key=key) as node:
                    rid = new_request_id()
                    offer = node.exchange(ModelRequest(request_id=rid, model_id=model_id),
                                          rid, 3.0)
                if isinstance(offer, ModelOffer):
                    size = offer.size
                    break
            except ZswarmError:
                continue
        out.append({"model_id": model_id, "name": model_id.split("@")[0], "size": size,
                    "holders": [h["node"] for h in states[model_id]],
                    "states": states[model_id]})
    return out


def _bar() -> Progress:
    """A progress bar with rate and ETA on stderr, drawn at most 10 times a second."""
    last = [0.0]

    def draw(done: int, total: int, rate: float) -> None:
        now = time.monotonic()
        if now - last[0] < 0.1 and done < total:
            return
        last[0] = now
        width = 30
        filled = int(width * done / total) if total else width
        eta = (total - done) / rate if rate > 0 else 0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done / 2**20:7.1f}/"
                         f"{total / 2**20:.1f} MiB {rate / 2**20:6.1f} MiB/s ETA {eta:4.0f} s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return draw


@app.command()
def models(config: Path | None = ConfigOpt,
           node: str | None = NodeOpt,
           as_json: bool = typer.Option(False, "--json", help="print a JSON array")) -> None:
    """The models in the swarm: id, size and the members that serve them."""
    cfg = load(config)
    key = key_of(cfg)
    try:
        found = swarm_models(client.peers(_member(cfg, key, node), key=key), key)
    except ZswarmError as exc:
        _fail(exc)
    if as_json:
        say(json.dumps(found, ensure_ascii=False))
        return
    for m in found:
        size = f"{m['size'] / 2**20:.0f} MiB" if m["size"] is not None else "size unknown"
        on = ", ".join(f"{h['node']} ({h['state']})" for h in m["states"])
        named = sorted({h["name"] for h in m["states"] if h["name"]})
        say(f"{m['model_id']}  {size}  " + (f"named {', '.join(named)}  " if named else "")
            + f"on {on}")

@app.command("pull")
def pull_cmd(model: str = typer.Argument(..., metavar="MODEL", hidden=True),
             config: Path | None = ConfigOpt,
             node: str | None = NodeOpt,
             directory: Path | None = DirOpt,
             as_json: bool = typer.Option(False, "--json", help="one JSON line")) -> None:
    """Fetch MODEL (a name or id from `zswarm models`) from the members that hold it
    (checked, resumable)."""
    cfg = load(config)
    key = key_of(cfg)
    bar = _bar() if sys.stderr.isatty() and not as_json else None
    try:
        result = pull(_member(cfg, key, node), model, directory or models_dir(cfg), key=key,
                      progress=bar)
    except ZswarmError as exc:
        _fail(exc)
    if as_json:
        say(json.dumps({"path": str(result.path), "model_id": result.model_id,
                         "bytes": result.size, "seconds": round(result.seconds, 3),
                         "resumed_bytes": result.resumed_bytes, "holders": result.holders,
                         "bad_pieces": result.bad_pieces}))
    else:
        say(f"{result.model_id} -> {result.path} ({result.size / 2**20:.1f} MiB in "
             f"{result.seconds:.1f} s from {', '.join(result.holders) or 'nobody: there'})")

@app.command()
def join(address: str = typer.Argument(..., metavar="ADDRESS", hidden=True),
         key_file: Path | None = KeyFileOpt,
         out: Path = OutOpt,
         name: str = NameOpt,
         state_dir: Path | None = StateDirOpt,
         bind: str = typer.Option("auto", "--bind", metavar="ADDRESS",
                                  help='address to listen on, or "auto"'),
         rpc_port: int | None = PortOpt("rpc", 17617),
         pub_port: int | None = PortOpt("pub", 17616),
         http_port: int | None = PortOpt("http", 17615),
         threads: int | None = typer.Option(
             None, "--threads", metavar="N", show_default=False,
             help="threads of the worker (default: all cores, or half of them when "
             "another node already runs on this machine)"),
         start: bool = typer.Option(True, "--start/--no-start",
                                    help="run the node once written")) -> None:
    """From nothing to a member of the swarm at ADDRESS (tcp://host:port?key=KEY of any
    member): write swarm.toml, check its ports, pull the model, start the node."""
    if out.exists():
        fail(f"{out} exists; join writes a new one (pass --config elsewhere.toml, or use "
             f"zswarm node --config {out})", 2)
    try:
        key = swarm_key(str(key_file.resolve()) if key_file else "", source="--key")
        client.reach(address, key=key, timeout_s=5.0, key_hint="--key FILE")
        member = client.peers(address, key=key, timeout_s=5.0)
    except ZswarmError as exc:  # reach says why a member does not answer
        fail(str(exc), exit_code(exc))
    node: dict[str, Any] = {"name": name, "bind": bind}
    doc: dict[str, Any] = {"node": node}
    default = parse_config({})
    if state_dir is None and statedir.in_use(default):
        state_dir = out.resolve().parent / "state"
        say(f"another node uses {default.node.state_dir}: this one keeps its id and "
            f"models in {state_dir} (--state-dir DIR to choose)", err=True)
    if state_dir is not None:
        node["state_dir"] = str(state_dir.resolve())
    ports = {k: v for k, v in (("rpc", rpc_port), ("pub", pub_port), ("http", http_port))
             if v is not None}
    if ports:
        doc["ports"] = ports
    others = cores.other_nodes()
    if threads is None and (others or _another_node_here(bind)):
        threads = cores.share(others) if others else max(1, cores.cores() // 2)
        say(f"another node runs on this machine: the worker gets {threads} of its "
            f"{cores.cores()} cores (--threads N to choose)", err=True)
    doc["model"] = {"path": "swarm:" + member.node.model_id}
    if threads is not None:
        doc["model"]["threads"] = threads
    doc["federation"] = {"swarm": member.node.swarm, "discovery": "both", "peers": [address]}
    if key_file is not None:
        doc["security"] = {"swarm_key_file": str(key_file.resolve())}
    out.write_text(tomli_w.dumps(doc))
    try:
        written = load_config(out)
    except ZswarmError as exc:
        out.unlink()
        _fail(exc)
    taken = doctor.ports_taken(written)  # before a model is pulled for nothing
    if taken:
        out.unlink()
        for finding in taken:
            say(f"error: {finding.message}", err=True)
        say("pass free ports: --rpc-port N --pub-port N --http-port N (0 = any free "
            "port); nothing was written or pulled", err=True)
        raise typer.Exit(2)
    say(f"wrote {out}: member of swarm {member.node.swarm!r} through {member.node.name}, "
         f"model {member.node.model_id}", err=True)
    if start:
        serve_file(out)
