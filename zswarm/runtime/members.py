"""The members a node has verified, kept in its state dir, so that a restarted node finds
its swarm again without the node it joined through (like SSH's known hosts, or
Syncthing's device list).

Owns: ``Remembered`` - node id -> ``statedir.Member`` (name, address with its key, last
seen), at most MAX_REMEMBERED (the least recently seen go first). ``seen`` records a
peer that is ALIVE (its card proven: every link to it is pinned to its key, and its id
is its key's); ``due`` says whom to probe - remembered members the peer table does not
hold (it probes its own, dead ones included), most
recently seen first, MAX_DUE at a time, each backed off after a silent probe (to
BACKOFF_MAX_S) - and the probe is pinned to the remembered key, so a member is believed
again only with its key; ``flush`` writes the file when something changed (a new or
moved member at once, a member seen again at most every FLUSH_S, and at the end),
keeping a deletion made in the file meanwhile
(``zswarm peers --forget ID``). Members not seen for ``[federation] remember_days`` are
forgotten. The file is the node's own word (mode 0600): it is read bounded and each
entry checked (an id must be its address's key's).
"""

from __future__ import annotations

import logging
import math
import time

from zswarm import statedir
from zswarm.config import Config
from zswarm.core.ids import is_public, node_id_of, pinned, unpinned
from zswarm.core.messages import NodeCard
from zswarm.errors import ZswarmError
from zswarm.statedir import Member

log = logging.getLogger(__name__)

#: members remembered at most (the least recently seen go first)
MAX_REMEMBERED = 64
#: remembered members probed at once, at most
MAX_DUE = 16
#: a silent member is probed again after 1 s, then twice as long each time, up to this
BACKOFF_MAX_S = 60.0
#: the file is written at most this often (and when the node stops)
FLUSH_S = 30.0


class Remembered:
    def __init__(self, config: Config, *, now: float | None = None) -> None:
        self.config = config
        self.keep_s = config.federation.remember_days * 86_400.0
        now = time.time() if now is None else now
        self.members: dict[str, Member] = {}
        for m in sorted(statedir.read_members(config), key=lambda m: m.last_seen):
            endpoint, public = unpinned(m.address)
            if is_public(public) and node_id_of(public) == m.node_id \
                    and now - m.last_seen <= self.keep_s:
                self.members[m.node_id] = m
        self._trim()
        #: ids as last written: one gone from the file since was forgotten by the user
        self._written = set(self.members)
        self._dirty = self._urgent = False
        self._flushed_at = -math.inf
        #: node id -> (trio time it may be probed again, its current backoff)
        self._next: dict[str, tuple[float, float]] = {}

    def seen(self, card: NodeCard, now: float) -> None:
        """A proven member is ALIVE (``now``: unix time)."""
        if not is_public(card.public) or not card.rpc:
            return
        old = self.members.pop(card.node_id, None)
        member = Member(node_id=card.node_id, name=card.name[:64],
                        address=pinned(card.rpc, card.public), last_seen=now)
        self.members[card.node_id] = member  # most recently seen last
        self._next.pop(card.node_id, None)
        self._dirty = True  # (written within FLUSH_S)
        if old is None or (old.address, old.name) != (member.address, member.name):
            self._urgent = True  # a new member, or moved: kept at once
        self._trim()

    def due(self, clock: float, known: set[str]) -> list[Member]:
        """Members to probe now (``clock``: trio time): not ``known`` (in the peer table,
        which probes its own), not backed off."""
        out = []
        for m in reversed(self.members.values()):  # most recently seen first
            if m.node_id in known or clock < self._next.get(m.node_id, (-math.inf, 0.0))[0]:
                continue
            out.append(m)
            if len(out) >= MAX_DUE:
                break
        return out

    def probing(self, node_id: str, clock: float) -> None:
        """A probe of it starts: the next waits for the backoff."""
        _, backoff = self._next.get(node_id, (0.0, 0.5))
        backoff = min(BACKOFF_MAX_S, backoff * 2)
        self._next[node_id] = (clock + backoff, backoff)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Write the file if it changed: at once for a new or moved member, else (a
        member only seen again) not more often than FLUSH_S, unless ``force``."""
        if not self._dirty or not (force or self._urgent
                                   or now - self._flushed_at >= FLUSH_S):
            return
        on_disk = {m.node_id for m in statedir.read_members(self.config)}
        for node_id in self._written - on_disk:  # forgotten in the file meanwhile
            self.members.pop(node_id, None)
        self.members = {k: m for k, m in self.members.items()
                        if now - m.last_seen <= self.keep_s}
        try:
            statedir.write_members(self.config, list(self.members.values()))
        except ZswarmError as exc:
            log.warning("the members this node knows are not kept: %s", exc)
        self._written = set(self.members)
        self._dirty = self._urgent = False
        self._flushed_at = now

    def _trim(self) -> None:
        while len(self.members) > MAX_REMEMBERED:
            del self.members[next(iter(self.members))]


def forget(config: Config, prefix: str) -> list[Member]:
    """``zswarm peers --forget ID``: drop the remembered members whose id starts with
    ``prefix`` (a running node keeps the deletion at its next write); the dropped."""
    members = statedir.read_members(config)
    gone = [m for m in members if prefix and m.node_id.startswith(prefix)]
    if gone:
        statedir.write_members(config, [m for m in members if m not in gone])
    return gone
