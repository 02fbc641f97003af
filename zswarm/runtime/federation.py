"""The node's view of the swarm: discovery, heartbeats, peer links and votes.

Owns: the PeerTable (core/peers.py) and carrying out what its changes mean -
subscribing to a peer's heartbeats once it has answered (never to a mere
announcement, nor to DEAD, LEFT or forgotten peers), opening and closing vote links
(both through runtime/connections.py), probing announced peers, claimed moves and
cards, DEAD, LEFT and static peers and peers that say hello (a node that contacts
this one is probed back and known: directly, or over its own link when it accepts
no inbound connections, runtime/backlinks.py; at most MAX_JOBS probes at once),
logging joins, deaths, leaves and demotions once each (at most NOTES_PER_KIND a
minute); publishing this node's heartbeat (on its PUB socket, and over the links of
peers that can reach this node only over links it opened); pinging peers for their
round-trip time; and sending one VoteRequest to one peer (``vote``), whose answer
is checked (core/claims.py) before anyone uses it, and planning peers with what
they delivered. What arrives from peers is handled inside the guard of the loop
that read it (net/guard.py), and a library error while acting on one peer's data
costs that peer. The probes themselves (what to ask a node at an endpoint, and
what to admit from the answer) are runtime/probes.py's Prober, which this class
holds and lends its hands (apply, spawn, link). It must not: decide fan-out
(core/plan.py) or combine candidates (coordinator + core/consensus.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from logging import ERROR, INFO, WARNING

import trio

from zswarm.core import claims
from zswarm.core.catalog import Holder, held_by
from zswarm.core.ids import new_request_id, unpinned
from zswarm.core.limits import wire_ms
from zswarm.core.messages import (
    PROTOCOL_VERSION,
    Candidate,
    GenerateRequest,
    Heartbeat,
    Load,
    Message,
    NodeCard,
    PeerInfo,
    Reach,
    Vote,
    VoteRequest,
)
from zswarm.core.peers import MAX_PEERS, Change, ChangeKind, Peer, PeerState, PeerTable
from zswarm.core.plan import NodeLoad
from zswarm.errors import PeerUnavailable, RemoteProtocolError, ZswarmError
from zswarm.net.bus import Publisher
from zswarm.net.guard import Budget, MessageGuard, QuietLog
from zswarm.net.mdns import Found, MdnsEvent, serve_mdns
from zswarm.runtime.backlinks import Backlinks
from zswarm.runtime.connections import Connections, Inbound, Link, PeerIO
from zswarm.runtime.context import NodeContext
from zswarm.runtime.members import Remembered
from zswarm.runtime.probes import Prober

log = logging.getLogger(__name__)

#: nodes of our swarm's name but another key remembered for the start-up report
MAX_FOREIGN = 16

#: the node's clock ticks this many times per heartbeat interval, on a fixed grid: each
#: tick reads every peer's waiting heartbeats and checks the table's silences, so a
#: heartbeat is read at most one tick after it arrived (the table allows for that lag)
#: and an idle node wakes this often, not once per heartbeat received
TICKS_PER_INTERVAL = 4
#: probes and pings waiting or running at once, at most (a sustained flood of records
#: must not queue tasks without end; what is skipped is tried again at the next beat)
MAX_JOBS = 256
#: swarm changes logged (and kept as events) per kind in any NOTES_WINDOW_S
NOTES_PER_KIND = 20
NOTES_WINDOW_S = 60.0
#: what peers, the status page and doctor say of a peer by how it is reached
REACH_NOTES: dict[Reach, str] = {
    "direct": "",
    "its link": "reached over its own link (it accepts no inbound connections)",
    "our link": "reaches this node only over this node's link (this node accepts no "
                "inbound connections from it)",
}


class Federation:
    """``Peers`` (runtime/context.py) for a federating node; run ``nursery.start(serve)``.

    ``peer_io`` is built here unless given (the tests give a recording one);
    ``backlinks`` (over the RPC ROUTER) reach members that accept no connections, and
    ``inbound`` carries what peers ask back over our links to the RPC server.
    """

    def __init__(self, ctx: NodeContext, publisher: Publisher, *, mdns_address: str,
                 peer_io: PeerIO | None = None, backlinks: Backlinks | None = None,
                 inbound: trio.MemorySendChannel[Inbound] | None = None,
                 remembered: Remembered | None = None) -> None:
        fed = ctx.config.federation
        self.ctx = ctx
        self.config = ctx.config
        self.me = ctx.card
        self.publisher = publisher
        self.mdns_address = mdns_address
        self.interval_s = fed.heartbeat_interval_s
        self.table = PeerTable(self.me, interval_s=self.interval_s, liveness=fed.liveness,
                               forget_after_s=fed.forget_after_s,
                               tick_every_s=self.interval_s / TICKS_PER_INTERVAL,
                               read_lag_s=self.interval_s / TICKS_PER_INTERVAL)
        assert peer_io is not None or ctx.creds is not None  # (a federation has a key)
        self.peer_io = peer_io or Connections(self.on_heartbeat, drops=ctx.drops,
                                              creds=ctx.creds,  # type: ignore[arg-type]
                                              probe_timeout_s=self.interval_s,
                                              hello=self.me.node_id, inbound=inbound)
        self.backlinks = backlinks or Backlinks(None, ctx.drops.counter("backlinks"))
        #: votes sent and not yet answered, by peer (counted as queue in peer_loads)
        self._votes_out: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None
        self._seq = 0
        self._busy: set[str] = set()
        self._mdns_drops = ctx.drops.counter("mdns")
        self._probe_drops = ctx.drops.counter("probes")
        #: bad votes, counted with the vote links' dropped replies (the same socket name)
        self._vote_drops = ctx.drops.counter("votes")
        self._quiet = QuietLog(log, every_s=60.0)
        #: nodes of this swarm's name that mDNS showed with another key (or none): what
        #: they are, for the start-up report (bounded: MAX_FOREIGN)
        self._foreign: dict[str, str] = {}
        self._budget = Budget(NOTES_PER_KIND, NOTES_WINDOW_S)
        #: the members verified before, probed after a restart (None: not kept)
        self.remembered = remembered
        self.prober = Prober(
            self.me, self.table, self.peer_io, self.backlinks, interval_s=self.interval_s,
            static=fed.peers if fed.discovery in ("static", "both") else [],
            remembered=remembered,
            drops=self._probe_drops, apply=self._apply, spawn=self._spawn, link=self._link,
            on_heartbeat=self.on_heartbeat)

    # --- services -----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.peer_io.serve)
            if self.config.federation.discovery in ("mdns", "both"):
                # bounded: a flood of records waits in zeroconf's threads, then is dropped
                send, receive = trio.open_memory_channel[MdnsEvent](MAX_PEERS)
                nursery.start_soon(self._mdns_events, receive)
                await nursery.start(serve_mdns, self.mdns_address, self.me, send,
                                    self._mdns_drops)
            nursery.start_soon(self._clock)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._say_goodbye()
                self._remember(force=True)

    def _remember(self, *, force: bool = False) -> None:
        """The members alive now, remembered (runtime/members.py; written now and then)."""
        if self.remembered is None:
            return
        now = time.time()
        for peer in self.table.alive():
            self.remembered.seen(peer.card, now)
        self.remembered.flush(now, force=force)

    def _say_goodbye(self) -> None:
        try:
            self._publish(self._heartbeat(leaving=True))
        except (ZswarmError, trio.ClosedResourceError):
            pass

    def _publish(self, hb: Heartbeat) -> None:
        self.peer_io.heartbeat_back(hb)
        self.publisher.publish(hb)

    def _heartbeat(self, *, leaving: bool = False) -> Heartbeat:
        self._seq += 1
        load = self.ctx.load()
        if leaving or load.state != "ready":  # no figures: nobody should send work
            load = Load(state="leaving" if leaving else load.state, max_queue=load.max_queue)
        return Heartbeat(card=self.me, seq=self._seq, load=load,
                         interval_ms=self.config.federation.heartbeat_interval_ms)

    async def _clock(self) -> None:
        """One wake-up per tick, on a fixed grid: read the peers' heartbeats, check the
        table's silences; every TICKS_PER_INTERVAL ticks also publish ours and probe.

        Ticks a stalled node missed are skipped, not run back to back (the table
        sees the stall and does not blame the peers for it)."""
        every = self.interval_s / TICKS_PER_INTERVAL
        start, ticks = trio.current_time(), 0
        while True:
            self.peer_io.read_heartbeats()
            if ticks % TICKS_PER_INTERVAL == 0:
                self._publish(self._heartbeat())
                self.prober.beat(ticks // TICKS_PER_INTERVAL)
                self._remember()
            self._apply(self.table.tick(trio.current_time()))
            ticks = max(ticks + 1, int((trio.current_time() - start) / every) + 1)
            await trio.sleep_until(start + ticks * every)

    def _spawn(self, key: str, job: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run a probe or ping unless one for the same key is still running (or too many are)."""
        if key in self._busy or self._nursery is None or len(self._busy) >= MAX_JOBS:
            return
        self._busy.add(key)

        async def once() -> None:
            try:  # a probe that fails in any way costs that probe (counted), never the node
                with MessageGuard(self._probe_drops):
                    await job(*args)
            finally:
                self._busy.discard(key)

        self._nursery.start_soon(once)

    async def _mdns_events(self, receive: trio.MemoryReceiveChannel[MdnsEvent]) -> None:
        async for event in receive:
            with MessageGuard(self._mdns_drops):
                self.on_mdns(event)

    def on_mdns(self, event: MdnsEvent) -> None:
        # A removal is advisory (anyone can send one, a crashed node never does):
        # only heartbeats, or their absence, change a known peer's state.
        if not isinstance(event, Found):
            return
        card = event.card
        if card.swarm != self.me.swarm:
            return  # another swarm on the same LAN: not ours to mention
        # a node of another protocol (an older one has no key) is listed as incompatible,
        # never asked: what to upgrade is worth saying; one of ours must prove its id
        why = claims.foreign(card, self.me) or (
            claims.unproven(card) if event.proto == PROTOCOL_VERSION else "")
        if why:  # never a peer; said once a minute per node, and in the start-up report
            self._quiet.info(card.node_id, "mDNS: ignoring %s (%s) at %s: it %s", card.name,
                             card.node_id, event.address, why)
            if len(self._foreign) < MAX_FOREIGN or card.node_id in self._foreign:
                self._foreign[card.node_id] = f"{card.name} at {event.address} {why}"
            return
        self._apply(self.table.discovered(card, event.address, "mdns", trio.current_time(),
                                          proto=event.proto))

    def on_heartbeat(self, hb: Heartbeat) -> None:
        if claims.unproven(hb.card) or claims.foreign(hb.card, self.me):
            return
        peer = self.table.peers.get(hb.card.node_id)
        if peer is None:
            return
        self._apply(self.table.heard(hb.card, claims.believable_load(hb.load, peer.card),
                                     trio.current_time(),
                                     interval_s=claims.believable_interval_s(
                                         hb.interval_ms, self.interval_s), take_card=False))

    def _let_go(self, node_id: str, why: str) -> None:
        """No links to the peer, its own included, and no subscription."""
        self.peer_io.forget(node_id, why)
        self.backlinks.unbind(node_id, why)

    def _link(self, peer: Peer) -> Link:
        """The link to ask the peer over: its own link to us, else ours to it."""
        return self.backlinks.bound(peer.card.node_id) or self.peer_io.link(peer)

    # --- carrying out the table's changes -----------------------------------------

    def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            try:
                self._carry_out(change)
            except ZswarmError as exc:  # zmq refused this peer's endpoint: it costs the peer
                log.warning("peer %s at %s: %s", change.peer.card.name, change.peer.card.rpc, exc)
                self._let_go(change.peer.card.node_id, str(exc))

    def _note(self, level: int, kind: str, fmt: str, *args: object) -> None:
        """Log a change of the swarm once, and keep it for the status page.

        At most NOTES_PER_KIND of a kind per NOTES_WINDOW_S: forged or flooded changes
        cost a few lines, and the next line written says how many were left out.
        """
        allowed, left_out = self._budget.allow(kind, time.monotonic())
        if not allowed:
            return
        text = fmt % args
        if left_out:
            text += f" (and {left_out} more like it not shown)"
        log.log(level, "%s", text)
        self.ctx.stats.event(logging.getLevelName(level).lower(), text)

    def _carry_out(self, change: Change) -> None:
        peer = change.peer
        card = peer.card
        kind = change.kind
        if kind is ChangeKind.DUPLICATE:
            self._note(ERROR, "duplicate", "DUPLICATE NODE ID %s: the node at %s uses "
                       "this node's id. Was "
                       "the state dir (%s) copied? Delete node_id there on one of them.",
                       card.node_id, card.rpc, self.config.node.state_dir)
        elif kind is ChangeKind.FULL:
            self._note(WARNING, "full", "peer table full (%d live peers): ignoring %s (%s) at %s",
                       MAX_PEERS, card.name, card.node_id, card.rpc)
        elif kind is ChangeKind.FORGOTTEN:
            log.debug("peer %s (%s) forgotten (%s)", card.name, card.node_id, peer.state.value)
            self._let_go(card.node_id, f"peer {card.name} forgotten")
        elif kind is ChangeKind.CARD_CLAIMED:
            self._spawn(card.node_id, self.prober.ping, card.node_id)
        elif kind is ChangeKind.MOVE_CLAIMED:
            assert change.claim is not None
            self._spawn(f"move:{card.node_id}", self.prober.confirm_move, card.node_id,
                        change.claim)
        elif kind is ChangeKind.ENDPOINTS:
            self._note(INFO, "moved", "peer %s moved to %s", card.name, card.rpc)
            self.peer_io.close_link(card.node_id, "peer moved")
            if peer.state in (PeerState.DISCOVERED, PeerState.ALIVE, PeerState.SUSPECT) \
                    and not self.backlinks.holds(card.node_id):
                self.peer_io.subscribe(peer)
        elif kind is ChangeKind.DEMOTED:
            self._note(WARNING, "demoted", "peer %s (%s) %s", card.name, card.node_id, peer.detail)
        elif kind is ChangeKind.RESTORED:
            self._note(INFO, "restored", "peer %s (%s) may be asked for votes again", card.name,
                       card.node_id)
        else:
            self._state_changed(change)

    def _state_changed(self, change: Change) -> None:
        peer, card, new = change.peer, change.peer.card, change.new
        if new is PeerState.DISCOVERED:  # only announced: anyone can announce (debug only)
            log.debug("peer announced: %s (%s) at %s via %s", card.name, card.node_id,
                      peer.address, peer.source)
            self._spawn(card.node_id, self.prober.ping, card.node_id)  # heard only once it answers
        elif new is PeerState.ALIVE:
            verb = "is back" if change.old in (PeerState.DEAD, PeerState.LEFT) else "joined"
            if change.old is not PeerState.SUSPECT:
                self._note(INFO, "joined", "peer %s %s: %s at %s, model %s, %d worker(s)", card.name,
                           verb, card.node_id, card.rpc, card.model_id, card.workers)
            if not self.backlinks.holds(card.node_id):
                self.peer_io.subscribe(peer)
            if change.old is not PeerState.SUSPECT \
                    and peer.source in ("static", "exchange", "remembered"):
                # it may not know us: say hello over the standing link (a member that
                # does not know us, or cannot connect to us, probes us back and may ask
                # us over it)
                self._spawn(f"hello:{card.node_id}", self.prober.ping, card.node_id)
            elif change.old is not PeerState.SUSPECT and peer.source == "mdns":
                # it knows us from mDNS too and probes us within moments: hello only if
                # it has not reached us by the next beat (no hello storm when a swarm of
                # mDNS peers starts together)
                self.prober.alive_over_mdns(card.node_id)
            if change.old is not PeerState.SUSPECT and peer.source != "mdns":
                # the members it knows, at once: a peer mDNS found says mDNS works here,
                # so its members announce themselves too (an exchange per join of an
                # mDNS swarm of 64 was a probe storm at start); the periodic exchange
                # (runtime/exchange.py) still finds any it does not reach
                self._spawn(f"exchange:{card.node_id}", self.prober.exchange_with,
                            card.node_id)
        elif new is PeerState.DEAD:
            why = f"no heartbeat for {peer.interval_s * self.table.liveness:.1f} s"
            if peer.last_heard is None:  # an announcement nobody answered for
                log.debug("announced peer %s (%s) never answered", card.name, card.node_id)
            else:
                self._note(WARNING, "dead", "peer %s (%s) is dead: %s", card.name,
                           card.node_id, why)
            self._let_go(card.node_id, f"peer {card.name} died ({why})")
            self.prober.static_lost(card.node_id, "dead: " + why)
            # one probe at once: a peer only starved of CPU (seen at 64 nodes starting on
            # one machine) answers and is back now, not after its first back-off
            self._spawn(card.node_id, self.prober.ping, card.node_id)
        elif new is PeerState.LEFT:
            self._note(INFO, "left", "peer %s (%s) left", card.name, card.node_id)
            self._let_go(card.node_id, f"peer {card.name} left")
            self.prober.static_lost(card.node_id, "left")
        elif new is PeerState.INCOMPATIBLE:
            self._note(WARNING, "incompatible", "peer %s (%s) is incompatible: %s; it is "
                       "never sent votes",
                       card.name, card.node_id, peer.detail)
            self._let_go(card.node_id, f"peer {card.name} is incompatible")

    # --- Peers: what the coordinator, the rpc server and the HTTP shim ask ------------

    def peer_loads(self, model_id: str, allowed: Sequence[str] | None, *,
                   loaded: bool = True) -> list[NodeLoad]:
        """ALIVE, ready peers a vote may go to: where ``model_id`` is loaded (any peer's
        default model too unless same_model_only), or with ``loaded=False`` where it is
        held but not loaded (such a vote loads it).

        Planned with what a peer delivered, not what it claims: at most one worker more
        than the votes it has answered at once (``Peer.proven``), and our own votes in
        flight to it count as its queue.
        """
        if allowed is not None and not allowed:
            return []
        same = self.config.federation.same_model_only
        out = []
        for p in self.table.alive():
            if p.load.state != "ready" or (allowed is not None and p.card.node_id not in allowed):
                continue
            state = next((st for m, st in held_by(p.card, p.load) if m.model_id == model_id),
                         None)
            if loaded and state != "loaded" and same:
                continue
            if not loaded and state not in ("unloaded", "loading"):
                continue
            ready = min(p.load.workers_ready, p.proven + 1)
            out.append(NodeLoad(p.card.node_id, ready, min(p.load.idle_workers, ready),
                                p.load.queue_depth + self._votes_out.get(p.card.node_id, 0)))
        return out

    def foreign(self) -> list[str]:
        return list(self._foreign.values())

    def models(self) -> dict[str, list[Holder]]:
        out: dict[str, list[Holder]] = {}
        for peer in self.table.alive():
            for held, state in held_by(peer.card, peer.load):
                out.setdefault(held.model_id, []).append(
                    Holder(peer.card.node_id, peer.card.name, state, held.name))
        return out

    def hello(self, node_id: str, card: NodeCard | None, *, back: bytes | None) -> None:
        self.prober.hello(node_id, card, back=back)

    def from_link(self, ident: bytes, msg: Message, public: str) -> None:
        self.prober.from_link(ident, msg, public)

    def peer_name(self, node_id: str) -> str:
        peer = self.table.peers.get(node_id)
        return peer.card.name if peer is not None else node_id

    def unanswered(self, node_id: str, why: str) -> None:
        """A vote sent to this peer was not answered in time: ask others for a while."""
        self._apply(self.table.demote(node_id, trio.current_time(), why))

    async def vote(self, node_id: str, request: GenerateRequest, deadline: float,
                   model_id: str | None = None) -> list[Candidate]:
        """Ask one peer for ``request.n`` candidates of ``model_id`` (None: its default
        model); Cancel is sent if we stop waiting.

        The peer is told the time left until ``deadline`` (trio time); the caller's
        cancel scope ends the wait.

        The answer is checked before it is returned (core/claims.py): a peer that
        breaks the rules is demoted and its vote counts as failed.
        """
        peer = self.table.peers.get(node_id)
        if peer is None or peer.state is not PeerState.ALIVE:
            raise PeerUnavailable(f"peer {node_id} is not alive")
        link = self._link(peer)
        rid = new_request_id()
        if model_id not in {m.model_id for m, _ in held_by(peer.card, peer.load)}:
            model_id = peer.card.model_id  # same_model_only = false: its default model
        msg = VoteRequest(request_id=rid, request=request, origin=self.me.name,
                          deadline_ms=wire_ms(deadline - trio.current_time()),
                          model_id=model_id)
        self._votes_out[node_id] = in_flight = self._votes_out.get(node_id, 0) + 1
        done = False
        try:
            reply = await link.request(msg, rid)
            done = True
        finally:
            self._votes_out[node_id] -= 1
            if not self._votes_out[node_id]:
                del self._votes_out[node_id]
            if not done:
                link.cancel(rid)
        try:
            if not isinstance(reply, Vote):
                raise RemoteProtocolError(f"answered {type(reply).__name__}, not a Vote",
                                          reason="bad-vote")
            candidates = claims.accept_vote(reply, node_id=node_id, name=peer.card.name,
                                            asked=request,
                                            model_id=model_id)
        except RemoteProtocolError as exc:
            self._vote_drops.drop(exc.reason, f"{peer.card.name}: {exc}")
            self._apply(self.table.demote(node_id, trio.current_time(), str(exc)))
            raise
        self.table.vote_answered(node_id, in_flight)
        return candidates

    def _reach(self, node_id: str, back: set[str]) -> Reach:
        if self.backlinks.holds(node_id):
            return "its link"
        return "our link" if node_id in back else "direct"

    def peers(self) -> list[PeerInfo]:
        now = trio.current_time()
        back = self.peer_io.asked_back()
        out = []
        for p in self.table.peers.values():
            reach = self._reach(p.card.node_id, back)
            out.append(PeerInfo(
                node_id=p.card.node_id, name=p.card.name, address=p.address,
                state=p.state.value, model_id=p.card.model_id, load=p.load,
                last_seen_s=None if p.last_heard is None else round(now - p.last_heard, 3),
                rtt_ms=None if p.rtt_ms is None else round(p.rtt_ms, 3), source=p.source,
                rpc=p.card.rpc, detail=p.detail or REACH_NOTES[reach], reach=reach,
                models=p.card.models, public=p.card.public))
        out += [PeerInfo(node_id="", name="", address=unpinned(entry)[0], state="unreachable",
                         model_id="", load=Load(state="loading"), last_seen_s=None, rtt_ms=None,
                         source="static", rpc=entry, detail=why)
                for entry, why in self.prober.static.items() if why]
        return out

