"""Node <-> node transport: heartbeats over PUB/SUB and vote links over DEALER -> ROUTER.

Owns the sockets and the matching of replies to requests; decides nothing
(runtime/federation.py does). Every socket is opened through net/zmq_trio.py.
Malformed frames are dropped, counted and logged at most once per 10 s per
reason, so a noisy peer cannot flood the log or stop the node.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
import zmq

from zswarm.core import codec
from zswarm.core.messages import Cancel, Error, Heartbeat, Message
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError, error_from_kind
from zswarm.net.zmq_trio import TrioSocket

log = logging.getLogger(__name__)


@dataclass
class DropCounter:
    """Counts dropped frames by reason; logs each reason at most every ``every_s`` seconds."""

    where: str
    every_s: float = 10.0
    counts: dict[str, int] = field(default_factory=dict)
    _last_log: dict[str, float] = field(default_factory=dict)
    _unlogged: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last_log.get(reason, -math.inf) >= self.every_s:
            n = self._unlogged.pop(reason)
            log.warning("%s: dropped %d %s frame(s)%s", self.where, n, reason,
                        f": {detail}" if detail else "")
            self._last_log[reason] = now

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _reason(exc: RemoteProtocolError) -> str:
    return "wrong-version" if "protocol version" in str(exc) else "malformed"


class Publisher:
    """This node's heartbeat PUB socket."""

    def __init__(self, endpoint: str) -> None:
        self.sock = TrioSocket.open(zmq.PUB)
        self.endpoint = self.sock.bind(endpoint)

    def publish(self, hb: Heartbeat) -> None:
        # PUB never blocks: past the high-water mark it drops (heartbeats repeat anyway).
        self.sock.send_multipart([codec.encode(hb)])

    def close(self) -> None:
        self.sock.close(linger_ms=500)  # let the goodbye heartbeat leave


class Subscriber:
    """One SUB socket connected to every known peer's PUB endpoint."""

    def __init__(self, on_heartbeat: Callable[[Heartbeat], None]) -> None:
        self.sock = TrioSocket.open(zmq.SUB)
        self.sock.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.on_heartbeat = on_heartbeat
        self.endpoints: set[str] = set()
        self.drops = DropCounter("heartbeats")

    def connect(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            self.sock.connect(endpoint)
            self.endpoints.add(endpoint)

    def disconnect(self, endpoint: str) -> None:
        if endpoint in self.endpoints:
            self.endpoints.discard(endpoint)
            try:
                self.sock.sock.disconnect(endpoint)
            except zmq.ZMQError:
                pass

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()
        try:
            while True:
                frames = await self.sock.recv_multipart()
                if len(frames) != 1:
                    self.drops.drop("multi-frame")
                    continue
                try:
                    msg = codec.decode(frames[0])
                except RemoteProtocolError as exc:
                    self.drops.drop(_reason(exc), str(exc))
                    continue
                if not isinstance(msg, Heartbeat):
                    self.drops.drop("unexpected", type(msg).__name__)
                    continue
                self.on_heartbeat(msg)
        finally:
            self.sock.close()


class PeerLink:
    """A DEALER to one peer's RPC endpoint: requests with matched replies, and cancels."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.endpoint = endpoint
        self.name = name
        self.sock = TrioSocket.open(zmq.DEALER)
        self.sock.connect(endpoint)
        self._waiting: dict[str, trio.MemorySendChannel[Message | ZswarmError]] = {}
        self.drops = DropCounter(f"link to {name}")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Receive replies until cancelled; then fail whatever still waits."""
        task_status.started()
        try:
            while True:
                frames = await self.sock.recv_multipart()
                try:
                    msg = codec.decode(frames[-1])
                except RemoteProtocolError as exc:
                    self.drops.drop(_reason(exc), str(exc))
                    continue
                rid = getattr(msg, "request_id", None)
                waiter = self._waiting.pop(rid, None) if isinstance(rid, str) else None
                if waiter is None:
                    continue  # a reply to a request that gave up (late vote)
                waiter.send_nowait(msg)
        finally:
            self.fail_all(PeerUnavailable(f"link to {self.name} closed"))
            self.sock.close()

    async def request(self, msg: Message, request_id: str, timeout_s: float) -> Message:
        """Send and wait for the reply with the same request id.

        Raises PeerUnavailable (send queue full, link closed, no reply in time) or
        the error the peer answered with.
        """
        send, receive = trio.open_memory_channel[Message | ZswarmError](1)
        self._waiting[request_id] = send
        try:
            self.sock.send_multipart([codec.encode(msg)])
            with trio.move_on_after(timeout_s):
                reply = await receive.receive()
                if isinstance(reply, ZswarmError):
                    raise reply
                if isinstance(reply, Error):
                    raise error_from_kind(reply.kind, reply.message)
                return reply
            raise PeerUnavailable(f"{self.name} did not answer within {timeout_s:.1f} s")
        finally:
            self._waiting.pop(request_id, None)

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
