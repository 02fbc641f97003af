"""Composition root: a node's local swarm (runtime/swarm.py), RPC, HTTP and federation.

``run_node(config, task_status=...)`` starts everything in one trio nursery,
reports its bound endpoints via ``task_status.started`` and serves until
cancelled. The node writes ``node.json`` (pid and RPC
endpoint) into its state dir so the CLI finds it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import trio

from zswarm.config import Config
from zswarm.core.ids import NodeId, new_node_id
from zswarm.core.messages import Load, NodeCard
from zswarm.errors import ConfigError
from zswarm.http.app import serve_http
from zswarm.http.base import HttpNode
from zswarm.net.addresses import choose_bind_address
from zswarm.net.bus import Publisher
from zswarm.net.guard import FrameDrops
from zswarm.net.security import SwarmKey, swarm_key
from zswarm.runtime.federation import Federation, hardware_summary
from zswarm.runtime.rpc import RpcServer
from zswarm.runtime.swarm import local_swarm, single_errors

log = logging.getLogger(__name__)


def load_node_id(config: Config) -> NodeId:
    """The node's persistent id (state_dir/node_id), created on first start."""
    path = config.state_path / "node_id"
    try:
        with path.open("rb") as f:
            text = f.read(100).decode("ascii", errors="replace").strip()
        if text:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
                raise ConfigError(f"{config.source}: node.state_dir: {path} does not hold a "
                                  "node id (damaged?); delete it and a new id is made")
            return NodeId(text)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"{config.source}: node.state_dir: cannot read {path}: "
                          f"{exc.strerror or exc}") from exc
    node_id = new_node_id()
    try:
        config.state_path.mkdir(parents=True, exist_ok=True)
        path.write_text(node_id + "\n")
    except OSError as exc:
        raise ConfigError(f"{config.source}: node.state_dir: cannot write {path}: "
                          f"{exc.strerror or exc}") from exc
    return node_id


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    name: str
    host: str
    rpc_endpoint: str
    pub_endpoint: str
    http_port: int
    model_id: str
    workers: int
    federation: bool
    #: fingerprint of the swarm key ("" = an open swarm)
    swarm_key: str = ""


async def run_node(config: Config, *, drain: trio.Event | None = None,
                   task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node: HTTP (503 while loading), workers, scheduler, RPC, federation, node.json.

    Serves until cancelled, or until ``drain`` is set: then it refuses new requests,
    tells peers it is draining, lets the requests in flight finish (at most
    ``node.drain_timeout_ms``) and returns.
    """
    node_id = load_node_id(config)
    key = swarm_key(config.security.swarm_key_file, source=config.source)
    if key is None and config.federation.enabled:
        log.warning("OPEN SWARM: no [security] swarm_key_file, so any host on this LAN can "
                    "join, read votes and ask this node to generate (zswarm keygen makes a key)")
    host = choose_bind_address(config.node.bind)
    info_path = config.state_path / "node.json"
    with single_errors():
        await _run_node(config, node_id, host, info_path,
                        drain if drain is not None else trio.Event(), key, task_status)


async def _run_node(config: Config, node_id: str, host: str, info_path: Path, drain: trio.Event,
                    key: SwarmKey | None, task_status: trio.TaskStatus[NodeInfo]) -> None:
    fed_cfg = config.federation
    drops = FrameDrops()
    async with trio.open_nursery() as outer:
        web = HttpNode(config, None, lambda: Load(state="loading"), outer, drops=drops)
        http_port = 0
        if config.http.enabled:  # up first, so /health can say "loading"
            http_port = await outer.start(serve_http, web, host, config.ports.http)
        async with local_swarm(config, drops) as swarm:
            rpc = RpcServer(swarm, f"tcp://{host}:{config.ports.rpc}", key=key,
                            drops=drops.counter("rpc"))
            publisher = (Publisher(f"tcp://{host}:{config.ports.pub}", key=key)
                         if fed_cfg.enabled else None)
            try:  # the publisher outlives the nursery: the goodbye heartbeat goes out
                async with trio.open_nursery() as nursery:
                    card = NodeCard(
                        node_id=node_id, name=config.node.name, model_id=swarm.pool.model_id,
                        workers=len(swarm.pool.workers), rpc=rpc.endpoint,
                        pub=publisher.endpoint if publisher else "", http=http_port,
                        swarm=fed_cfg.swarm, hardware=hardware_summary(),
                        key=key.fingerprint if key else "")
                    rpc.card = web.card = card
                    web.coordinator, web.load = swarm.coordinator, rpc.load
                    await nursery.start(rpc.serve)
                    federation = None
                    if publisher is not None:
                        federation = Federation(config, card, publisher, rpc.load,
                                                mdns_address=host, drops=drops, key=key)
                        await nursery.start(federation.serve)
                        rpc.federation = web.federation = swarm.coordinator.federation = federation
                    info = NodeInfo(node_id=node_id, name=card.name, host=host,
                                    rpc_endpoint=rpc.endpoint, pub_endpoint=card.pub,
                                    http_port=http_port, model_id=card.model_id,
                                    workers=card.workers, federation=publisher is not None,
                                    swarm_key=card.key)
                    _write_node_json(info_path, info, config.source)
                    log.info("node %s (%s) on %s: rpc %s, pub %s, http %s, model %s, "
                             "%d worker(s), federation %s", info.name, node_id, host, rpc.endpoint,
                             card.pub or "-", http_port or "-", info.model_id, info.workers,
                             f"on ({fed_cfg.discovery})" if info.federation else "off")
                    task_status.started(info)
                    try:
                        await drain.wait()
                        await _drain(config, rpc, web, federation)
                    finally:
                        _remove_node_json(info_path)
                    nursery.cancel_scope.cancel()
            finally:
                if publisher is not None:
                    publisher.close()
        outer.cancel_scope.cancel()


async def _drain(config: Config, rpc: RpcServer, web: HttpNode,
                 federation: Federation | None) -> None:
    """Refuse new work, tell peers, and wait (bounded) for the requests in flight."""
    rpc.draining = web.draining = True
    if federation is not None:
        federation.state = "draining"
    timeout_s = config.node.drain_timeout_ms / 1000
    log.info("draining: refusing new requests, waiting up to %.0f s for %d in flight",
             timeout_s, rpc.in_flight + web.in_flight)
    with trio.move_on_after(timeout_s) as scope:
        # two counters owned by two servers: polling them 20 times a second is simplest
        while rpc.in_flight + web.in_flight:  # noqa: ASYNC110
            await trio.sleep(0.05)
    if scope.cancelled_caught:
        log.warning("drain timeout: stopping with %d request(s) in flight",
                    rpc.in_flight + web.in_flight)


def _write_node_json(path: Path, info: NodeInfo, source: str) -> None:
    """Tell local clients where this node listens (a few bytes: written synchronously)."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({**dataclasses.asdict(info), "pid": os.getpid()}))
        tmp.replace(path)
    except OSError as exc:  # disk full, read-only, not a directory: say which file
        raise ConfigError(f"{source}: node.state_dir: cannot write {tmp}: "
                          f"{exc.strerror or exc}") from exc


def _remove_node_json(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
