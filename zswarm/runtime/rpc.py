"""The node's RPC endpoint (ZMQ ROUTER): clients' requests and peers' votes.

Owns: decoding each frame inside net/guard.py's MessageGuard (a bad one gets an
Error reply, a drop counter and a rate-limited log line, never the loop), the
node's limits on requests, one task per request bounded by a capacity limiter
(Overloaded beyond it), request ids scoped per sender (a duplicate of one in
flight gets ``Error(kind="duplicate_request")``), serving VoteRequests from the
local workers only (one hop) and stopping them on Cancel, and answering Status
and Peers requests, and pieces of its model file for pullers (runtime/sharing.py).
Requests come from two places, served alike: the ROUTER, and the ``inbound``
channel of requests peers asked back over links this node opened (a member that
cannot connect to this node asks it that way: runtime/connections.py). Replies and
heartbeats arriving at the ROUTER come from members this node reaches over their own
links; they go to the Federation (``Peers.from_link``), never answered.
It must not: plan fan-out or decide (the Coordinator does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio
import zmq

from zswarm import asks
from zswarm.core import codec
from zswarm.core.claims import unproven
from zswarm.core.ids import is_public, node_id_of
from zswarm.core.messages import (
    MAX_REQUEST_BYTES,
    Cancel,
    Candidate,
    ChunkRequest,
    ClientProgress,
    ClientReply,
    ClientRequest,
    ClientToken,
    Error,
    Heartbeat,
    Message,
    ModelRequest,
    NodeCard,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
    Vote,
    VoteRequest,
    error,
)
from zswarm.errors import DuplicateRequest, RemoteProtocolError, ZswarmError
from zswarm.net.guard import MessageGuard, QuietLog
from zswarm.net.security import Credentials, Membership
from zswarm.net.zmq_trio import TrioSocket
from zswarm.runtime.connections import Inbound
from zswarm.runtime.context import NodeContext, Peers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.serving import serve_ask, serve_vote
from zswarm.runtime.sharing import ModelShelf

log = logging.getLogger(__name__)

#: requests served in a task of their own (bounded by the capacity limiter)
Admitted = ClientRequest | VoteRequest | ModelRequest | ChunkRequest
#: what arrives at the ROUTER from members reached over their own links (runtime/backlinks.py)
FROM_LINKS = (Heartbeat, Status, Vote, PeersReply, Error)


@dataclass(frozen=True)
class _Origin:
    """Where a request came from and how to answer it."""

    #: scopes request ids: a ROUTER routing identity, or b"\0link:" + the node id of a
    #: link of ours (peers cannot choose identities that start with a zero byte)
    key: bytes
    send: Callable[[Message], None]
    #: the ROUTER identity, which a hello may ask us to reach the sender back over
    ident: bytes | None = None
    #: the sender's node key (hex) as its CURVE handshake proved it, or the key of the
    #: link of ours it came over: who the sender is, whatever a message says
    public: str = ""


def open_endpoint(endpoint: str, creds: Credentials) -> tuple[TrioSocket, str]:
    """The node's ROUTER socket, bound (so the endpoint can be advertised before serving)."""
    return TrioSocket.bound(zmq.ROUTER, endpoint, creds=creds, max_msg_bytes=MAX_REQUEST_BYTES)


class RpcServer:
    """Serves on a bound socket (``open_endpoint``) with ``nursery.start(serve)``."""

    def __init__(self, ctx: NodeContext, sock: TrioSocket, coordinator: Coordinator,
                 peers: Peers, shelf: ModelShelf | None = None,
                 inbound: trio.MemoryReceiveChannel[Inbound] | None = None) -> None:
        self.ctx = ctx
        self.inbound = inbound
        self.shelf = shelf or ModelShelf.of(None)
        self.sock = sock
        self.coordinator = coordinator
        self.peers = peers
        self.drops = ctx.drops.counter("rpc")
        #: in a keyed swarm, each message's sender shows its membership ticket
        self.members = Membership(ctx.key) if ctx.key is not None else None
        self._quiet = QuietLog(log)
        #: requests in flight by (sender, request id): the ids of two senders never collide
        self._active: dict[tuple[bytes, str], trio.CancelScope] = {}
        workers = ctx.config.node.workers
        self._capacity = trio.CapacityLimiter(ctx.config.scheduler.max_queue + workers * 4)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            if self.inbound is not None:
                nursery.start_soon(self._serve_inbound, nursery, self.inbound)
            while True:
                frames, public, shown = await self.sock.recv_from(
                    ticket=self.members is not None)
                if self.members is not None and not self.members.admits(public, shown):
                    # holds a key of its own, not the swarm's: nothing is served to it
                    self.drops.drop("not-member", f"a sender without this swarm's ticket "
                                    f"({public[:16]})")
                    continue
                with MessageGuard(self.drops) as guard:
                    self._dispatch(nursery, frames, public)
                if guard.error is not None and len(frames) >= 2:
                    rid = getattr(guard.error, "request_id", None)
                    self._reply(frames[0], error_reply(rid, guard.error))

    async def _serve_inbound(self, nursery: trio.Nursery,
                             inbound: trio.MemoryReceiveChannel[Inbound]) -> None:
        """Requests peers asked back over our links, answered over the same link."""
        async for item in inbound:
            origin = _Origin(b"\0link:" + item.node_id.encode(), partial(_send_on, item),
                             public=item.link.public)
            with MessageGuard(self.drops) as guard:
                self._handle(nursery, origin, item.msg)
            if guard.error is not None:
                _send_on(item, error_reply(getattr(item.msg, "request_id", None), guard.error))

    def _dispatch(self, nursery: trio.Nursery, frames: list[bytes], public: str) -> None:
        if len(frames) != 2:
            raise RemoteProtocolError(f"{len(frames) - 1} frames", reason="multi-frame")
        ident, data = frames
        msg = codec.decode(data)
        if isinstance(msg, FROM_LINKS):
            self.peers.from_link(ident, msg, public)
            return
        self._handle(nursery, _Origin(ident, partial(self._reply, ident), ident, public), msg)

    def _handle(self, nursery: trio.Nursery, origin: _Origin, msg: Message) -> None:
        card = self.ctx.card
        if isinstance(msg, StatusRequest):
            origin.send(Status(request_id=msg.request_id, card=card, load=self.ctx.load(),
                               interval_ms=self.ctx.config.federation.heartbeat_interval_ms))
            if msg.sender is not None and is_public(origin.public):
                # who it is: the key it proved, not the id it names; a card of another
                # key is refused (it cannot speak for a third node)
                theirs: NodeCard | None = msg.card
                if theirs is not None and unproven(theirs, origin.public):
                    self.drops.drop("wrong-key", f"a hello showing the card of "
                                    f"{theirs.node_id}, from {node_id_of(origin.public)}")
                    theirs = None
                self.peers.hello(node_id_of(origin.public), theirs,
                                 back=origin.ident if msg.standing else None)
        elif isinstance(msg, PeersRequest):
            origin.send(PeersReply(request_id=msg.request_id, node=card,
                                   peers=self.peers.peers(), load=self.ctx.load()))
        elif isinstance(msg, Cancel):
            scope = self._active.get((origin.key, msg.request_id))
            if scope is not None:
                scope.cancel()
        elif isinstance(msg, (ClientRequest, VoteRequest, ModelRequest, ChunkRequest)):
            self._admit(nursery, origin, msg)
        else:
            raise RemoteProtocolError(f"unexpected message type {type(msg).__name__}",
                                      reason="unexpected")

    def _admit(self, nursery: trio.Nursery, origin: _Origin, msg: Admitted) -> None:
        key = (origin.key, msg.request_id)
        if key in self._active:
            raise DuplicateRequest(f"request id {msg.request_id!r} is already in flight "
                                   "from this sender", request_id=msg.request_id)
        refusal = self.ctx.refusal()
        if refusal is not None and not isinstance(msg, ClientRequest):  # (asks: serve_ask)
            origin.send(error_reply(msg.request_id, refusal))
            return
        try:
            self._capacity.acquire_on_behalf_of_nowait(key)
        except trio.WouldBlock:
            origin.send(Error(request_id=msg.request_id, kind="overloaded",
                              message="too many requests in flight"))
            return
        self.ctx.requests.enter()  # left in _serve_one, whatever happens
        scope = self._active[key] = trio.CancelScope()
        nursery.start_soon(self._serve_one, origin, msg, scope)

    async def _serve_one(self, origin: _Origin, msg: Admitted, scope: trio.CancelScope
                         ) -> None:
        """Answer one request; any failure costs this request only (an Error reply)."""
        key = (origin.key, msg.request_id)
        reply: Message | None = None
        try:
            with scope:
                if isinstance(msg, ClientRequest):
                    reply = await self._client(msg, origin)
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
            origin.send(reply)

    async def _client(self, msg: ClientRequest, origin: _Origin) -> Message:
        ask = asks.build(self.ctx.config, msg.request, strategy=msg.strategy,
                         deadline_ms=msg.deadline_ms, adaptive=msg.adaptive)

        def on_token(index: int, text: str) -> None:  # a client gone or slow: dropped
            origin.send(ClientToken(request_id=msg.request_id, text=text))

        def on_candidate(cand: Candidate) -> None:
            origin.send(ClientProgress(request_id=msg.request_id, node=cand.node[:256]))

        one = ask.request.n == 1
        answer, report = await serve_ask(
            self.ctx, self.coordinator, ask, on_token=on_token if msg.stream and one else None,
            on_candidate=on_candidate if msg.stream and not one else None)
        return ClientReply(request_id=msg.request_id, answer=answer, report=report)

    async def _vote(self, msg: VoteRequest) -> Message:
        return await serve_vote(self.ctx, self.coordinator, request_id=msg.request_id,
                                request=msg.request, deadline_ms=msg.deadline_ms,
                                model_id=msg.model_id)

    def _reply(self, ident: bytes, msg: Message) -> None:
        """Send to one sender; a sender that is gone or too slow costs nothing here."""
        try:
            self.sock.send_multipart([ident, codec.encode(msg)])
        except (ZswarmError, trio.ClosedResourceError) as exc:
            self._quiet.info("reply", "rpc: could not reply: %s", exc)


def _send_on(item: Inbound, msg: Message) -> None:
    """Answer over the link the request came on; a link gone or full costs the reply."""
    try:
        item.link.send(msg)
    except (ZswarmError, trio.ClosedResourceError):
        pass


def error_reply(request_id: str | None, exc: Exception) -> Error:
    """The Error message that answers a failed request (a bug is reported as ``internal``)."""
    if isinstance(exc, ZswarmError):
        return error(request_id, exc.kind, str(exc))
    return error(request_id, "internal",
                 f"internal error (logged on the node): {type(exc).__name__}")
