"""The probes of runtime/federation.py: asking a node at an endpoint, admitting what answers.

Owns: probing static endpoints, endpoints learned by peer exchange (runtime/exchange.py:
asking an ALIVE peer for the peers it knows, then each named node at its endpoint),
announced and DEAD peers (pings, which also measure round-trip time), claimed moves, and
nodes that contacted this one showing their card (``hello``, at most once per interval
per node id, and ``from_link`` for what arrives over a member's own link; ``_contacted``
probes them at the endpoints they announce, else over their own link to us when they
gave one); and the one rule for admitting a node that answered: it is the node expected
there (when one is named) and of our swarm and key (core/claims.py), then it is
discovered (moved, if it was known elsewhere: it answered here) and heard at the
address we reached it at. A node's own link never displaces a link to a node that is
alive over another, and binds one node id to one connection (runtime/backlinks.py).
``Prober`` is held by runtime/federation.py's Federation, which gives it the table, the
links and three of its own hands: ``apply`` (carry out the table's changes), ``spawn``
(run a probe job, one per key at a time) and ``link`` (a member's vote link). It must
not: carry out the table's changes itself, or open links of its own.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from zswarm.core import claims
from zswarm.core.ids import new_request_id, unpinned
from zswarm.core.messages import (
    Heartbeat,
    Message,
    NodeCard,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
)
from zswarm.core.peers import Change, Peer, PeerState, PeerTable
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError
from zswarm.net.guard import DropCounter
from zswarm.runtime import exchange
from zswarm.runtime.members import Remembered
from zswarm.statedir import Member

if TYPE_CHECKING:
    from zswarm.runtime.backlinks import Backlinks
    from zswarm.runtime.connections import Link, PeerIO

log = logging.getLogger("zswarm.runtime.federation")

#: ping every ALIVE peer for its round-trip time every this many heartbeats, each peer at
#: its own beat (spread: no burst of N-1 pings at once). RTT is shown, never decided on,
#: and each ping costs both sides a request and a wake-up: measured at 64 nodes on one
#: machine, pings every 5 beats were a third of an idle node's CPU (bench/swarm_size.py,
#: docs/scale.md); every 60, a swarm of 64 pings about once a second each way
PING_EVERY = 60
#: node ids whose hellos are remembered (each acted on at most once per interval)
MAX_CONTACTS = 1024


def _remember(times: dict[str, float], node_id: str, value: float) -> None:
    """Set ``times[node_id]`` as the newest entry; the oldest go past MAX_CONTACTS."""
    times.pop(node_id, None)
    times[node_id] = value
    while len(times) > MAX_CONTACTS:
        del times[next(iter(times))]


class Prober:
    """The probe jobs of a federating node, and what it remembers of who reached it."""

    def __init__(self, me: NodeCard, table: PeerTable, peer_io: PeerIO, backlinks: Backlinks,
                 *, interval_s: float, static: list[str], drops: DropCounter,
                 remembered: Remembered | None = None,
                 apply: Callable[[list[Change]], None],
                 spawn: Callable[..., None],  # (key, job, *args)
                 link: Callable[[Peer], Link],
                 on_heartbeat: Callable[[Heartbeat], None]) -> None:
        self.me = me
        self.table = table
        self.peer_io = peer_io
        self.backlinks = backlinks
        self.interval_s = interval_s
        #: static endpoint -> why it is not in the table yet ("" once it answered)
        self.static: dict[str, str] = dict.fromkeys(static, "not answered yet")
        self._static_ids: dict[str, str] = {}  # node id -> static endpoint
        #: members verified before (runtime/members.py): probed while not alive
        self.remembered = remembered
        self._probe_drops = drops
        self._apply = apply
        self._spawn = spawn
        self._link = link
        self._on_heartbeat = on_heartbeat
        self._tried = exchange.Tried()
        #: node id -> when a hello of it may be acted on again (bounded, oldest first out)
        self._contact_at: dict[str, float] = {}
        #: node id -> when it last asked our status naming itself (MAX_CONTACTS at most)
        self._greeted: dict[str, float] = {}
        #: mDNS peers -> ALIVE since: one interval later they get a hello unless they
        #: reached us meanwhile
        self._hello_due: dict[str, float] = {}

    def alive_over_mdns(self, node_id: str) -> None:
        """An mDNS peer is ALIVE: unless it reaches us within an interval, say hello."""
        self._hello_due[node_id] = trio.current_time()

    def static_lost(self, node_id: str, why: str) -> None:
        """A static peer died or left: probe its endpoint again (it may come back elsewhere)."""
        endpoint = self._static_ids.get(node_id)
        if endpoint is not None and endpoint in self.static:
            self.static[endpoint] = why

    def hello(self, node_id: str, card: NodeCard | None, *, back: bytes | None) -> None:
        """A node asked for our status naming itself. Without its card: if we think it
        dead, probe it now. With it: know it, unless it is known alive there already
        (probed back: runtime/probes.py ``_contacted``), at most once per interval."""
        now = trio.current_time()
        _remember(self._greeted, node_id, now)  # it reached us: it needs no hello of ours
        if card is None or card.node_id != node_id or claims.unproven(card) \
                or claims.foreign(card, self.me):
            if self.table.hello(node_id, now):
                self._spawn(node_id, self.ping, node_id)
            return
        peer = self.table.peers.get(node_id)
        bound = self.backlinks.ident_of.get(node_id)
        if peer is not None and peer.state in (PeerState.ALIVE, PeerState.SUSPECT) \
                and (bound is None or bound == back) and self._same_place(peer, card):
            return
        if now < self._contact_at.get(node_id, -math.inf):
            return
        _remember(self._contact_at, node_id, now + self.interval_s)
        self._spawn(f"contact:{node_id}", self._contacted, card, back)

    def _heard(self, reply: Status, card: NodeCard, now: float) -> list[Change]:
        """A status reply heard from the node: its load (as believable) and interval."""
        interval_s = (None if reply.interval_ms is None
                      else claims.believable_interval_s(reply.interval_ms, self.interval_s))
        return self.table.heard(card, claims.believable_load(reply.load, card), now,
                                interval_s=interval_s)

    @staticmethod
    def _same_place(peer: Peer, card: NodeCard) -> bool:
        return (peer.card.rpc, peer.card.pub) == (card.rpc, card.pub)

    def from_link(self, ident: bytes, msg: Message, public: str) -> None:
        """A reply or heartbeat over a member's own link to our ROUTER (runtime/rpc.py),
        whose key (``public``) its handshake proved."""
        if not isinstance(msg, Heartbeat):
            self.backlinks.reply(ident, msg)
            return
        why = claims.unproven(msg.card, public)
        if why:  # a heartbeat can only be the sender's own
            raise RemoteProtocolError(f"a heartbeat over a link that {why}",
                                      reason="wrong-sender")
        if self.backlinks.speaks_for(ident, msg.card.node_id):
            self._on_heartbeat(msg)
        else:  # a link not (or no longer) bound: its node may have reconnected
            self.hello(msg.card.node_id, msg.card, back=ident)

    def beat(self, beat: int) -> None:
        """What to probe at this heartbeat: static peers not in the table, a peer to
        exchange with (every few beats), DEAD and LEFT peers (backed off), pings for RTT."""
        for endpoint, why in self.static.items():
            if why:
                self._spawn(endpoint, self._probe_static, endpoint)
        if self.remembered is not None:
            clock = trio.current_time()  # (a member in the table is probed as its state
            # says: only the ones it does not hold, or forgot, are probed from memory)
            for member in self.remembered.due(clock, set(self.table.peers)):
                self.remembered.probing(member.node_id, clock)
                self._spawn(f"remembered:{member.node_id}", self._probe_remembered, member)
        if exchange.is_exchange_beat(beat):
            partner = exchange.partner_at(beat, [p.card.node_id for p in self.table.alive()],
                                          self.me.node_id)
            if partner is not None:
                self._spawn(f"exchange:{partner}", self.exchange_with, partner)
        now = trio.current_time()
        for node_id, alive_at in list(self._hello_due.items()):
            if now < alive_at + self.interval_s:
                continue
            del self._hello_due[node_id]
            peer = self.table.peers.get(node_id)
            if peer is not None and peer.state is PeerState.ALIVE \
                    and self._greeted.get(node_id, -math.inf) < alive_at - self.interval_s:
                # found over mDNS but it has not reached us: it may not be able to (our
                # firewall), so we say hello over our link and it may ask us back over it
                self._spawn(f"hello:{node_id}", self.ping, node_id)
        for peer in self.table.due_probes(now):
            self._spawn(peer.card.node_id, self.ping, peer.card.node_id)
        for peer in list(self.table.peers.values()):
            # each peer at a beat of its own, and of ours: nodes that started together
            # do not all ping the same peer in the same second
            due = (beat + zlib.crc32(f"{self.me.node_id}{peer.card.node_id}".encode())
                   ) % PING_EVERY == 0 \
                or peer.rtt_ms is None
            if peer.state is PeerState.DISCOVERED or (due and peer.state is PeerState.ALIVE):
                self._spawn(peer.card.node_id, self.ping, peer.card.node_id)

    async def _probe_static(self, entry: str) -> None:
        """A [federation] peers entry (an address: tcp://HOST:PORT?key=KEY): probed
        pinned to its key; one without a key cannot be reached (nobody may pose as a
        member, so a node is only asked with the key it must answer with)."""
        endpoint, public = unpinned(entry)
        if not public:
            self.static[entry] = ("its node key is not known: write it as "
                                  "tcp://HOST:PORT?key=KEY (the node prints its address at "
                                  "start; zswarm peers and node.json show it)")
            return
        try:
            host, port = endpoint[len("tcp://"):].rsplit(":", 1)
            infos = await trio.socket.getaddrinfo(host, int(port), trio.socket.AF_INET)
            address = claims.ipv4_literal(str(infos[0][4][0]))
            reply, rtt_ms = await self.peer_io.status(claims.tcp_endpoint(address, port),
                                                      public, endpoint)
        except PeerUnavailable:  # silent: say why, as doctor would (a key, most often)
            self.static[entry] = await _why_silent(address, int(port), bool(self.me.key))
            return
        except (OSError, ValueError, ZswarmError) as exc:
            self.static[entry] = str(exc) or type(exc).__name__
            return
        why = self._admit(reply, rtt_ms, address, "static")
        self.static[entry] = why
        if not why:
            self._static_ids[reply.card.node_id] = entry

    async def _probe_remembered(self, member: Member) -> None:
        """A member verified before, not alive now: believed again only with its key
        (the probe is pinned to it)."""
        endpoint, public = unpinned(member.address)
        try:
            address, port = claims.split_endpoint(endpoint)
            reply, rtt_ms = await self.peer_io.status(claims.tcp_endpoint(address, port),
                                                      public, member.name)
        except ZswarmError as exc:
            log.debug("remembered member %s (%s) at %s: %s", member.name, member.node_id,
                      endpoint, exc)
            return
        why = self._admit(reply, rtt_ms, address, "remembered", expected=member.node_id)
        if why:
            self._probe_drops.drop("remembered", f"{member.node_id} at {endpoint}: {why}")

    def _admit(self, reply: Status, rtt_ms: float, address: str, source: str,
               expected: str | None = None, *, asked_at: float | None = None) -> str:
        """A node answered a probe at ``address``: add it to the table (it is heard), or
        say why not ("" = added). An answer older than a goodbye (sent at ``asked_at``)
        or a leaving node's last does not bring it back (PeerTable.after_goodbye)."""
        card = claims.card_at(reply.card, address)
        if expected is not None and card.node_id != expected:
            return f"{card.node_id} answers there, not {expected}"
        why = claims.unproven(card) or claims.foreign(card, self.me)
        if why:
            return why
        if self.table.after_goodbye(card.node_id, math.inf if asked_at is None else asked_at,
                                    reply.load):
            return "it said goodbye"
        now = trio.current_time()
        self._apply(self.table.moved(card.node_id, card, address))  # it answered here
        self._apply(self.table.discovered(card, address, source, now))
        self._apply(self._heard(reply, card, now))
        self.table.rtt(card.node_id, rtt_ms)
        return ""

    async def exchange_with(self, node_id: str) -> None:
        """Ask an ALIVE peer for the peers it knows; probe those worth it (exchange.py)."""
        peer = self.table.peers.get(node_id)
        if peer is None or peer.state is not PeerState.ALIVE:
            return
        rid = new_request_id()
        try:
            reply = await self._link(peer).request(PeersRequest(request_id=rid), rid,
                                                          timeout_s=self.interval_s)
        except PeerUnavailable as exc:  # busy or gone: its heartbeats will tell
            log.debug("peer exchange with %s: %s", peer.card.name, exc)
            return
        if not isinstance(reply, PeersReply):
            raise RemoteProtocolError(f"answered {type(reply).__name__}, not PeersReply",
                                      reason="unexpected")
        learned = sum(1 for p in self.table.peers.values() if p.source == "exchange")
        now = trio.current_time()
        known = self.table.peers.keys() | self._tried.recent_ids(now)
        for entry in exchange.worth_probing(reply, me=self.me, known=known,
                                            room=exchange.MAX_EXCHANGED - learned):
            self._tried.add(entry.node_id, now)
            self._spawn(f"learned:{entry.node_id}", self._probe_learned, entry, peer.card.name)

    async def _probe_learned(self, entry: exchange.Learned, member: str) -> None:
        if entry.node_id in self.table.peers:
            return
        try:
            reply, rtt_ms = await self.peer_io.status(entry.endpoint, entry.public,
                                                      entry.node_id)
        except ZswarmError as exc:
            log.debug("%s named %s at %s: no answer (%s)", member, entry.node_id,
                      entry.endpoint, exc)
            return
        why = self._admit(reply, rtt_ms, entry.address, "exchange", expected=entry.node_id)
        if why:
            self._probe_drops.drop("exchange", f"{member} named {entry.node_id} at "
                                   f"{entry.endpoint}: {why}")

    async def ping(self, node_id: str) -> None:
        peer = self.table.peers.get(node_id)
        if peer is None:
            return
        # our card, over the standing link: a member that cannot reach us, or does not
        # know us, probes us back (and may ask us back over this link)
        hello = StatusRequest(request_id=new_request_id(), sender=self.me.node_id,
                              card=self.me, standing=True)
        asked_at = trio.current_time()
        try:
            if peer.state in (PeerState.ALIVE, PeerState.SUSPECT):
                t0 = time.perf_counter()
                reply = await self._link(peer).request(hello, hello.request_id,
                                                       timeout_s=self.interval_s)
                if not isinstance(reply, Status):
                    raise RemoteProtocolError(f"answered {type(reply).__name__}, not Status")
                rtt_ms = (time.perf_counter() - t0) * 1000
            else:  # DISCOVERED, DEAD, LEFT: no standing link to a node that may not be there
                reply, rtt_ms = await self.peer_io.status(peer.card.rpc, peer.card.public,
                                                          peer.card.name)
        except ZswarmError as exc:
            log.debug("ping %s: %s", peer.card.name, exc)
            return
        why = claims.unproven(reply.card, peer.card.public)
        if why:  # a member that answers in another's name: it lies, and is not believed
            self._probe_drops.drop("wrong-key", f"{peer.card.name} ({node_id}) {why}")
            return
        if not self.table.after_goodbye(node_id, asked_at, reply.load):
            self.table.rtt(node_id, rtt_ms)
            self._apply(self._heard(reply, reply.card, trio.current_time()))

    async def confirm_move(self, node_id: str, claim: NodeCard) -> None:
        """A record says a known peer moved: believe it once the node answers there."""
        peer = self.table.peers.get(node_id)
        if peer is None:
            return
        try:  # pinned to the key we know it by: only it can answer there
            reply, _ = await self.peer_io.status(claim.rpc, peer.card.public, claim.name)
        except ZswarmError as exc:
            log.info("a record says %s moved to %s; it does not answer there with its key: "
                     "%s", node_id, claim.rpc, exc)
            return
        self._apply(self.table.moved(node_id, claim, claims.split_endpoint(claim.rpc)[0]))
        self._apply(self._heard(reply, reply.card, trio.current_time()))

    async def _contacted(self, card: NodeCard, back: bytes | None) -> None:
        """A node contacted us showing its card: know it where it answers as itself -
        at the endpoints it announces, or else over its own link to us (``back``)."""
        node_id = card.node_id
        try:
            address, port = claims.split_endpoint(card.rpc)
            endpoint = claims.tcp_endpoint(address, port)
        except RemoteProtocolError as exc:
            self._probe_drops.drop(exc.reason, f"a hello of {node_id}: {exc}")
            return
        bound = self.backlinks.ident_of.get(node_id)
        asked_at = trio.current_time()
        if bound is None:
            try:
                reply, rtt_ms = await self.peer_io.status(endpoint, card.public, card.name)
            except ZswarmError as exc:
                log.debug("%s contacted us; no answer at %s (%s)", node_id, endpoint, exc)
            else:
                why = self._admit(reply, rtt_ms, address, "contact", expected=node_id,
                                  asked_at=asked_at)
                if why:
                    self._probe_drops.drop("contact", f"{node_id} at {endpoint}: {why}")
                return
        if back is None:
            return
        peer = self.table.peers.get(node_id)
        if peer is not None and peer.state in (PeerState.ALIVE, PeerState.SUSPECT) \
                and bound != back:  # alive over another link: a new one is not believed
            return
        if bound is None and self.backlinks.full():
            self._probe_drops.drop("backlinks-full", f"{node_id} over its own link")
            return
        rid = new_request_id()
        t0 = time.perf_counter()
        try:
            answer = await self.backlinks.link(back, card.name).request(
                StatusRequest(request_id=rid, sender=self.me.node_id), rid,
                timeout_s=self.interval_s)
        except ZswarmError as exc:
            log.debug("%s: no answer over its own link either (%s)", node_id, exc)
            return
        if not isinstance(answer, Status) or claims.unproven(answer.card, card.public) \
                or claims.foreign(answer.card, self.me):
            self._probe_drops.drop("contact", f"{node_id}'s link answered as another node")
            return
        rtt_ms = (time.perf_counter() - t0) * 1000
        if not self.backlinks.bind(back, node_id):
            return
        self.peer_io.forget(node_id, "reached over its own link now")
        self._admit(answer, rtt_ms, address, "contact", expected=node_id, asked_at=asked_at)


async def _why_silent(address: str, port: int, keyed: bool) -> str:
    """Why a static member did not answer: nothing listens there, or something does and
    stays silent (a node of another swarm key, or none, never answers us)."""
    try:
        with trio.move_on_after(1.0):
            stream = await trio.open_tcp_stream(address, port)
            await stream.aclose()
            return ("no answer, though something listens there: it may use another swarm key "
                    f"{'than this node' if keyed else '(this node has none)'}, or not be a "
                    "zswarm node (zswarm doctor shows each key's fingerprint)")
    except OSError:
        return "no answer: nothing listens there (is its node running? is the port right?)"
    return "no answer, and no TCP connection within 1 s (a firewall?)"
