"""The node's RPC endpoint (ZMQ ROUTER): clients' requests and peers' votes.

Owns: decoding each frame (bad ones get an Error reply and a rate-limited log
line), the node's limits on requests, one task per request bounded by a
capacity limiter (Overloaded beyond it), serving VoteRequests from the local
workers only (one hop) and stopping them on Cancel, and answering Status and
Peers requests. It must not: plan fan-out or decide (the Coordinator does).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio
import zmq

from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.messages import (
    Cancel,
    ClientReply,
    ClientRequest,
    Error,
    GenerateRequest,
    Load,
    Message,
    NodeCard,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
    Vote,
    VoteRequest,
)
from zswarm.core.plan import ASK_STRATEGIES
from zswarm.errors import RemoteProtocolError, ZswarmError
from zswarm.net.bus import DropCounter
from zswarm.net.zmq_trio import TrioSocket

if TYPE_CHECKING:
    from zswarm.runtime.federation import Federation
    from zswarm.runtime.node import LocalSwarm

log = logging.getLogger(__name__)


def check_request(config: Config, req: GenerateRequest, strategy: str | None = None) -> None:
    """This node's limits on a request (beyond the wire limits the codec enforces)."""
    gen = config.generation
    if strategy is not None and strategy not in ASK_STRATEGIES:
        raise RemoteProtocolError(f"unknown strategy {strategy!r}")
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


class RpcServer:
    """Bind at construction (so the endpoint can be advertised), then ``nursery.start(serve)``."""

    def __init__(self, swarm: LocalSwarm, endpoint: str) -> None:
        self.swarm = swarm
        self.config = swarm.config
        self.sock = TrioSocket.open(zmq.ROUTER)
        self.endpoint = self.sock.bind(endpoint)
        self.card: NodeCard | None = None
        self.federation: Federation | None = None
        self.drops = DropCounter("rpc")
        self._votes: dict[tuple[bytes, str], trio.CancelScope] = {}
        workers = len(swarm.pool.workers)
        self._in_flight = trio.CapacityLimiter(self.config.scheduler.max_queue + workers * 4)
        #: set while the node drains: new requests and votes are refused
        self.draining = False

    @property
    def in_flight(self) -> int:
        return int(self._in_flight.borrowed_tokens)

    def load(self) -> Load:
        s = self.swarm.scheduler
        return Load(state="draining" if self.draining else "ready",
                    workers_ready=s.workers_ready, idle_workers=s.idle_workers,
                    queue_depth=s.queue_depth, max_queue=s.max_queue,
                    tokens_per_s=self.swarm.coordinator.tokens.rate())

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        assert self.card is not None, "set the node card before serving"
        with self.sock:
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    frames = await self.sock.recv_multipart()
                    if len(frames) != 2:
                        self.drops.drop("multi-frame", f"{len(frames)} frames")
                        continue
                    self._dispatch(nursery, *frames)

    def _dispatch(self, nursery: trio.Nursery, ident: bytes, data: bytes) -> None:
        try:
            msg = codec.decode(data)
        except RemoteProtocolError as exc:
            self.drops.drop("malformed", str(exc))
            self._reply(ident, Error(request_id=None, kind=exc.kind, message=str(exc)))
            return
        assert self.card is not None
        if isinstance(msg, StatusRequest):
            self._reply(ident, Status(request_id=msg.request_id, card=self.card, load=self.load()))
        elif isinstance(msg, PeersRequest):
            peers = self.federation.peers() if self.federation is not None else []
            self._reply(ident, PeersReply(request_id=msg.request_id, node=self.card, peers=peers))
        elif isinstance(msg, Cancel):
            scope = self._votes.get((ident, msg.request_id))
            if scope is not None:
                scope.cancel()
        elif isinstance(msg, (ClientRequest, VoteRequest)):
            if self.draining:
                self._reply(ident, Error(request_id=msg.request_id, kind="overloaded",
                                         message="the node is draining (shutting down)"))
                return
            try:
                self._in_flight.acquire_on_behalf_of_nowait(msg.request_id)
            except trio.WouldBlock:
                self._reply(ident, Error(request_id=msg.request_id, kind="overloaded",
                                         message="too many requests in flight"))
                return
            if isinstance(msg, ClientRequest):
                nursery.start_soon(self._client, ident, msg)
            else:
                nursery.start_soon(self._vote, ident, msg)
        else:
            self.drops.drop("unexpected", type(msg).__name__)
            self._reply(ident, Error(request_id=None, kind="protocol",
                                     message=f"unexpected message type {type(msg).__name__}"))

    async def _client(self, ident: bytes, msg: ClientRequest) -> None:
        try:
            check_request(self.config, msg.request, msg.strategy)
            strategy = msg.strategy or self.config.consensus.strategy
            deadline_s = (msg.deadline_ms or self.config.scheduler.default_deadline_ms) / 1000
            answer, report = await self.swarm.coordinator.ask(
                msg.request, strategy=strategy, deadline_s=deadline_s)
            reply: Message = ClientReply(request_id=msg.request_id, answer=answer, report=report)
        except ZswarmError as exc:
            self.swarm.coordinator.stats.errors[exc.kind] += 1
            log.info("request %s failed: %s: %s", msg.request_id, exc.kind, exc)
            reply = Error(request_id=msg.request_id, kind=exc.kind, message=str(exc)[:4000])
        except Exception as exc:  # a bug must cost one request, not the node
            log.exception("request %s: internal error", msg.request_id)
            reply = Error(request_id=msg.request_id, kind="internal", message=f"internal error: {exc!r}")
        finally:
            self._in_flight.release_on_behalf_of(msg.request_id)
        self._reply(ident, reply)

    async def _vote(self, ident: bytes, msg: VoteRequest) -> None:
        """Serve a peer's vote from the local workers; nothing is sent if it was cancelled."""
        t0 = time.perf_counter()
        self.swarm.coordinator.stats.votes_received += 1
        key = (ident, msg.request_id)
        reply: Message | None = None
        try:
            with trio.CancelScope() as scope:
                self._votes[key] = scope
                check_request(self.config, msg.request)
                candidates = await self.swarm.coordinator.gather_local(
                    msg.request, deadline_s=msg.deadline_ms / 1000)
                assert self.card is not None
                reply = Vote(request_id=msg.request_id, node_id=self.card.node_id,
                             name=self.card.name, candidates=candidates,
                             elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))
        except ZswarmError as exc:
            log.info("vote %s for %s failed: %s: %s", msg.request_id, msg.origin, exc.kind, exc)
            reply = Error(request_id=msg.request_id, kind=exc.kind, message=str(exc)[:4000])
        except Exception as exc:  # a bug must cost one vote, not the node
            log.exception("vote %s: internal error", msg.request_id)
            reply = Error(request_id=msg.request_id, kind="internal", message=f"internal error: {exc!r}")
        finally:
            self._votes.pop(key, None)
            self._in_flight.release_on_behalf_of(msg.request_id)
        if reply is not None:
            self._reply(ident, reply)

    def _reply(self, ident: bytes, msg: Message) -> None:
        try:
            self.sock.send_multipart([ident, codec.encode(msg)])
        except (ZswarmError, trio.ClosedResourceError) as exc:
            log.info("rpc: could not reply: %s", exc)
