"""Composition root: a node's local swarm (workers, scheduler, coordinator) and its RPC server.

``run_node(config, task_status=...)`` starts everything in one trio nursery,
reports its bound endpoints via ``task_status.started`` and serves until
cancelled. ``local_swarm(config)`` is the same local part without the network,
for ``zswarm ask --local`` and tests. The node writes ``node.json`` (pid and RPC
endpoint) into its state dir so the CLI finds it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
import zmq

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.consensus import STRATEGIES
from zswarm.core.ids import NodeId, new_node_id
from zswarm.core.messages import (
    ClientReply,
    ClientRequest,
    Error,
    Message,
    Status,
    StatusRequest,
)
from zswarm.errors import ConfigError, RemoteProtocolError, ZswarmError
from zswarm.net.addresses import choose_bind_address
from zswarm.net.zmq_trio import TrioSocket
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.workers import WorkerPool

log = logging.getLogger(__name__)


@dataclass
class LocalSwarm:
    config: Config
    pool: WorkerPool
    scheduler: Scheduler
    coordinator: Coordinator


@contextmanager
def single_errors() -> Iterator[None]:
    """Unwrap an exception group that holds exactly one ZswarmError (trio wraps nursery errors)."""
    try:
        yield
    except BaseExceptionGroup as group:
        matched, rest = group.split(ZswarmError)
        if matched is not None and rest is None and len(matched.exceptions) == 1:
            leaf = matched.exceptions[0]
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if isinstance(leaf, ZswarmError):
                raise leaf from None
        raise


@asynccontextmanager
async def local_swarm(config: Config) -> AsyncIterator[LocalSwarm]:
    """Workers loaded and a scheduler running, for the duration of the block."""
    scheduler = Scheduler(max_queue=config.scheduler.max_queue)
    pool = WorkerPool(config, scheduler)
    with single_errors():
        async with _local_swarm(config, scheduler, pool) as swarm:
            yield swarm


@asynccontextmanager
async def _local_swarm(config: Config, scheduler: Scheduler, pool: WorkerPool
                       ) -> AsyncIterator[LocalSwarm]:
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        coordinator = Coordinator(node_name=config.node.name, pool=pool, scheduler=scheduler,
                                  weights=config.consensus.weights,
                                  allow_truncated=config.consensus.allow_truncated)
        try:
            yield LocalSwarm(config, pool, scheduler, coordinator)
        finally:
            nursery.cancel_scope.cancel()


def load_node_id(config: Config) -> NodeId:
    """The node's persistent id (state_dir/node_id), created on first start."""
    path = config.state_path / "node_id"
    try:
        text = path.read_text().strip()
        if text:
            return NodeId(text)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"{config.source}: node.state_dir: cannot read {path}: {exc}") from exc
    node_id = new_node_id()
    try:
        config.state_path.mkdir(parents=True, exist_ok=True)
        path.write_text(node_id + "\n")
    except OSError as exc:
        raise ConfigError(f"{config.source}: node.state_dir: cannot write {path}: {exc}") from exc
    return node_id


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    name: str
    rpc_endpoint: str
    model_id: str
    workers: int


def _check_request(config: Config, msg: ClientRequest) -> None:
    gen = config.generation
    req = msg.request
    if msg.strategy is not None and msg.strategy not in STRATEGIES:
        raise RemoteProtocolError(f"unknown strategy {msg.strategy!r}")
    if req.n > gen.max_n:
        raise RemoteProtocolError(f"n={req.n} exceeds this node's limit of {gen.max_n}")
    if req.params.max_tokens > gen.max_tokens_limit:
        raise RemoteProtocolError(
            f"max_tokens={req.params.max_tokens} exceeds this node's limit of {gen.max_tokens_limit}")
    chars = sum(len(m.content) for m in req.messages) + len(req.prompt or "")
    if chars > gen.max_prompt_chars:
        raise RemoteProtocolError(
            f"prompt of {chars} characters exceeds this node's limit of {gen.max_prompt_chars}")
    if not req.messages and req.prompt is None:
        raise RemoteProtocolError("request has neither messages nor prompt")


async def _handle_client(swarm: LocalSwarm, sock: TrioSocket, ident: bytes, msg: ClientRequest,
                         limiter: trio.CapacityLimiter) -> None:
    config = swarm.config
    try:
        _check_request(config, msg)
        strategy = msg.strategy or config.consensus.strategy
        deadline_s = (msg.deadline_ms or config.scheduler.default_deadline_ms) / 1000
        answer, report = await swarm.coordinator.ask(
            msg.request, strategy=strategy, deadline_s=deadline_s)
        reply: Message = ClientReply(request_id=msg.request_id, answer=answer, report=report)
    except ZswarmError as exc:
        log.info("request %s failed: %s: %s", msg.request_id, exc.kind, exc)
        reply = Error(request_id=msg.request_id, kind=exc.kind, message=str(exc)[:4000])
    finally:
        limiter.release_on_behalf_of(msg.request_id)
    try:
        sock.send_multipart([ident, codec.encode(reply)])
    except (ZswarmError, trio.ClosedResourceError) as exc:
        log.info("could not deliver the reply to %s: %s", msg.request_id, exc)


async def serve_rpc(swarm: LocalSwarm, node_id: str, endpoint: str, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """The node's ROUTER socket for clients (zswarm ask/peers): one task per request."""
    config = swarm.config
    in_flight = trio.CapacityLimiter(config.scheduler.max_queue + len(swarm.pool.workers) * 4)
    with TrioSocket.open(zmq.ROUTER) as sock:
        bound = sock.bind(endpoint)
        task_status.started(bound)
        async with trio.open_nursery() as nursery:
            while True:
                frames = await sock.recv_multipart()
                if len(frames) != 2:
                    log.warning("rpc: dropping a message of %d frames", len(frames))
                    continue
                ident, data = frames
                try:
                    msg = codec.decode(data)
                except RemoteProtocolError as exc:
                    log.warning("rpc: bad message from a client: %s", exc)
                    _reply(sock, ident, Error(request_id=None, kind=exc.kind, message=str(exc)))
                    continue
                if isinstance(msg, StatusRequest):
                    _reply(sock, ident, _status(swarm, node_id, msg.request_id))
                elif isinstance(msg, ClientRequest):
                    try:
                        in_flight.acquire_on_behalf_of_nowait(msg.request_id)
                    except trio.WouldBlock:
                        _reply(sock, ident, Error(request_id=msg.request_id, kind="overloaded",
                                                  message="too many requests in flight"))
                        continue
                    nursery.start_soon(_handle_client, swarm, sock, ident, msg, in_flight)
                else:
                    _reply(sock, ident, Error(request_id=None, kind="protocol",
                                              message=f"unexpected message type {type(msg).__name__}"))


def _reply(sock: TrioSocket, ident: bytes, msg: Message) -> None:
    try:
        sock.send_multipart([ident, codec.encode(msg)])
    except ZswarmError as exc:
        log.info("rpc: could not reply: %s", exc)


def _status(swarm: LocalSwarm, node_id: str, request_id: str) -> Status:
    return Status(request_id=request_id, node_id=node_id, name=swarm.config.node.name,
                  model_id=swarm.pool.model_id, workers=len(swarm.pool.workers),
                  workers_ready=swarm.scheduler.workers_ready,
                  queue_depth=swarm.scheduler.queue_depth,
                  max_queue=swarm.scheduler.max_queue)


async def run_node(config: Config, *,
                   task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a node until cancelled: workers, scheduler, RPC endpoint, node.json."""
    node_id = load_node_id(config)
    host = choose_bind_address(config.node.bind)
    info_path = config.state_path / "node.json"
    with single_errors():
        await _run_node(config, node_id, host, info_path, task_status)


async def _run_node(config: Config, node_id: str, host: str, info_path: Path,
                    task_status: trio.TaskStatus[NodeInfo]) -> None:
    async with local_swarm(config) as swarm, trio.open_nursery() as nursery:
        rpc = await nursery.start(serve_rpc, swarm, node_id, f"tcp://{host}:{config.ports.rpc}")
        info = NodeInfo(node_id=node_id, name=config.node.name, rpc_endpoint=rpc,
                        model_id=swarm.pool.model_id, workers=len(swarm.pool.workers))
        _write_node_json(info_path, info)
        log.info("node %s (%s) serving %s on %s with %d worker(s)", info.name, node_id,
                 info.model_id, rpc, info.workers)
        task_status.started(info)
        try:
            await trio.sleep_forever()
        finally:
            _remove_node_json(info_path)


def _write_node_json(path: Path, info: NodeInfo) -> None:
    """Tell local clients where this node listens (a few bytes: written synchronously)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**dataclasses.asdict(info), "pid": os.getpid()}))
    tmp.replace(path)


def _remove_node_json(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
