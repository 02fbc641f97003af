"""`zswarm peers`: the peers a node knows (a list, JSON, or a live table), or every node
answering mDNS (--browse, no node needed, each judged by the nodes' own rule).
Exit codes: cli/common.py's policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zswarm import client, views
from zswarm.cli.common import ConfigOpt, NodeOpt, app, fail, failed, key_of, load
from zswarm.config import Config
from zswarm.core.ids import pinned
from zswarm.core.messages import PeerInfo
from zswarm.errors import ZswarmError
from zswarm.net.security import SwarmKey
from zswarm.runtime import members


@app.command()
def peers(
    config: Path | None = ConfigOpt,
    node_endpoint: str | None = NodeOpt,
    as_json: bool = typer.Option(False, "--json", help="print a JSON array"),
    browse: float | None = typer.Option(None, "--browse", metavar="SECONDS",
                                        help="no node needed: browse mDNS this long (2 s or more: "
                                        "responders answer a record at most once a second)"),
    watch: bool = typer.Option(False, "--watch", "-w",
                               help="a live table, refreshed every second (Ctrl-C to stop)"),
    forget: str | None = typer.Option(None, "--forget", metavar="ID",
                                      help="no longer remember the member with this id (or "
                                      "its first characters): it is not probed after a "
                                      "restart, and believed again only when it is found"),
) -> None:
    """List the peers a node knows (or, with --browse, every node answering mDNS)."""
    cfg = load(config)
    if forget is not None:
        gone = members.forget(cfg, forget)
        if not gone:
            fail(f"no remembered member's id starts with {forget!r} "
                 f"({cfg.state_path / 'members.json'})", 1)
        for m in gone:
            views.say(f"forgot {m.name} ({m.node_id}) at {m.address}")
        return
    if browse is not None:
        found = _browse(cfg, browse, judge=config is not None)
        if as_json:
            views.say(json.dumps([views.peer_json(p) for p in found], ensure_ascii=False))
        else:
            views.say(views.peer_text(found) if found else
                       f"no zswarm node answered mDNS within {browse:g} s (try zswarm doctor)")
        return
    key = key_of(cfg)
    started = None if node_endpoint else client.node_json(cfg)
    if started is not None and not client.alive(started[0]):
        started = None  # that node is gone
    endpoint = node_endpoint or (started[1] if started else None)
    if endpoint is None:
        fail(f"no node is running with {cfg.source} (start one with `zswarm node`, pass "
             "--node tcp://host:port?key=KEY, or use --browse 2)", 1)
    try:
        with client.NodeClient(endpoint, key=key) as node:
            try:  # the same first exchange as ask: a silent node is explained (a key?)
                node.reach()
            except ZswarmError as exc:
                mismatch = client.key_mismatch(cfg, key) if started is not None else ""
                fail(mismatch or str(exc), 1)
            reply = None if watch else node.peers()
    except ZswarmError as exc:
        failed(exc)
    if reply is None:
        _watch_peers(endpoint, key)
        return
    if as_json:
        views.say(json.dumps([views.peer_json(p) for p in reply.peers], ensure_ascii=False))
        return
    views.say(f"this node {reply.node.name} ({reply.node.node_id}): "
              f"{pinned(reply.node.rpc, reply.node.public)}")
    views.say(f"swarm key {views.key_state(reply.node.key)}")
    views.say(views.peer_summary(reply.peers))
    if reply.peers:
        views.say(views.peer_text(reply.peers))


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


def _browse(cfg: Config, seconds: float, *, judge: bool) -> list[PeerInfo]:
    """Every node answering mDNS; ``judge``: say whether each would be a peer of this
    config's node (without a config there is no node to judge for)."""
    from zswarm.core.claims import foreign
    from zswarm.core.messages import Load, NodeCard
    from zswarm.net.addresses import choose_bind_address
    from zswarm.net.mdns import browse_for

    address = choose_bind_address(cfg.node.bind)
    key = key_of(cfg)
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
                     public=f.card.public,
                     detail=f"{verdict(f.card)}: swarm {f.card.swarm}, "
                     f"protocol {f.proto}, {f.card.hardware}")
            for f in browse_for(address, seconds)]
