"""The node's sockets to its peers: one heartbeat subscriber and one vote link per peer.

Owns: subscribing to a peer's PUB endpoint (a SUB socket per peer, so a heartbeat
counts only for the peer whose link carried it), reading every subscriber's waiting
heartbeats in one pass when asked (``read_heartbeats``: the Federation's clock does,
at each tick), and unsubscribing, opening a DEALER
vote link per peer on first use and closing it (its pending requests fail at once),
and one-shot status probes over a short-lived link, at most MAX_PROBES at once
(a flood of announcements waits here; it never opens a socket per record). A vote
link works both ways: what the peer asks back over it (a peer that cannot connect to
this node does) goes to the RPC server through the bounded ``inbound`` channel
(Overloaded beyond it), and from then on this node's heartbeats go to that peer over
the same link too (``heartbeat_back``), since its PUB is out of the peer's reach. Every
socket is a CURVE client with this node's credentials, each connection pinned to the
key of the node it is meant for (a status probe's reply must show that key too); a
socket that cannot be opened (out of sockets or file descriptors) is PeerUnavailable
for that peer. It
decides nothing: the Federation (runtime/federation.py) says whom to connect to
and when to let go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import trio

from zswarm.core.claims import unproven
from zswarm.core.ids import new_request_id
from zswarm.core.messages import Heartbeat, Message, Status, StatusRequest, error
from zswarm.core.peers import Peer
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError
from zswarm.net.bus import PeerLink, Subscriber
from zswarm.net.guard import DropCounter, FrameDrops
from zswarm.net.security import Credentials
from zswarm.net.zmq_trio import Pollset

#: one-shot status probes (each a short-lived socket) in flight at once
MAX_PROBES = 16
#: heartbeats read from one peer's subscriber per pass, at most (a flooder's others wait,
#: then meet the socket's high-water mark)
MAX_DRAIN = 64
#: requests asked back over our links waiting for the RPC server, at most
MAX_INBOUND = 256


@dataclass(frozen=True)
class Inbound:
    """A request a peer sent back over the link this node opened to it."""

    node_id: str
    link: PeerLink
    msg: Message


@dataclass
class _Running:
    """A vote link and the scope its task runs in."""

    owner: PeerLink
    scope: trio.CancelScope


class Link(Protocol):
    """A vote link to one peer (net/bus.PeerLink)."""

    async def request(self, msg: Message, request_id: str, *, timeout_s: float | None = None
                      ) -> Message: ...

    def cancel(self, request_id: str) -> None: ...


class PeerIO(Protocol):
    """What the Federation asks of its sockets: Connections, or a recording fake in tests."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None: ...

    def read_heartbeats(self) -> None: ...

    def subscribe(self, peer: Peer) -> None: ...

    def forget(self, node_id: str, why: str) -> None: ...

    def link(self, peer: Peer) -> Link: ...

    def close_link(self, node_id: str, why: str) -> None: ...

    async def status(self, endpoint: str, public: str, name: str) -> tuple[Status, float]: ...

    def heartbeat_back(self, hb: Heartbeat) -> None: ...

    def asked_back(self) -> set[str]: ...


class Connections:
    """``PeerIO`` over ZeroMQ. Start with ``await nursery.start(connections.serve)``."""

    def __init__(self, on_heartbeat: Callable[[Heartbeat], None], *, drops: FrameDrops,
                 creds: Credentials, probe_timeout_s: float, hello: str = "",
                 inbound: trio.MemorySendChannel[Inbound] | None = None) -> None:
        self.creds = creds
        self.inbound = inbound
        #: peers that asked us something over our link to them: they cannot reach us
        #: otherwise, so our heartbeats go to them over that link too
        self._asked_back: set[str] = set()
        self.probe_timeout_s = probe_timeout_s
        self.on_heartbeat = on_heartbeat
        #: our node id, sent with status probes so a peer that thinks us dead probes back
        self.hello = hello
        self.heartbeat_drops = drops.counter("heartbeats")
        #: replies on vote links and probes that were dropped (the Federation counts the
        #: votes it refuses under the same name, with its own counter)
        self._vote_drops: DropCounter = drops.counter("votes")
        #: status answers refused (the Federation counts its own probes' under this name)
        self._probe_drops: DropCounter = drops.counter("probes")
        self.links: dict[str, _Running] = {}
        self.subscribers: dict[str, Subscriber] = {}
        #: which subscribers have news (one poll per pass, not one check per peer)
        self._news = Pollset()
        self._probes = trio.CapacityLimiter(MAX_PROBES)
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                for node_id in list(self.links):
                    self.close_link(node_id, "node shutting down")
                for node_id in list(self.subscribers):
                    self._unsubscribe(node_id)

    def read_heartbeats(self) -> None:
        """Every subscriber's waiting heartbeats, in one pass, without waiting.

        One wake-up for all peers, not one per heartbeat: at 64 peers a wake-up per
        heartbeat was most of an idle node's CPU (bench/swarm_size.py, docs/scale.md).
        """
        for node_id in self._news.ready():
            sub = self.subscribers.get(node_id)
            if sub is None:
                continue  # forgotten since
            try:
                if sub.drain(MAX_DRAIN) == MAX_DRAIN:
                    self._news.again(node_id)  # more may wait: its fd will not say so
            except trio.ClosedResourceError:
                pass  # forgotten while this pass ran

    def _run(self, owner: PeerLink) -> _Running:
        if self._nursery is None:
            owner.sock.close()
            raise PeerUnavailable("federation is not running")
        running = _Running(owner, trio.CancelScope())
        self._nursery.start_soon(_serve_in, running)
        return running

    def subscribe(self, peer: Peer) -> None:
        """Listen to the peer's heartbeats (at its current PUB endpoint)."""
        node_id, pub = peer.card.node_id, peer.card.pub
        old = self.subscribers.get(node_id)
        if old is not None:
            if old.endpoint == pub:
                return
            self._unsubscribe(node_id)
        if self._nursery is None:
            raise PeerUnavailable("federation is not running")
        sub = Subscriber(pub, peer.card.public, node_id, self.on_heartbeat,
                         drops=self.heartbeat_drops, creds=self.creds)
        self.subscribers[node_id] = sub
        self._news.add(node_id, sub.sock)

    def _unsubscribe(self, node_id: str) -> None:
        sub = self.subscribers.pop(node_id, None)
        if sub is not None:
            self._news.remove(sub.sock)
            sub.close()

    def forget(self, node_id: str, why: str) -> None:
        """No vote link and no subscription: a dead or bogus endpoint is not reconnected to."""
        self.close_link(node_id, why)
        self._unsubscribe(node_id)

    def link(self, peer: Peer) -> PeerLink:
        """The peer's vote link, opened on first use."""
        running = self.links.get(peer.card.node_id)
        if running is not None:
            return running.owner
        link = PeerLink(peer.card.rpc, peer.card.public, peer.card.name,
                        drops=self._vote_drops, creds=self.creds,
                        on_request=partial(self._asked, peer.card.node_id))
        self.links[peer.card.node_id] = self._run(link)
        return link

    def _asked(self, node_id: str, link: PeerLink, msg: Message) -> None:
        """The peer asked something back over our link: the RPC server answers it."""
        if self.inbound is None:
            raise RemoteProtocolError(type(msg).__name__, reason="unexpected")
        self._asked_back.add(node_id)
        try:
            self.inbound.send_nowait(Inbound(node_id, link, msg))
        except trio.WouldBlock:
            rid = getattr(msg, "request_id", None)
            link.send(error(rid, "overloaded", "too many requests asked back over links"))

    def asked_back(self) -> set[str]:
        """The peers that reach this node only over links it opened."""
        return set(self._asked_back)

    def heartbeat_back(self, hb: Heartbeat) -> None:
        """Our heartbeat, over the links of the peers that ask us back over them."""
        for node_id in list(self._asked_back):
            running = self.links.get(node_id)
            if running is None:
                self._asked_back.discard(node_id)
                continue
            try:
                running.owner.send(hb)
            except (ZswarmError, trio.ClosedResourceError):
                pass  # a full queue: heartbeats repeat

    def close_link(self, node_id: str, why: str) -> None:
        self._asked_back.discard(node_id)
        running = self.links.pop(node_id, None)
        if running is not None:
            running.owner.fail_all(PeerUnavailable(why))
            running.scope.cancel()

    async def status(self, endpoint: str, public: str, name: str) -> tuple[Status, float]:
        """One StatusRequest over a short-lived link pinned to the node key ``public``:
        (reply, round trip in ms). Only the holder of that key can answer, and its card
        must show it (RemoteProtocolError ``wrong-key`` otherwise).

        One connection attempt: probing an endpoint that may be bogus costs one connect.
        At most MAX_PROBES run at once; the others wait their turn.
        """
        async with self._probes:
            return await self._status(endpoint, public, name)

    async def _status(self, endpoint: str, public: str, name: str) -> tuple[Status, float]:
        link = PeerLink(endpoint, public, name, drops=self._vote_drops, creds=self.creds,
                        reconnect=False)
        rid = new_request_id()
        result: Message | ZswarmError
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(link.serve)
                t0 = time.perf_counter()
                try:
                    result = await link.request(StatusRequest(request_id=rid,
                                                              sender=self.hello or None),
                                                rid, timeout_s=self.probe_timeout_s)
                except ZswarmError as exc:
                    result = exc
                except (trio.ClosedResourceError, trio.BusyResourceError) as exc:
                    # the short-lived socket went away under us (seen once in CI): the
                    # probe failed, nothing more
                    result = PeerUnavailable(f"probe of {name} at {endpoint}: {exc!r}")
                nursery.cancel_scope.cancel()
        finally:
            link.sock.close()
        if isinstance(result, ZswarmError):
            raise result
        if not isinstance(result, Status):
            raise RemoteProtocolError(f"answered {type(result).__name__}, not Status")
        why = unproven(result.card, public)
        if why:  # (it holds the key, so it is that node: it lies about itself)
            self._probe_drops.drop("wrong-key", f"{name} at {endpoint} {why}")
            raise RemoteProtocolError(f"{name} at {endpoint} {why}", reason="wrong-key")
        return result, (time.perf_counter() - t0) * 1000


async def _serve_in(running: _Running) -> None:
    with running.scope:
        await running.owner.serve()
