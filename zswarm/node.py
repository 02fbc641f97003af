"""The composition root: builds one node from its config and runs it.

Nothing else in the package wires parts together. In order, ``run_node``:

1. holds the state dir (statedir.py: one node per directory), reads the node id,
   the swarm key, the bind address and the model's id (an
   unknown model fails here, before any port is taken);
2. binds every socket (HTTP, RPC, heartbeat publisher), so the node's card -
   who it is and where to reach it - is complete before anything serves;
3. builds the ``NodeContext`` (runtime/context.py) and passes it, with the parts
   each needs, into the worker pool, the federation (or ``NoPeers``), the
   coordinator, the RPC server and the HTTP shim - constructors only, nothing is
   set afterwards;
4. serves HTTP at once (503 "loading"), starts the workers (the node is then
   ready), the RPC server and the federation, and writes ``node.json`` (pid and
   RPC endpoint, for the CLI);
5. on ``drain``: ``ctx.drain()`` (new work refused, peers told), waits for the
   requests in flight (``NodeContext.requests``, at most ``node.drain_timeout_ms``).

Layering: core (pure) <- net, engines <- runtime <- http <- node.py <- cli/; no
module imports one to its right (docs/architecture.md has the whole map).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from functools import partial
from pathlib import Path

import msgspec
import psutil
import trio

from zswarm import cores, statedir
from zswarm.config import Config, ModelEntry
from zswarm.core.ids import pinned
from zswarm.errors import ConfigError, ModelNotFound, ZswarmError
from zswarm.http.base import HttpNode
from zswarm.http.server import open_listener, serve_http
from zswarm.net.addresses import choose_bind_address
from zswarm.net.bus import Publisher
from zswarm.net.guard import FrameDrops
from zswarm.net.security import Credentials, SwarmKey, swarm_key
from zswarm.pull import local_model, pulled, remote_id, wanted
from zswarm.runtime.backlinks import Backlinks
from zswarm.runtime.connections import MAX_INBOUND, Inbound
from zswarm.runtime.context import NodeContext, NoPeers, Peers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.federation import Federation
from zswarm.runtime.local import (
    Remote,
    build_models,
    entries,
    node_card,
    serving,
    single_errors,
)
from zswarm.runtime.members import Remembered
from zswarm.runtime.overview import report_first_peers
from zswarm.runtime.rpc import RpcServer, open_endpoint
from zswarm.runtime.sharing import ModelShelf
from zswarm.runtime.stats import NodeStats
from zswarm.statedir import NodeInfo

log = logging.getLogger(__name__)


async def run_node(config: Config, *, drain: trio.Event | None = None,
                   task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node until cancelled, or until ``drain`` is set (then drain and return)."""
    with single_errors():
        await _run_node(config, drain if drain is not None else trio.Event(), task_status)


async def _run_node(config: Config, drain: trio.Event,
                    task_status: trio.TaskStatus[NodeInfo]) -> None:
    raise_fd_limit()
    with closing(statedir.lock(config)):  # a second node on this state dir stops here
        await _run_locked(config, drain, task_status)


async def _run_locked(config: Config, drain: trio.Event,
                      task_status: trio.TaskStatus[NodeInfo]) -> None:
    node_key = statedir.load_node_key(config)
    node_id = node_key.node_id
    stats, drops = NodeStats(), FrameDrops()
    key = swarm_key(config.security.swarm_key_file, source=config.source)
    fed_cfg = config.federation
    if key is None and fed_cfg.enabled:
        log.warning("OPEN SWARM: no [security] swarm_key_file, so any host on this LAN can "
                    "join, read votes and ask this node to generate (zswarm keygen makes a key)")
    host = choose_bind_address(config.node.bind)
    if config.http.enabled and key is None and not config.api_keys() \
            and not host.startswith("127."):
        log.warning("OPEN HTTP: no API key and no swarm key, so any host on this LAN can "
                    "ask this node to generate and read its status at http://%s:%d "
                    "(set [http] api_keys, or a swarm key)", host, config.ports.http)
    config = await trio.to_thread.run_sync(_share_cores, config)
    swarm: list[Federation] = []  # set below: a model pulled on demand asks its members

    def members() -> list[str]:
        alive = [pinned(p.card.rpc, p.card.public) for f in swarm for p in f.table.alive()
                 if p.card.rpc]
        return list(dict.fromkeys([*fed_cfg.peers, *alive]))

    chosen, remote = await trio.to_thread.run_sync(partial(_pulled_entries, config, key,
                                                           members))
    models = await trio.to_thread.run_sync(partial(
        build_models, config, chosen, stats=stats, drops=drops.counter("workers"),
        remote=remote))
    ports = config.ports
    creds = Credentials(node_key, key)
    with ExitStack() as sockets:  # every socket bound before anything serves
        listener = None
        if config.http.enabled:
            with _binding(config, "http", host):
                listener = sockets.enter_context(open_listener(host, ports.http))
        with _binding(config, "rpc", host):
            rpc_sock, rpc_endpoint = open_endpoint(f"tcp://{host}:{ports.rpc}", creds)
        sockets.callback(rpc_sock.close)
        publisher = None
        if fed_cfg.enabled:  # closed last: the goodbye heartbeat goes out before
            with _binding(config, "pub", host):
                publisher = Publisher(f"tcp://{host}:{ports.pub}", creds=creds)
            sockets.callback(publisher.close)
        card = node_card(config, models, node_id=node_id, rpc=rpc_endpoint,
                         pub=publisher.endpoint if publisher else "",
                         http=listener.getsockname()[1] if listener else 0,
                         hardware=hardware_summary(), key=key.fingerprint if key else "",
                         public=node_key.public)
        ctx = NodeContext(config, card, models, key=key, creds=creds, stats=stats,
                          drops=drops)
        shelf = ModelShelf(models.files, busy=models.busy)
        # requests peers ask back over links this node opened, for the RPC server
        asked_back, inbound = trio.open_memory_channel[Inbound](MAX_INBOUND)
        federation = (Federation(ctx, publisher, mdns_address=host, inbound=asked_back,
                                 backlinks=Backlinks(rpc_sock, ctx.drops.counter("backlinks")),
                                 remembered=Remembered(config))
                      if publisher is not None else None)
        peers: Peers = federation if federation is not None else NoPeers()
        swarm.extend([federation] if federation is not None else [])
        coordinator = Coordinator(ctx, peers)
        rpc = RpcServer(ctx, rpc_sock, coordinator, peers, shelf, inbound=inbound)
        async with trio.open_nursery() as nursery:
            if listener is not None:  # first, so /health can say "loading"
                await nursery.start(serve_http, HttpNode(ctx, coordinator, peers, nursery),
                                    listener)
            async with serving(ctx, models), trio.open_nursery() as servers:
                await servers.start(rpc.serve)
                if federation is not None:
                    await servers.start(federation.serve)
                    servers.start_soon(report_first_peers, config, federation, host)
                info = _announce(config, ctx, host)
                task_status.started(info)
                try:
                    await drain.wait()
                    await _drain(ctx)
                finally:
                    statedir.remove(config)
                servers.cancel_scope.cancel()  # RPC and federation (goodbye) before the workers
            nursery.cancel_scope.cancel()


def _pulled_entries(config: Config, key: SwarmKey | None,
                    members: Callable[[], list[str]]
                    ) -> tuple[list[ModelEntry], dict[int, Remote]]:
    """The node's models (runtime/local.entries), each ``swarm:`` one pulled from the
    members that hold it when it is not here yet (pull.py; its sha256 checked) - or,
    for one neither pinned nor preloaded, only its id learned: its first load pulls it
    (from ``members()``: the [federation] peers and the members alive then)."""
    out: list[ModelEntry] = []
    remote: dict[int, Remote] = {}
    left: list[str] = []
    for entry in entries(config):
        cfg = config.for_model(entry)
        if wanted(cfg) is not None and pulled(cfg) is None \
                and not (entry.pinned or entry.preload):
            try:
                mid = remote_id(cfg, key)
            except ZswarmError as exc:
                log.warning("model %s is left out until the next start: %s", entry.path, exc)
                left.append(str(exc))
                continue
            remote[len(out)] = Remote(mid, members, partial(_pull_later, cfg, key))
            out.append(entry)
            continue
        progress = _PullLog()
        found = local_model(cfg, key, progress=progress).model.path
        if found != entry.path:
            log.info("model %s: %s (%s; its sha256 matches the model's id)", entry.path, found,
                     "pulled" if progress.pulled else "pulled before")
            entry = msgspec.structs.replace(entry, path=found)
        out.append(entry)
    if not out:
        raise ModelNotFound("no model to serve: " + "; ".join(left))
    return out, remote


def _pull_later(config: Config, key: SwarmKey | None, members: list[str]) -> Path:
    return Path(local_model(config, key, progress=_PullLog(), members=members).model.path)


def _share_cores(config: Config) -> Config:
    """Beside other nodes of this machine, threads = "auto" takes the cores they leave
    (zswarm/cores.py); threads that exceed the cores are said, with what to change."""
    others = cores.other_nodes()
    if others and config.model.threads == 0:
        threads = cores.share(others, config.node.workers)
        log.info("%d other zswarm node(s) run on this machine: each worker of this one takes "
                 "%d of its %d cores ([model] threads to choose)", len(others), threads,
                 cores.cores())
        config = msgspec.structs.replace(
            config, model=msgspec.structs.replace(config.model, threads=threads),
            models=[msgspec.structs.replace(m, threads=m.threads or threads)
                    for m in config.models])
    said = cores.advice(config, others)
    if said:
        log.warning("%s", said)
    return config


@contextmanager
def _binding(config: Config, port: str, host: str) -> Iterator[None]:
    """A port that cannot be bound is a config error naming the key (in use, not local)."""
    try:
        yield
    except OSError as exc:
        number = getattr(config.ports, port)
        raise ConfigError(f"{config.source}: ports.{port}: cannot listen on {host}:{number}: "
                          f"{exc.strerror or exc}") from None


def _announce(config: Config, ctx: NodeContext, host: str) -> NodeInfo:
    """Write node.json and log the banner."""
    card = ctx.card
    info = NodeInfo(node_id=card.node_id, name=card.name, host=host,
                    rpc_endpoint=pinned(card.rpc, card.public),
                    pub_endpoint=card.pub, http_port=card.http, model_id=card.model_id,
                    workers=card.workers, federation=bool(card.pub), swarm_key=card.key)
    statedir.write(config, info)
    log.info("node %s (%s) on %s: rpc %s, pub %s, http %s, model %s, %d worker(s), "
             "federation %s", info.name, info.node_id, host, info.rpc_endpoint, card.pub or "-",
             card.http or "-", info.model_id, info.workers,
             f"on ({config.federation.discovery})" if info.federation else "off")
    return info


async def _drain(ctx: NodeContext) -> None:
    """Refuse new work, tell peers (heartbeats say "draining"), wait for the requests in flight."""
    ctx.drain()
    timeout_s = ctx.config.node.drain_timeout_s
    log.info("draining: refusing new requests, waiting up to %.0f s for %d in flight",
             timeout_s, ctx.requests.count)
    with trio.move_on_after(timeout_s) as scope:
        await ctx.requests.idle()
    if scope.cancelled_caught:
        log.warning("drain timeout: stopping with %d request(s) in flight", ctx.requests.count)


def raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard limit (many desktops start at 1,024).

    Every peer costs a few descriptors and a LAN can open connections to our ports; the
    node also bounds what it opens (peer table, probe limiter) and survives running out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.debug("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)


def hardware_summary() -> str:
    return f"{os.cpu_count() or 1} cpu, {round(psutil.virtual_memory().total / 2**30)} GiB"


class _PullLog:
    """A pull at start (a Progress callback), logged every 5 s (the CLI's pull draws a bar
    instead); whether it pulled anything, for the line that says the file is verified."""

    def __init__(self) -> None:
        self.last = 0.0
        self.pulled = False

    def __call__(self, done: int, total: int, rate: float) -> None:
        self.pulled = True
        now = time.monotonic()
        if now - self.last >= 5 or done == total:
            self.last = now
            log.info("pulling the model: %.0f of %.0f MiB (%.1f MiB/s)", done / 2**20,
                     total / 2**20, rate / 2**20)
