"""Peer exchange: the members a member knows, each checked before it is used.

Owns: when a node asks a peer for the peers it knows (each peer once as soon as it
is ALIVE, then one ALIVE peer every EXCHANGE_EVERY heartbeats, in turn), which
entries of the PeersReply are worth a probe (ALIVE at the member, so nothing is
passed on that was not heard; not reached by the member over the node's own link,
since such a node accepts no connections and contacts every member it learns itself;
a node id that is valid, not ours and not known; a tcp
endpoint at an IPv4 literal; at most PER_REPLY of them), and the bound on peers
learned this way (MAX_EXCHANGED). A learned endpoint becomes a peer only once the
node there answers a Status as the node the member named, of our swarm and key
(runtime/federation.py probes it): a lying member can cost us probes, never a peer.
It must not: open sockets or change the peer table (Federation does both).
"""

from __future__ import annotations

import random
import re
import zlib
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass

from zswarm.core import claims
from zswarm.core.ids import is_public, node_id_of
from zswarm.core.messages import NodeCard, PeersReply
from zswarm.errors import RemoteProtocolError

#: heartbeats between two asks for a peer's peers (one peer each time, in turn)
EXCHANGE_EVERY = 10
#: learned endpoints probed per reply at most
PER_REPLY = 16
#: peers in the table learned by exchange at most
MAX_EXCHANGED = 64
#: node ids probed through exchange that are remembered (not probed again for RETRY_S)
MAX_TRIED = 1024
RETRY_S = 300.0

_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Learned:
    node_id: str
    address: str  # an IPv4 literal
    endpoint: str  # tcp://address:port
    #: its key (hex): the probe is pinned to it, and the id derives from it
    public: str


class Tried:
    """Node ids probed lately through exchange, at most MAX_TRIED (the oldest go): a
    member that lists the same junk every time costs each probe once per RETRY_S."""

    def __init__(self) -> None:
        self._at: OrderedDict[str, float] = OrderedDict()

    def add(self, node_id: str, now: float) -> None:
        self._at[node_id] = now
        self._at.move_to_end(node_id)
        while len(self._at) > MAX_TRIED:
            self._at.popitem(last=False)

    def recent(self, node_id: str, now: float) -> bool:
        at = self._at.get(node_id)
        return at is not None and now - at < RETRY_S

    def recent_ids(self, now: float) -> set[str]:
        """The ids not to probe again yet."""
        return {node_id for node_id, at in self._at.items() if now - at < RETRY_S}

    def __len__(self) -> int:
        return len(self._at)


def worth_probing(reply: PeersReply, *, me: NodeCard, known: Container[str],
                  room: int, rng: random.Random | None = None) -> list[Learned]:
    """The entries of a member's reply to probe (at most ``room`` and PER_REPLY), taken
    in random order: junk listed first cannot hide the honest entries behind it."""
    out: list[Learned] = []
    seen: set[str] = set()
    entries = list(reply.peers)
    (rng or random).shuffle(entries)
    for info in entries:
        if len(out) >= min(room, PER_REPLY):
            break
        node_id = info.node_id
        if (info.state != "alive" or info.reach == "its link"  # (it will contact us itself)
                or not _NODE_ID.fullmatch(node_id) or node_id in seen
                or not is_public(info.public) or node_id_of(info.public) != node_id
                or node_id == me.node_id or node_id == reply.node.node_id or node_id in known):
            continue
        try:
            address, port = claims.split_endpoint(info.rpc)
        except RemoteProtocolError:
            continue
        seen.add(node_id)
        out.append(Learned(node_id, address, claims.tcp_endpoint(address, port), info.public))
    return out


def is_exchange_beat(beat: int) -> bool:
    """Whether a peer is asked at this heartbeat (every EXCHANGE_EVERY beats)."""
    return beat % EXCHANGE_EVERY == EXCHANGE_EVERY // 2


def partner_at(beat: int, alive: list[str], me: str) -> str | None:
    """The peer to ask at such a heartbeat (the ALIVE peers in turn, from a place of
    this node's own: nodes that started together do not all ask the same peer), if any."""
    if not alive:
        return None
    return sorted(alive)[(beat // EXCHANGE_EVERY + zlib.crc32(me.encode())) % len(alive)]
