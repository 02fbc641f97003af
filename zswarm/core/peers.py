"""PeerTable: the peer lifecycle as a pure state machine with an explicit transition table.

States: DISCOVERED (mDNS or static config, not heard yet) -> ALIVE (heartbeat or
status reply heard) -> SUSPECT (a heartbeat missed) -> DEAD (silent for
interval x liveness) -> ALIVE when heard again; LEFT after a goodbye heartbeat;
INCOMPATIBLE when the peer speaks another protocol version (never sent votes).
mDNS only introduces peers; only hearing from a peer keeps it alive.

Rules against a hostile LAN, all here so they hold whatever transport brought the event:
- a peer's endpoints come from where it was discovered, never from its heartbeats;
  a record that moves a live (ALIVE/SUSPECT) peer elsewhere is only a claim
  (MOVE_CLAIMED): the runtime probes the new endpoint and calls ``moved()`` when the
  same node answers there;
- heartbeats refresh known peers only; they never introduce one;
- bounded state: DEAD/LEFT/INCOMPATIBLE entries are forgotten after
  ``forget_after_s``; at most MAX_UNHEARD entries were never heard from (a newcomer
  beyond that replaces the oldest of them, which was probed already), so a flood of
  records cannot crowd out peers that answered; a full table makes room by forgetting
  the stalest peer that is not alive, and refuses a newcomer only when every entry is
  alive; the sets of refused and duplicate ids are capped;
- a peer that breaks the protocol or leaves a vote unanswered is demoted: still
  watched, but not asked for votes until ``tick`` passes its ``demoted_until``
  (each strike doubles the time, up to MAX_DEMOTION_S);
- a record at the same endpoints does not undo a goodbye (LEFT stays until the node
  itself answers: its hello or a probe);
- DEAD and LEFT peers are not listened to, but probed again with a doubling
  back-off (``due_probes``): a peer that comes back is found, a forged goodbye is
  undone, and a bogus record costs one probe now and then.

Driven by events and ``tick(now)``; every call returns the Changes it caused, so
the runtime (runtime/federation.py) can connect, close links and log once.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from zswarm.core.claims import foreign
from zswarm.core.messages import (
    PROTOCOL_VERSION,
    Load,
    MemberState,
    NodeCard,
    ShownState,
    TableState,
)


class PeerState(enum.Enum):
    _value_: TableState  # shown as these names (PeerInfo.state)

    DISCOVERED = "discovered"
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"
    INCOMPATIBLE = "incompatible"


class Event(enum.Enum):
    DISCOVER = "discover"
    HEARD = "heard"
    MISSED = "missed"
    EXPIRED = "expired"
    GOODBYE = "goodbye"
    MISMATCH = "mismatch"


S, E = PeerState, Event
#: (state, event) -> next state; pairs not listed leave the state unchanged
TRANSITIONS: dict[tuple[PeerState, Event], PeerState] = {
    (S.DISCOVERED, E.HEARD): S.ALIVE,
    (S.DISCOVERED, E.EXPIRED): S.DEAD,
    (S.ALIVE, E.MISSED): S.SUSPECT,
    (S.ALIVE, E.EXPIRED): S.DEAD,
    (S.SUSPECT, E.HEARD): S.ALIVE,
    (S.SUSPECT, E.EXPIRED): S.DEAD,
    (S.DEAD, E.HEARD): S.ALIVE,
    (S.DEAD, E.DISCOVER): S.DISCOVERED,
    (S.LEFT, E.HEARD): S.ALIVE,
    # (LEFT, DISCOVER) stays LEFT: a record (mDNS resolves late) does not undo a goodbye
    (S.INCOMPATIBLE, E.DISCOVER): S.DISCOVERED,
    **{(s, E.GOODBYE): S.LEFT for s in (S.DISCOVERED, S.ALIVE, S.SUSPECT, S.DEAD)},
    **{(s, E.MISMATCH): S.INCOMPATIBLE for s in PeerState},
}

#: the table holds at most this many peers (a flood of mDNS records cannot eat memory)
MAX_PEERS = 1024
#: at most this many entries were never heard from (only announced): an mDNS flood churns
#: these, while peers that answered keep their places
MAX_UNHEARD = 64
#: at most this many refused or duplicate ids are remembered (to log each once)
MAX_REMEMBERED = 1024
#: a demotion lasts this long at first, doubling per strike up to MAX_DEMOTION_S
DEMOTION_S = 10.0
MAX_DEMOTION_S = 300.0
#: DEAD and LEFT peers are probed after one heartbeat interval, doubling up to this
MAX_PROBE_BACKOFF_S = 30.0

#: states in which a peer is silent-checked by tick()
_WATCHED = (S.DISCOVERED, S.ALIVE, S.SUSPECT)
#: states whose entries are forgotten after forget_after_s, or to make room
_STALE = (S.DEAD, S.LEFT, S.INCOMPATIBLE)


class ChangeKind(enum.Enum):
    STATE = "state"            # old -> new state
    CARD_CLAIMED = "card_claimed"  # a heartbeat shows another card: ask the peer (status)
    ENDPOINTS = "endpoints"    # the peer's endpoints changed (resubscribe, reconnect)
    MOVE_CLAIMED = "move_claimed"  # a record puts a live peer elsewhere: probe ``claim``
    DUPLICATE = "duplicate"    # another node uses this node's id
    FULL = "full"              # the table is full of live peers: newcomer refused
    FORGOTTEN = "forgotten"    # the entry was removed (stale, or to make room)
    DEMOTED = "demoted"        # not asked for votes for a while (``peer.detail`` says why)
    RESTORED = "restored"      # the demotion ended


@dataclass
class Peer:
    card: NodeCard
    address: str
    source: str
    state: PeerState = PeerState.DISCOVERED
    load: Load = field(default_factory=Load)
    #: when the peer was last heard, or entered its current state while never heard
    since: float = 0.0
    last_heard: float | None = None
    rtt_ms: float | None = None
    interval_s: float = 1.0
    detail: str = ""
    #: not asked for votes before this time (None = not demoted)
    demoted_until: float | None = None
    strikes: int = 0
    #: DEAD: the next probe is due at this time, after probe_backoff_s
    probe_at: float = 0.0
    probe_backoff_s: float = 1.0
    #: a hello (the peer asked us for our status) may bring its probe forward after this
    hello_at: float = 0.0
    #: the most votes it has answered while that many of ours were in flight: the
    #: planner believes at most one worker more than this, whatever the peer claims
    proven: int = 0


@dataclass(frozen=True)
class Change:
    """What an event did to one peer."""

    kind: ChangeKind
    peer: Peer
    old: PeerState | None = None
    new: PeerState | None = None
    #: MOVE_CLAIMED: the card the record claims (endpoints to probe)
    claim: NodeCard | None = None


class PeerTable:
    def __init__(self, me: NodeCard, *, interval_s: float, liveness: int,
                 forget_after_s: float = 300.0, tick_every_s: float | None = None,
                 read_lag_s: float = 0.0) -> None:
        self.me = me
        #: how often the runtime calls tick(); None = irregularly (no stall detection)
        self.tick_every_s = tick_every_s
        #: heartbeats are read (``heard``) up to this long after they arrived: a peer is
        #: DEAD once its last heartbeat *may* be interval x liveness old, so the lag
        #: never delays the verdict (the runtime reads them at its ticks)
        self.read_lag_s = read_lag_s
        self.interval_s = interval_s
        self.liveness = liveness
        self.forget_after_s = forget_after_s
        self.peers: dict[str, Peer] = {}
        self._last_tick: float | None = None
        self._duplicates: set[str] = set()
        self._refused: set[str] = set()

    # --- events -------------------------------------------------------------------

    def discovered(self, card: NodeCard, address: str, source: str, now: float,
                   proto: int = PROTOCOL_VERSION) -> list[Change]:
        """mDNS or a static peer introduced a node (its endpoints are at ``address``)."""
        if card.node_id == self.me.node_id:
            return self._duplicate(card)
        peer = self.peers.get(card.node_id)
        changes: list[Change] = []
        if peer is None:
            peer, changes = self._add(card, address, source, now)
            if peer is None:
                return changes
        elif (card.rpc, card.pub) != (peer.card.rpc, peer.card.pub):
            # live or not, a known peer moves only once it answers at the new place
            return [Change(ChangeKind.MOVE_CLAIMED, peer, claim=card)]
        elif peer.last_heard is None:
            peer.card = card  # never heard: the announcement is all we know
        old = peer.state
        changes += self._apply(peer, Event.DISCOVER)
        if peer.state is not old:
            peer.since = now
        if proto != PROTOCOL_VERSION:
            peer.detail = f"speaks protocol {proto}, this node {PROTOCOL_VERSION}"
            changes += self._apply(peer, Event.MISMATCH)
        return changes

    def heard(self, card: NodeCard, load: Load, now: float, *,
              interval_s: float | None = None, take_card: bool = True) -> list[Change]:
        """A heartbeat or a status reply from a known node (unknown ids are ignored).

        The card's endpoints are not taken: a peer is reached where it was discovered.
        ``take_card=False`` (heartbeats): name, model and workers are not taken either;
        a heartbeat showing another card asks for a status probe (CARD_CLAIMED), whose
        reply, over the peer's own link, is taken.
        """
        if card.node_id == self.me.node_id:
            return self._duplicate(card)
        peer = self.peers.get(card.node_id)
        if peer is None or peer.state is PeerState.INCOMPATIBLE:
            return []
        changes: list[Change] = []
        card = msgspec.structs.replace(card, rpc=peer.card.rpc, pub=peer.card.pub)
        if take_card:
            peer.card = card
        elif card != peer.card:
            changes.append(Change(ChangeKind.CARD_CLAIMED, peer))
        peer.load = load
        peer.last_heard = peer.since = now
        if interval_s is not None:  # (a reply without one keeps what its heartbeats said)
            peer.interval_s = max(interval_s, self.interval_s)
        peer.probe_backoff_s = self.interval_s
        if load.state == "leaving":
            return changes + self._left(peer, now)
        return changes + self._apply(peer, Event.HEARD)

    def moved(self, node_id: str, card: NodeCard, address: str) -> list[Change]:
        """The node answered at the endpoints a record claimed: it lives there now."""
        peer = self.peers.get(node_id)
        if peer is None or card.node_id != node_id:
            return []
        return self._move(peer, card, address)

    def hello(self, node_id: str, now: float) -> bool:
        """A DEAD or LEFT peer asked for our status (it restarted?): probe it now.

        True if a probe is due now; at most one per heartbeat interval per peer, so
        forged hellos cost a probe of the peer's known endpoint now and then.
        """
        peer = self.peers.get(node_id)
        if peer is None or peer.state not in (S.DEAD, S.LEFT) or now < peer.hello_at:
            return False
        peer.hello_at = now + self.interval_s
        peer.probe_at = now + self.interval_s
        peer.probe_backoff_s = self.interval_s
        return True

    def after_goodbye(self, node_id: str, asked_at: float, load: Load) -> bool:
        """Whether an answer to a probe sent at ``asked_at`` must not bring the node back:
        it said goodbye since (the answer is older), or it is LEFT and the answer says it
        is draining or leaving (a leaving node's last answers). Its own later hello or
        the probes after it are what bring a node that left back."""
        peer = self.peers.get(node_id)
        if peer is None or peer.state is not S.LEFT:
            return False
        return peer.since >= asked_at or load.state in ("draining", "leaving")

    def demote(self, node_id: str, now: float, reason: str) -> list[Change]:
        """The peer broke a rule or left a vote unanswered: no votes for it for a while."""
        peer = self.peers.get(node_id)
        if peer is None:
            return []
        seconds = min(DEMOTION_S * 2 ** min(peer.strikes, 16), MAX_DEMOTION_S)
        peer.strikes += 1
        peer.demoted_until = now + seconds
        peer.detail = f"demoted for {seconds:.0f} s: {reason}"[:300]
        return [Change(ChangeKind.DEMOTED, peer)]

    def vote_answered(self, node_id: str, in_flight: int = 1) -> None:
        """A good vote, answered while ``in_flight`` of ours were out to the peer: the
        strikes count again from zero, and the peer has shown it serves that many."""
        peer = self.peers.get(node_id)
        if peer is None:
            return
        peer.proven = max(peer.proven, in_flight)
        if peer.demoted_until is None:
            peer.strikes = 0

    def rtt(self, node_id: str, rtt_ms: float) -> None:
        peer = self.peers.get(node_id)
        if peer is not None:
            peer.rtt_ms = rtt_ms if peer.rtt_ms is None else 0.7 * peer.rtt_ms + 0.3 * rtt_ms

    def tick(self, now: float) -> list[Change]:
        """Time passed: silent peers become SUSPECT, then DEAD; demotions end; stale go.

        With ``tick_every_s``: if this node itself stalled (no tick for a heartbeat interval
        longer than expected: stopped, starved of CPU, swapping), the silence it measured
        is its own. Every watched peer's clock is moved on by the stall, so heartbeats
        still queued in our socket (or dropped at its high-water mark meanwhile) do not
        make live peers DEAD.
        """
        changes: list[Change] = []
        stall = 0.0
        if self.tick_every_s is not None and self._last_tick is not None:
            stall = now - self._last_tick - self.tick_every_s - self.interval_s
        self._last_tick = now
        if stall > 0:
            for peer in self.peers.values():
                if peer.state in _WATCHED:
                    peer.since += stall
        for node_id, peer in list(self.peers.items()):
            if peer.state in _STALE and now - peer.since > self.forget_after_s:
                del self.peers[node_id]
                changes.append(Change(ChangeKind.FORGOTTEN, peer))
                continue
            if peer.demoted_until is not None and now >= peer.demoted_until:
                peer.demoted_until = None
                peer.detail = ""
                changes.append(Change(ChangeKind.RESTORED, peer))
            if peer.state not in _WATCHED:
                continue
            silent = now - peer.since
            # >= with a millisecond's slack: a tick on the grid exactly interval x
            # liveness - lag after the read decides, whatever the float rounding
            if silent >= peer.interval_s * self.liveness - self.read_lag_s - 1e-3:
                changes += self._apply(peer, Event.EXPIRED)
                peer.probe_at = now + peer.probe_backoff_s
            elif silent > peer.interval_s * 1.5 and peer.state is PeerState.ALIVE:
                changes += self._apply(peer, Event.MISSED)
        return changes

    # --- queries ------------------------------------------------------------------

    def alive(self, *, model_id: str | None = None) -> list[Peer]:
        """Peers that may be sent votes (ALIVE, not demoted, same swarm, optionally model)."""
        return [p for p in self.peers.values()
                if p.state is PeerState.ALIVE and p.demoted_until is None
                and not foreign(p.card, self.me)
                and (model_id is None or p.card.model_id == model_id)]

    def due_probes(self, now: float) -> list[Peer]:
        """DEAD and LEFT peers whose next probe is due; each call doubles their back-off."""
        due = []
        for peer in self.peers.values():
            if peer.state in (S.DEAD, S.LEFT) and now >= peer.probe_at:
                due.append(peer)
                peer.probe_at = now + peer.probe_backoff_s
                peer.probe_backoff_s = min(peer.probe_backoff_s * 2, MAX_PROBE_BACKOFF_S)
        return due

    # --- internals ----------------------------------------------------------------

    def _add(self, card: NodeCard, address: str, source: str, now: float
             ) -> tuple[Peer | None, list[Change]]:
        changes: list[Change] = []
        unheard = [p for p in self.peers.values() if p.last_heard is None]
        if len(unheard) >= MAX_UNHEARD:  # the oldest announcement was probed already
            victim = min(unheard, key=lambda p: p.since)
            del self.peers[victim.card.node_id]
            changes.append(Change(ChangeKind.FORGOTTEN, victim))
        if len(self.peers) >= MAX_PEERS:
            stale = [p for p in self.peers.values() if p.state not in (S.ALIVE, S.SUSPECT)]
            if not stale:
                return None, self._full(card, address, source)
            victim = min(stale, key=lambda p: p.since)
            del self.peers[victim.card.node_id]
            changes.append(Change(ChangeKind.FORGOTTEN, victim))
        peer = Peer(card=card, address=address, source=source, since=now,
                    interval_s=self.interval_s, probe_backoff_s=self.interval_s)
        self.peers[card.node_id] = peer
        changes.append(Change(ChangeKind.STATE, peer, None, peer.state))
        return peer, changes

    def _left(self, peer: Peer, now: float) -> list[Change]:
        """A goodbye. Probed again later (``due_probes``): a forged goodbye is undone."""
        changes = self._apply(peer, Event.GOODBYE)
        if changes:
            peer.since = now
            peer.probe_at = now + self.interval_s * self.liveness
        return changes

    def _apply(self, peer: Peer, event: Event) -> list[Change]:
        new = TRANSITIONS.get((peer.state, event), peer.state)
        if new is peer.state:
            return []
        old, peer.state = peer.state, new
        return [Change(ChangeKind.STATE, peer, old, new)]

    def _move(self, peer: Peer, card: NodeCard, address: str) -> list[Change]:
        moved = (card.rpc, card.pub) != (peer.card.rpc, peer.card.pub)
        peer.card = card
        peer.address = address or peer.address
        return [Change(ChangeKind.ENDPOINTS, peer)] if moved else []

    def _full(self, card: NodeCard, address: str, source: str) -> list[Change]:
        """The table is full of live peers: the newcomer is refused (reported once per id)."""
        if card.node_id in self._refused:
            return []
        _remember(self._refused, card.node_id)
        return [Change(ChangeKind.FULL, Peer(card=card, address=address, source=source))]

    def _duplicate(self, card: NodeCard) -> list[Change]:
        """Our own id: our own echo (same endpoint) is ignored, anyone else is reported once."""
        if card.rpc == self.me.rpc or card.rpc in self._duplicates:
            return []
        _remember(self._duplicates, card.rpc)
        return [Change(ChangeKind.DUPLICATE, Peer(card=card, address=endpoint_host(card.rpc),
                                                  source="?"))]


def _remember(seen: set[str], key: str) -> None:
    if len(seen) >= MAX_REMEMBERED:
        seen.clear()  # forgetting only means one more log line
    seen.add(key)


#: the order states are counted and shown in (core/messages.py MemberState)
SHOWN_STATES: tuple[MemberState, ...] = typing.get_args(MemberState)


def count_states(states: Iterable[ShownState]) -> dict[str, int]:
    """Peers by state, every state present (zero included) in SHOWN_STATES order."""
    counts: dict[str, int] = dict.fromkeys(SHOWN_STATES, 0)
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return counts


def summarize_states(counts: dict[str, int]) -> str:
    """'2 alive, 1 dead' ('none' for no peers)."""
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"


def endpoint_host(endpoint: str) -> str:
    """'tcp://10.0.0.2:17617' -> '10.0.0.2'."""
    rest = endpoint.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]")
