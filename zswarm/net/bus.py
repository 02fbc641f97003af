"""Node <-> node transport: heartbeats over PUB/SUB and vote links over DEALER -> ROUTER.

Owns the sockets and the matching of replies to requests; decides nothing
(runtime/federation.py does). Every socket is opened through net/zmq_trio.py.
Each received frame is handled inside net/guard.py's MessageGuard: a bad one is
dropped, counted and logged at most once per 10 s per reason, so a noisy peer
cannot flood the log or stop the node.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import trio
import zmq

from zswarm.core import codec
from zswarm.core.messages import (
    MAX_HEARTBEAT_BYTES,
    MAX_VOTE_BYTES,
    Cancel,
    Error,
    Heartbeat,
    Message,
    PeersRequest,
    StatusRequest,
    VoteRequest,
)
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError, error_from_kind
from zswarm.net.guard import DropCounter, MessageGuard
from zswarm.net.security import Credentials
from zswarm.net.zmq_trio import TrioSocket

log = logging.getLogger(__name__)


class Publisher:
    """This node's heartbeat PUB socket."""

    def __init__(self, endpoint: str, *, creds: Credentials) -> None:
        self.sock, self.endpoint = TrioSocket.bound(zmq.PUB, endpoint, creds=creds)

    def publish(self, hb: Heartbeat) -> None:
        # PUB never blocks: past the high-water mark it drops (heartbeats repeat anyway).
        self.sock.send_multipart([codec.encode(hb)])

    def close(self) -> None:
        self.sock.close(linger_ms=500)  # let the goodbye heartbeat leave


class Subscriber:
    """A SUB socket connected to one peer's PUB endpoint: the link its heartbeats come over,
    pinned to the peer's key (only the holder of its secret can publish on it).

    A heartbeat counts only for the peer whose link carried it: one written in another
    node's name is dropped (``wrong-sender``), so no subscriber can speak for a third node.
    """

    def __init__(self, endpoint: str, public: str, node_id: str,
                 on_heartbeat: Callable[[Heartbeat], None], *, creds: Credentials,
                 drops: DropCounter | None = None) -> None:
        self.endpoint = endpoint
        self.node_id = node_id
        self.sock = TrioSocket.open(zmq.SUB, role="client", creds=creds,
                                    max_msg_bytes=MAX_HEARTBEAT_BYTES)
        try:
            self.sock.setsockopt(zmq.SUBSCRIBE, b"")
            self.sock.connect(endpoint, public)
        except BaseException:
            self.sock.close()
            raise
        self.on_heartbeat = on_heartbeat
        self.drops = drops or DropCounter("heartbeats")

    def drain(self, most: int = 64) -> int:
        """Handle the heartbeats waiting on the socket, at most ``most`` (a flooder's
        others wait, then meet the high-water mark), without waiting; how many were read.

        Many peers' heartbeats handled in one pass cost one wake-up, not one each
        (runtime/connections.py drains every subscriber a few times per interval)."""
        count = 0
        while count < most:
            frames = self.sock.recv_nowait()
            if frames is None:
                break
            count += 1
            with MessageGuard(self.drops):
                self._handle(frames)
        return count

    def close(self) -> None:
        self.sock.close()

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            raise RemoteProtocolError(f"{len(frames)} frames", reason="multi-frame")
        msg = codec.decode(frames[0])
        if not isinstance(msg, Heartbeat):
            raise RemoteProtocolError(type(msg).__name__, reason="unexpected")
        if msg.card.node_id != self.node_id:
            raise RemoteProtocolError(f"a heartbeat of {msg.card.node_id!r} on the link to "
                                      f"{self.node_id!r}", reason="wrong-sender")
        self.on_heartbeat(msg)


#: what a peer may ask over a link this node opened (it cannot connect to this node)
BACK_REQUESTS = (StatusRequest, VoteRequest, PeersRequest, Cancel)


async def wait_reply(receive: trio.MemoryReceiveChannel[Message | ZswarmError],
                     timeout_s: float | None, who: str) -> Message:
    """The reply a request's waiter is sent: the peer's Error raised as its error, a
    failure of the link raised, PeerUnavailable when nothing comes within ``timeout_s``
    (None: the caller's cancel scope is the only limit)."""
    with trio.move_on_after(math.inf if timeout_s is None else timeout_s):
        reply = await receive.receive()
        if isinstance(reply, ZswarmError):
            raise reply
        if isinstance(reply, Error):
            raise error_from_kind(reply.kind, reply.message)
        return reply
    raise PeerUnavailable(f"{who} did not answer within {timeout_s:.1f} s")


class PeerLink:
    """A DEALER to one peer's RPC endpoint, pinned to the peer's key (``public``: only
    the holder of its secret answers): requests with matched replies, and cancels.

    With ``on_request``, the link works both ways: requests the peer sends back over
    it (BACK_REQUESTS; a peer that cannot connect to this node asks it this way) are
    handed to ``on_request`` and answered with ``send``. Without it they are dropped.
    """

    def __init__(self, endpoint: str, public: str, name: str, *, creds: Credentials,
                 drops: DropCounter | None = None, reconnect: bool = True,
                 on_request: Callable[[PeerLink, Message], None] | None = None) -> None:
        self.endpoint = endpoint
        self.public = public
        self.name = name
        self.on_request = on_request
        # replies are votes and status: a peer cannot make us take (and decode) more
        self.sock = TrioSocket.open(zmq.DEALER, role="client", creds=creds,
                                    reconnect=reconnect, max_msg_bytes=MAX_VOTE_BYTES)
        try:
            self.sock.connect(endpoint, public)
        except BaseException:
            self.sock.close()
            raise
        self._waiting: dict[str, trio.MemorySendChannel[Message | ZswarmError]] = {}
        self.drops = drops or DropCounter("votes")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Receive replies until cancelled; then fail whatever still waits."""
        task_status.started()
        try:
            while True:
                frames = await self.sock.recv_multipart()
                with MessageGuard(self.drops):
                    self._handle(frames)
        finally:
            self.fail_all(PeerUnavailable(f"link to {self.name} closed"))
            self.sock.close()

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            raise RemoteProtocolError(f"{len(frames)} frames", reason="multi-frame")
        msg = codec.decode(frames[0])
        if isinstance(msg, BACK_REQUESTS):
            if self.on_request is None:
                raise RemoteProtocolError(type(msg).__name__, reason="unexpected")
            self.on_request(self, msg)
            return
        rid = getattr(msg, "request_id", None)
        waiter = self._waiting.pop(rid, None) if isinstance(rid, str) else None
        if waiter is not None:  # else a reply to a request that gave up (a late vote)
            waiter.send_nowait(msg)

    async def request(self, msg: Message, request_id: str, *, timeout_s: float | None = None
                      ) -> Message:
        """Send and wait for the reply with the same request id.

        Raises PeerUnavailable (send queue full, link closed, nothing within
        ``timeout_s``) or the error the peer answered with. A vote passes no timeout:
        its deadline is the caller's cancel scope (one timer per vote, not three).
        """
        send, receive = trio.open_memory_channel[Message | ZswarmError](1)
        self._waiting[request_id] = send
        try:
            self.sock.send_multipart([codec.encode(msg)])
            return await wait_reply(receive, timeout_s, self.name)
        finally:
            self._waiting.pop(request_id, None)

    def send(self, msg: Message) -> None:
        """Send one message (a reply, a heartbeat) without waiting; PeerUnavailable if
        the queue is full, ClosedResourceError once closed."""
        self.sock.send_multipart([codec.encode(msg)])

    def cancel(self, request_id: str) -> None:
        """Tell the peer to stop work on a request (best effort: it may be gone)."""
        try:
            self.sock.send_multipart([codec.encode(Cancel(request_id=request_id))])
        except (ZswarmError, trio.ClosedResourceError):
            pass

    def fail_all(self, exc: ZswarmError) -> None:
        for waiter in self._waiting.values():
            try:
                waiter.send_nowait(exc)
            except (trio.WouldBlock, trio.BrokenResourceError):
                pass
        self._waiting.clear()
