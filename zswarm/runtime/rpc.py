"""The node's RPC endpoint (ZMQ ROUTER): clients' requests and peers' votes.

Owns: decoding each frame inside net/guard.py's MessageGuard (a bad one gets an
Error reply, a drop counter and a rate-limited log line, never the loop), the
node's limits on requests, one task per request bounded by a capacity limiter
(Overloaded beyond it), request ids scoped per sender (a duplicate of one in
flight gets ``Error(kind="duplicate_request")``), serving VoteRequests from the
local workers only (one hop) and stopping them on Cancel, and answering Status
and Peers requests, and pieces of its model file for pullers (runtime/sharing.py).
It must not: plan fan-out or decide (the Coordinator does).
"""

from __future__ import annotations

import logging

import trio
import zmq

from zswarm.core import codec
from zswarm.core.messages import (
    MAX_REQUEST_BYTES,
    Cancel,
    ChunkRequest,
    ClientReply,
    ClientRequest,
    Error,
    Message,
    ModelRequest,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
    VoteRequest,
    error,
)
from zswarm.errors import DuplicateRequest, RemoteProtocolError, ZswarmError
from zswarm.net.guard import MessageGuard, QuietLog
from zswarm.net.security import SwarmKey
from zswarm.net.zmq_trio import TrioSocket
from zswarm.runtime.context import NodeContext, Peers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.sharing import ModelShelf
from zswarm.runtime.votes import serve_ask, serve_vote

log = logging.getLogger(__name__)

#: requests served in a task of their own (bounded by the capacity limiter)
Admitted = ClientRequest | VoteRequest | ModelRequest | ChunkRequest


def open_endpoint(endpoint: str, key: SwarmKey | None) -> tuple[TrioSocket, str]:
    """The node's ROUTER socket, bound (so the endpoint can be advertised before serving)."""
    return TrioSocket.bound(zmq.ROUTER, endpoint, key=key, max_msg_bytes=MAX_REQUEST_BYTES)


class RpcServer:
    """Serves on a bound socket (``open_endpoint``) with ``nursery.start(serve)``."""

    def __init__(self, ctx: NodeContext, sock: TrioSocket, coordinator: Coordinator,
                 peers: Peers, shelf: ModelShelf | None = None) -> None:
        self.ctx = ctx
        self.shelf = shelf or ModelShelf(None)
        self.sock = sock
        self.coordinator = coordinator
        self.peers = peers
        self.drops = ctx.drops.counter("rpc")
        self._quiet = QuietLog(log)
        #: requests in flight by (sender, request id): the ids of two senders never collide
        self._active: dict[tuple[bytes, str], trio.CancelScope] = {}
        workers = ctx.config.node.workers
        self._capacity = trio.CapacityLimiter(ctx.config.scheduler.max_queue + workers * 4)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                frames = await self.sock.recv_multipart()
                with MessageGuard(self.drops) as guard:
                    self._dispatch(nursery, frames)
                if guard.error is not None and len(frames) >= 2:
                    rid = getattr(guard.error, "request_id", None)
                    self._reply(frames[0], error_reply(rid, guard.error))

    def _dispatch(self, nursery: trio.Nursery, frames: list[bytes]) -> None:
        if len(frames) != 2:
            raise RemoteProtocolError(f"{len(frames) - 1} frames", reason="multi-frame")
        ident, data = frames
        msg = codec.decode(data)
        card = self.ctx.card
        if isinstance(msg, StatusRequest):
            self._reply(ident, Status(request_id=msg.request_id, card=card, load=self.ctx.load()))
            if msg.sender is not None:
                self.peers.hello(msg.sender)
        elif isinstance(msg, PeersRequest):
            self._reply(ident, PeersReply(request_id=msg.request_id, node=card,
                                          peers=self.peers.peers()))
        elif isinstance(msg, Cancel):
            scope = self._active.get((ident, msg.request_id))
            if scope is not None:
                scope.cancel()
        elif isinstance(msg, (ClientRequest, VoteRequest, ModelRequest, ChunkRequest)):
            self._admit(nursery, ident, msg)
        else:
            raise RemoteProtocolError(f"unexpected message type {type(msg).__name__}",
                                      reason="unexpected")

    def _admit(self, nursery: trio.Nursery, ident: bytes, msg: Admitted) -> None:
        key = (ident, msg.request_id)
        if key in self._active:
            raise DuplicateRequest(f"request id {msg.request_id!r} is already in flight "
                                   "from this sender", request_id=msg.request_id)
        refusal = self.ctx.refusal()
        if refusal is not None and not isinstance(msg, ClientRequest):  # (asks: serve_ask)
            self._reply(ident, error_reply(msg.request_id, refusal))
            return
        try:
            self._capacity.acquire_on_behalf_of_nowait(key)
        except trio.WouldBlock:
            self._reply(ident, Error(request_id=msg.request_id, kind="overloaded",
                                     message="too many requests in flight"))
            return
        self.ctx.requests.enter()  # left in _serve_one, whatever happens
        scope = self._active[key] = trio.CancelScope()
        nursery.start_soon(self._serve_one, ident, msg, scope)

    async def _serve_one(self, ident: bytes, msg: Admitted, scope: trio.CancelScope) -> None:
        """Answer one request; any failure costs this request only (an Error reply)."""
        key = (ident, msg.request_id)
        reply: Message | None = None
        try:
            with scope:
                if isinstance(msg, ClientRequest):
                    reply = await self._client(msg)
                elif isinstance(msg, VoteRequest):
                    reply = await self._vote(msg)
                elif isinstance(msg, ModelRequest):
                    reply = await self.shelf.offer(msg)
                else:
                    reply = await self.shelf.chunk(msg)
        except Exception as exc:  # ZswarmErrors, and a bug: one request's loss, not the node's
            if not isinstance(exc, ZswarmError):
                log.exception("request %s: internal error", msg.request_id)
            self._quiet.info(f"{type(msg).__name__} {getattr(exc, 'kind', 'internal')}",
                             "%s %s failed: %s", type(msg).__name__, msg.request_id, exc)
            reply = error_reply(msg.request_id, exc)
        finally:
            self._active.pop(key, None)
            self._capacity.release_on_behalf_of(key)
            self.ctx.requests.leave()
        if reply is not None:  # None: a vote cancelled by its sender gets no answer
            self._reply(ident, reply)

    async def _client(self, msg: ClientRequest) -> Message:
        answer, report = await serve_ask(
            self.ctx, self.coordinator, msg.request,
            strategy=msg.strategy or self.ctx.config.consensus.strategy,
            deadline_ms=msg.deadline_ms)
        return ClientReply(request_id=msg.request_id, answer=answer, report=report)

    async def _vote(self, msg: VoteRequest) -> Message:
        return await serve_vote(self.ctx, self.coordinator, request_id=msg.request_id,
                                request=msg.request, deadline_ms=msg.deadline_ms)

    def _reply(self, ident: bytes, msg: Message) -> None:
        """Send to one sender; a sender that is gone or too slow costs nothing here."""
        try:
            self.sock.send_multipart([ident, codec.encode(msg)])
        except (ZswarmError, trio.ClosedResourceError) as exc:
            self._quiet.info("reply", "rpc: could not reply: %s", exc)


def error_reply(request_id: str | None, exc: Exception) -> Error:
    """The Error message that answers a failed request (a bug is reported as ``internal``)."""
    if isinstance(exc, ZswarmError):
        return error(request_id, exc.kind, str(exc))
    return error(request_id, "internal",
                 f"internal error (logged on the node): {type(exc).__name__}")
