"""The node's sockets to its peers: one heartbeat subscriber, one vote link per peer.

Owns: subscribing to and unsubscribing from peers' PUB endpoints (one SUB socket),
opening a DEALER vote link per peer on first use and closing it (its pending
requests fail at once), and one-shot status probes over a short-lived link. Every
socket is opened with the swarm key when there is one. It decides nothing: the
Federation (runtime/federation.py) says whom to connect to and when to let go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from zswarm.core.ids import new_request_id
from zswarm.core.messages import Heartbeat, Message, Status, StatusRequest
from zswarm.core.peers import Peer
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError
from zswarm.net.bus import PeerLink, Subscriber
from zswarm.net.guard import FrameDrops
from zswarm.net.security import SwarmKey


@dataclass
class _Link:
    link: PeerLink
    scope: trio.CancelScope


class Connections:
    """Start with ``await nursery.start(connections.serve)`` (it runs the subscriber)."""

    def __init__(self, on_heartbeat: Callable[[Heartbeat], None], *, drops: FrameDrops,
                 key: SwarmKey | None, probe_timeout_s: float) -> None:
        self.key = key
        self.probe_timeout_s = probe_timeout_s
        self.subscriber = Subscriber(on_heartbeat, drops=drops.counter("heartbeats"), key=key)
        self.links: dict[str, _Link] = {}
        #: replies on vote links and probes that were dropped (the Federation adds bad votes)
        self.vote_drops = drops.counter("votes")
        self._subscribed: dict[str, str] = {}  # node id -> PUB endpoint
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.subscriber.serve)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                for node_id in list(self.links):
                    self.close_link(node_id, "node shutting down")

    def subscribe(self, peer: Peer) -> None:
        """Listen to the peer's heartbeats (at its current PUB endpoint)."""
        node_id, pub = peer.card.node_id, peer.card.pub
        old = self._subscribed.get(node_id)
        if old == pub:
            return
        if old is not None:
            self.subscriber.disconnect(old)
        self.subscriber.connect(pub)
        self._subscribed[node_id] = pub

    def forget(self, node_id: str, why: str) -> None:
        """No vote link and no subscription: a dead or bogus endpoint is not reconnected to."""
        self.close_link(node_id, why)
        old = self._subscribed.pop(node_id, None)
        if old is not None and old not in self._subscribed.values():
            self.subscriber.disconnect(old)

    def link(self, peer: Peer) -> PeerLink:
        """The peer's vote link, opened on first use."""
        entry = self.links.get(peer.card.node_id)
        if entry is not None:
            return entry.link
        if self._nursery is None:
            raise PeerUnavailable("federation is not running")
        link = PeerLink(peer.card.rpc, peer.card.name, drops=self.vote_drops, key=self.key)
        entry = _Link(link, trio.CancelScope())
        self.links[peer.card.node_id] = entry
        self._nursery.start_soon(_run_link, entry)
        return link

    def close_link(self, node_id: str, why: str) -> None:
        entry = self.links.pop(node_id, None)
        if entry is not None:
            entry.link.fail_all(PeerUnavailable(why))
            entry.scope.cancel()

    async def status(self, endpoint: str, name: str) -> tuple[Status, float]:
        """One StatusRequest over a short-lived link: (reply, round trip in ms).

        One connection attempt: probing an endpoint that may be bogus costs one connect.
        """
        link = PeerLink(endpoint, name, drops=self.vote_drops, key=self.key, reconnect=False)
        rid = new_request_id()
        result: Message | ZswarmError
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(link.serve)
                t0 = time.perf_counter()
                try:
                    result = await link.request(StatusRequest(request_id=rid), rid,
                                                self.probe_timeout_s)
                except ZswarmError as exc:
                    result = exc
                nursery.cancel_scope.cancel()
        finally:
            link.sock.close()
        if isinstance(result, ZswarmError):
            raise result
        if not isinstance(result, Status):
            raise RemoteProtocolError(f"answered {type(result).__name__}, not Status")
        return result, (time.perf_counter() - t0) * 1000


async def _run_link(entry: _Link) -> None:
    with entry.scope:
        await entry.link.serve()
