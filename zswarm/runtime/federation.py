"""The node's view of the swarm: discovery, heartbeats, peer links and votes.

Owns: the PeerTable (core/peers.py) and carrying out what its changes mean -
subscribing to a peer's heartbeats, opening and closing vote links, logging
joins, deaths and leaves once each; publishing this node's heartbeat; probing
static peers; pinging peers for their round-trip time; and sending one
VoteRequest to one peer (``vote``). It must not: decide fan-out (core/plan.py)
or combine candidates (coordinator + core/consensus.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from zswarm.config import Config
from zswarm.core.ids import new_request_id
from zswarm.core.messages import (
    GenerateRequest,
    Heartbeat,
    Load,
    NodeCard,
    PeerInfo,
    Status,
    StatusRequest,
    Vote,
    VoteRequest,
)
from zswarm.core.peers import MAX_PEERS, Change, Peer, PeerState, PeerTable
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError
from zswarm.net.bus import PeerLink, Publisher, Subscriber
from zswarm.net.mdns import Found, MdnsEvent, serve_mdns

log = logging.getLogger(__name__)

#: ping every peer for its round-trip time every this many heartbeats
PING_EVERY = 5
#: the peer table is checked this many times per heartbeat interval
TICKS_PER_INTERVAL = 4


@dataclass
class _Link:
    link: PeerLink
    scope: trio.CancelScope


def hardware_summary() -> str:
    mem_gib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20)
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count() or 1} cpu, {mem_gib} GiB"


class Federation:
    """Start with ``await nursery.start(federation.serve)``; then ``vote()`` and ``peers()``."""

    def __init__(self, config: Config, me: NodeCard, publisher: Publisher,
                 load: Callable[[], Load], *, mdns_address: str) -> None:
        fed = config.federation
        self.config = config
        self.me = me
        self.publisher = publisher
        self.load = load
        self.mdns_address = mdns_address
        self.interval_s = fed.heartbeat_interval_ms / 1000
        self.table = PeerTable(me, interval_s=self.interval_s, liveness=fed.liveness)
        self.subscriber = Subscriber(self._on_heartbeat)
        self.links: dict[str, _Link] = {}
        self.in_flight: dict[str, int] = {}
        #: static endpoint -> why it is not in the table yet ("" once it answered)
        self.static: dict[str, str] = {}
        if fed.discovery in ("static", "both"):
            self.static = dict.fromkeys(fed.peers, "not answered yet")
        self._subscribed: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None
        self._seq = 0
        self._busy: set[str] = set()
        self.state = "ready"

    # --- services -----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.subscriber.serve)
            if self.config.federation.discovery in ("mdns", "both"):
                send, receive = trio.open_memory_channel[MdnsEvent](1000)
                nursery.start_soon(self._mdns_events, receive)
                await nursery.start(serve_mdns, self.mdns_address, self.me, send)
            nursery.start_soon(self._heartbeats)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._say_goodbye()
                for node_id in list(self.links):
                    self._close_link(node_id, "node shutting down")

    def _say_goodbye(self) -> None:
        self.state = "leaving"
        try:
            self.publisher.publish(self._heartbeat())
        except (ZswarmError, trio.ClosedResourceError):
            pass

    def _heartbeat(self) -> Heartbeat:
        self._seq += 1
        load = self.load()
        if self.state != "ready":
            load = Load(state=self.state, max_queue=load.max_queue)  # type: ignore[arg-type]
        return Heartbeat(card=self.me, seq=self._seq, load=load,
                         interval_ms=self.config.federation.heartbeat_interval_ms)

    async def _heartbeats(self) -> None:
        """Publish every interval; check silences four times per interval (DEAD on time)."""
        assert self._nursery is not None
        ticks = 0
        while True:
            if ticks % TICKS_PER_INTERVAL == 0:
                beat = ticks // TICKS_PER_INTERVAL
                self.publisher.publish(self._heartbeat())
                for endpoint, why in self.static.items():
                    if why and endpoint not in self._busy:
                        self._nursery.start_soon(self._once, endpoint, self._probe_static)
                for peer in list(self.table.peers.values()):
                    node_id = peer.card.node_id
                    due = beat % PING_EVERY == 0 or peer.rtt_ms is None
                    if node_id not in self._busy and (peer.state is PeerState.DISCOVERED or (
                            due and peer.state is PeerState.ALIVE)):
                        self._nursery.start_soon(self._once, node_id, self._ping)
            self._apply(self.table.tick(trio.current_time()))
            ticks += 1
            await trio.sleep(self.interval_s / TICKS_PER_INTERVAL)

    async def _once(self, key: str, job: Callable[[str], Awaitable[None]]) -> None:
        """Run a probe or ping unless one for the same key is still running."""
        self._busy.add(key)
        try:
            await job(key)
        finally:
            self._busy.discard(key)

    async def _mdns_events(self, receive: trio.MemoryReceiveChannel[MdnsEvent]) -> None:
        names: dict[str, str] = {}  # service name -> node id
        async for event in receive:
            now = trio.current_time()
            if isinstance(event, Found):
                if event.card.swarm != self.me.swarm:
                    continue
                names[event.service] = event.card.node_id
                self._apply(self.table.discovered(event.card, event.address, "mdns", now,
                                                  proto=event.proto))
            elif event.service in names:
                self._apply(self.table.goodbye(names.pop(event.service), now))

    def _on_heartbeat(self, hb: Heartbeat) -> None:
        if hb.card.swarm != self.me.swarm:
            return
        self._apply(self.table.heard(hb.card, hb.load, trio.current_time(),
                                     interval_s=hb.interval_ms / 1000))

    async def _probe_static(self, endpoint: str) -> None:
        link = PeerLink(endpoint, endpoint)
        rid = new_request_id()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(link.serve)
                t0 = time.perf_counter()
                try:
                    reply = await link.request(StatusRequest(request_id=rid), rid, self.interval_s)
                except ZswarmError as exc:
                    self.static[endpoint] = str(exc)
                    return
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            link.sock.close()
        if not isinstance(reply, Status):
            self.static[endpoint] = f"answered {type(reply).__name__}, not Status"
            return
        self.static[endpoint] = ""
        self._apply(self.table.heard(reply.card, reply.load, trio.current_time(),
                                     source="static"))
        self.table.rtt(reply.card.node_id, (time.perf_counter() - t0) * 1000)

    async def _ping(self, node_id: str) -> None:
        peer = self.table.peers.get(node_id)
        if peer is None:
            return
        rid = new_request_id()
        t0 = time.perf_counter()
        try:
            reply = await self._link(peer).request(StatusRequest(request_id=rid), rid,
                                                   self.interval_s)
        except ZswarmError as exc:
            log.debug("ping %s: %s", peer.card.name, exc)
            return
        if isinstance(reply, Status) and reply.card.node_id == node_id:
            self.table.rtt(node_id, (time.perf_counter() - t0) * 1000)
            self._apply(self.table.heard(reply.card, reply.load, trio.current_time()))

    # --- carrying out the table's changes -----------------------------------------

    def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            peer = change.peer
            card = peer.card
            if change.kind == "duplicate":
                log.error("DUPLICATE NODE ID %s: the node at %s uses this node's id. Was the "
                          "state dir (%s) copied? Delete node_id there on one of them.",
                          card.node_id, card.rpc, self.config.node.state_dir)
                continue
            if change.kind == "full":
                log.warning("peer table full (%d peers): ignoring %s (%s) at %s", MAX_PEERS,
                            card.name, card.node_id, card.rpc)
                continue
            if change.kind == "endpoints":
                log.info("peer %s moved to %s", card.name, card.rpc)
                self._close_link(card.node_id, "peer moved")
                self._subscribe(peer)
                continue
            new = change.new
            if new is PeerState.DISCOVERED:
                log.info("peer found: %s (%s) at %s via %s", card.name, card.node_id,
                         peer.address, peer.source)
                self._subscribe(peer)
            elif new is PeerState.ALIVE:
                verb = "is back" if change.old is PeerState.DEAD else "joined"
                if change.old is not PeerState.SUSPECT:
                    log.info("peer %s %s: %s at %s, model %s, %d worker(s)", card.name, verb,
                             card.node_id, card.rpc, card.model_id, card.workers)
                self._subscribe(peer)
            elif new is PeerState.DEAD:
                why = f"no heartbeat for {peer.interval_s * self.table.liveness:.1f} s"
                log.warning("peer %s (%s) is dead: %s", card.name, card.node_id, why)
                self._close_link(card.node_id, f"peer {card.name} died ({why})")
            elif new is PeerState.LEFT:
                log.info("peer %s (%s) left", card.name, card.node_id)
                self._close_link(card.node_id, f"peer {card.name} left")
                self._unsubscribe(card.node_id)
            elif new is PeerState.INCOMPATIBLE:
                log.warning("peer %s (%s) is incompatible: %s; it is never sent votes",
                            card.name, card.node_id, peer.detail)
                self._close_link(card.node_id, f"peer {card.name} is incompatible")
                self._unsubscribe(card.node_id)

    def _subscribe(self, peer: Peer) -> None:
        node_id, pub = peer.card.node_id, peer.card.pub
        old = self._subscribed.get(node_id)
        if old == pub:
            return
        if old is not None:
            self.subscriber.disconnect(old)
        self._subscribed[node_id] = pub
        self.subscriber.connect(pub)

    def _unsubscribe(self, node_id: str) -> None:
        old = self._subscribed.pop(node_id, None)
        if old is not None:
            self.subscriber.disconnect(old)

    def _link(self, peer: Peer) -> PeerLink:
        entry = self.links.get(peer.card.node_id)
        if entry is not None:
            return entry.link
        if self._nursery is None:
            raise PeerUnavailable("federation is not running")
        link = PeerLink(peer.card.rpc, peer.card.name)
        entry = _Link(link, trio.CancelScope())
        self.links[peer.card.node_id] = entry
        self._nursery.start_soon(_run_link, entry)
        return link

    def _close_link(self, node_id: str, why: str) -> None:
        entry = self.links.pop(node_id, None)
        if entry is not None:
            entry.link.fail_all(PeerUnavailable(why))
            entry.scope.cancel()

    # --- used by the coordinator and the rpc server --------------------------------

    def candidates_for(self, model_id: str) -> list[Peer]:
        """ALIVE peers a vote may go to (same model unless configured otherwise)."""
        same = model_id if self.config.federation.same_model_only else None
        return self.table.alive(model_id=same)

    async def vote(self, node_id: str, request: GenerateRequest, deadline_s: float) -> Vote:
        """Ask one peer for ``request.n`` candidates; Cancel is sent if we stop waiting."""
        peer = self.table.peers.get(node_id)
        if peer is None or peer.state is not PeerState.ALIVE:
            raise PeerUnavailable(f"peer {node_id} is not alive")
        link = self._link(peer)
        rid = new_request_id()
        msg = VoteRequest(request_id=rid, request=request, origin=self.me.name,
                          deadline_ms=max(1, int(deadline_s * 1000)))
        self.in_flight[node_id] = self.in_flight.get(node_id, 0) + 1
        done = False
        try:
            # the caller's cancel scope enforces the deadline; this timeout is a backstop
            reply = await link.request(msg, rid, deadline_s + 1.0)
            done = True
        finally:
            self.in_flight[node_id] -= 1
            if not done:
                link.cancel(rid)
        if not isinstance(reply, Vote):
            raise RemoteProtocolError(f"{peer.card.name} answered {type(reply).__name__}, "
                                      "not a Vote")
        return reply

    def peers(self) -> list[PeerInfo]:
        now = trio.current_time()
        out = [PeerInfo(node_id=p.card.node_id, name=p.card.name, address=p.address,
                        state=p.state.value, model_id=p.card.model_id, load=p.load,
                        last_seen_s=None if p.last_heard is None else round(now - p.last_heard, 3),
                        rtt_ms=None if p.rtt_ms is None else round(p.rtt_ms, 3),
                        source=p.source, rpc=p.card.rpc, detail=p.detail)
               for p in self.table.peers.values()]
        out += [PeerInfo(node_id="", name="", address=endpoint, state="unreachable",
                         model_id="", load=Load(state="loading"), last_seen_s=None, rtt_ms=None,
                         source="static", rpc=endpoint, detail=why)
                for endpoint, why in self.static.items() if why]
        return out


async def _run_link(entry: _Link) -> None:
    with entry.scope:
        await entry.link.serve()
