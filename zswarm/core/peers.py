"""PeerTable: the peer lifecycle as a pure state machine with an explicit transition table.

States: DISCOVERED (mDNS or static config, not heard yet) -> ALIVE (heartbeat or
status reply heard) -> SUSPECT (a heartbeat missed) -> DEAD (silent for
interval x liveness) -> ALIVE when heard again; LEFT after a goodbye;
INCOMPATIBLE when the peer speaks another protocol version (never sent votes).
mDNS only introduces peers; only hearing from a peer keeps it alive.

Driven by events and ``tick(now)``; every call returns the Changes it caused,
so the runtime (runtime/federation.py) can connect, close links and log once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from zswarm.core.messages import PROTOCOL_VERSION, Load, NodeCard


class PeerState(enum.Enum):
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
    (S.LEFT, E.DISCOVER): S.DISCOVERED,
    (S.INCOMPATIBLE, E.DISCOVER): S.DISCOVERED,
    **{(s, E.GOODBYE): S.LEFT for s in (S.DISCOVERED, S.ALIVE, S.SUSPECT, S.DEAD)},
    **{(s, E.MISMATCH): S.INCOMPATIBLE for s in PeerState},
}

#: the table stops taking new peers beyond this (a flood of mDNS records cannot eat memory)
MAX_PEERS = 1024

#: states in which a peer is silent-checked by tick()
_WATCHED = (S.DISCOVERED, S.ALIVE, S.SUSPECT)


@dataclass
class Peer:
    card: NodeCard
    address: str
    source: str
    state: PeerState = PeerState.DISCOVERED
    load: Load = field(default_factory=Load)
    #: when the peer was last heard, or first discovered while never heard
    since: float = 0.0
    last_heard: float | None = None
    rtt_ms: float | None = None
    interval_s: float = 1.0
    detail: str = ""


@dataclass(frozen=True)
class Change:
    """What an event did to one peer. ``kind``: state, endpoints, duplicate, full."""

    kind: str
    peer: Peer
    old: PeerState | None = None
    new: PeerState | None = None


class PeerTable:
    def __init__(self, me: NodeCard, *, interval_s: float, liveness: int) -> None:
        self.me = me
        self.interval_s = interval_s
        self.liveness = liveness
        self.peers: dict[str, Peer] = {}
        self._duplicates: set[str] = set()
        self._refused: set[str] = set()

    # --- events -------------------------------------------------------------------

    def discovered(self, card: NodeCard, address: str, source: str, now: float,
                   proto: int = PROTOCOL_VERSION) -> list[Change]:
        """mDNS or a static peer introduced a node."""
        peer, changes, new = self._admit(card, address, source, now)
        if peer is None:
            return changes
        if not new:
            old = peer.state
            changes += self._apply(peer, Event.DISCOVER)
            if peer.state is not old:
                peer.since = now
        if proto != PROTOCOL_VERSION:
            peer.detail = f"speaks protocol {proto}, this node {PROTOCOL_VERSION}"
            changes += self._apply(peer, Event.MISMATCH)
        return changes

    def heard(self, card: NodeCard, load: Load, now: float, *, address: str = "",
              interval_s: float | None = None, source: str = "heartbeat") -> list[Change]:
        """A heartbeat or a status reply arrived from this node."""
        peer, changes, _ = self._admit(card, address, source, now)
        if peer is None or peer.state is PeerState.INCOMPATIBLE:
            return changes
        peer.load = load
        peer.last_heard = peer.since = now
        peer.interval_s = max(interval_s or self.interval_s, self.interval_s)
        if load.state == "leaving":
            return changes + self._apply(peer, Event.GOODBYE)
        return changes + self._apply(peer, Event.HEARD)

    def goodbye(self, node_id: str, now: float) -> list[Change]:
        peer = self.peers.get(node_id)
        if peer is None:
            return []
        peer.since = now
        return self._apply(peer, Event.GOODBYE)

    def rtt(self, node_id: str, rtt_ms: float) -> None:
        peer = self.peers.get(node_id)
        if peer is not None:
            peer.rtt_ms = rtt_ms if peer.rtt_ms is None else 0.7 * peer.rtt_ms + 0.3 * rtt_ms

    def tick(self, now: float) -> list[Change]:
        """Time passed: silent peers become SUSPECT, then DEAD."""
        changes: list[Change] = []
        for peer in self.peers.values():
            if peer.state not in _WATCHED:
                continue
            silent = now - peer.since
            if silent > peer.interval_s * self.liveness:
                changes += self._apply(peer, Event.EXPIRED)
            elif silent > peer.interval_s * 1.5 and peer.state is PeerState.ALIVE:
                changes += self._apply(peer, Event.MISSED)
        return changes

    # --- queries ------------------------------------------------------------------

    def alive(self, *, model_id: str | None = None) -> list[Peer]:
        """Peers that may be sent votes (ALIVE, same swarm, optionally same model)."""
        return [p for p in self.peers.values()
                if p.state is PeerState.ALIVE and p.card.swarm == self.me.swarm
                and (model_id is None or p.card.model_id == model_id)]

    # --- internals ----------------------------------------------------------------

    def _admit(self, card: NodeCard, address: str, source: str, now: float
               ) -> tuple[Peer | None, list[Change], bool]:
        """(peer, changes, is_new): the known peer with its card updated, or a new one.

        None when the card is this node's own id or the table is full.
        """
        if card.node_id == self.me.node_id:
            return None, self._duplicate(card), False
        peer = self.peers.get(card.node_id)
        if peer is not None:
            return peer, self._update_card(peer, card, address), False
        if len(self.peers) >= MAX_PEERS:
            return None, self._full(card, address, source), False
        peer = Peer(card=card, address=address or endpoint_host(card.rpc), source=source,
                    since=now, interval_s=self.interval_s)
        self.peers[card.node_id] = peer
        return peer, [Change("state", peer, None, peer.state)], True

    def _apply(self, peer: Peer, event: Event) -> list[Change]:
        new = TRANSITIONS.get((peer.state, event), peer.state)
        if new is peer.state:
            return []
        old, peer.state = peer.state, new
        return [Change("state", peer, old, new)]

    def _update_card(self, peer: Peer, card: NodeCard, address: str) -> list[Change]:
        moved = (card.rpc, card.pub) != (peer.card.rpc, peer.card.pub)
        peer.card = card
        peer.address = address or peer.address
        return [Change("endpoints", peer)] if moved else []

    def _full(self, card: NodeCard, address: str, source: str) -> list[Change]:
        """The table is full: the newcomer is refused (reported once per node id)."""
        if card.node_id in self._refused:
            return []
        self._refused.add(card.node_id)
        return [Change("full", Peer(card=card, address=address or endpoint_host(card.rpc),
                                    source=source))]

    def _duplicate(self, card: NodeCard) -> list[Change]:
        """Our own id: our own echo (same endpoint) is ignored, anyone else is reported once."""
        if card.rpc == self.me.rpc or card.rpc in self._duplicates:
            return []
        self._duplicates.add(card.rpc)
        return [Change("duplicate", Peer(card=card, address=endpoint_host(card.rpc), source="?"))]


def endpoint_host(endpoint: str) -> str:
    """'tcp://10.0.0.2:17617' -> '10.0.0.2'."""
    rest = endpoint.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]")
