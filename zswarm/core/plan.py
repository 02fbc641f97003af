"""Fan-out policy: which nodes generate how many of a request's candidates.

Pure: the coordinator passes in what it knows (this node's load, the ALIVE
compatible peers and theirs) and gets back a Plan. Rules:

- consensus strategies spread the n candidates over this node and the least-loaded
  peers, one node per candidate at most, so that n=3 with two peers asks three
  different nodes (diverse votes) and n=1 stays local; beyond one each, a node gets
  candidates in proportion to its speed (candidates per second, as the asker measured
  it: runtime/speeds.py), so that every node finishes its share at about the same
  time and the asker does not wait for the slowest (equal speeds: round-robin);
- ``route`` sends the whole request (n=1) to the least-loaded node, this one
  included: load balancing across the swarm;
- a node without a ready worker is skipped; if nobody can serve, the plan is
  empty and the coordinator raises NoQuorum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeGuard, get_args

from zswarm.core.consensus import Strategy

ROUTE: Final = "route"
#: what a request may ask for: a consensus strategy, or ``route`` (one node answers)
AskStrategy = Literal[Strategy, "route"]
ASK_STRATEGIES: tuple[AskStrategy, ...] = get_args(AskStrategy)


def is_ask_strategy(name: str) -> TypeGuard[AskStrategy]:
    return name in ASK_STRATEGIES

#: the key of this node in a Plan
SELF = ""
#: what a share of candidates costs beyond its size, in candidates: the prompt's prefill
#: and each step's overhead do not grow with the batch (bench/local_candidates: n = 4
#: takes about 2.6x the time of n = 1, so c candidates cost about c + 1)
FIXED_COST = 1.0


@dataclass(frozen=True)
class NodeLoad:
    """What the planner knows about one node (this one or a peer)."""

    node_id: str
    workers_ready: int
    idle_workers: int
    queue_depth: int
    #: candidates per second this node delivered lately, measured by the asker (a
    #: peer's own claim would let it pull in work); 0 = not known yet
    speed: float = 0.0

    @property
    def pressure(self) -> float:
        """Lower is better: waiting work per ready worker, minus idle workers."""
        if self.workers_ready <= 0:
            return float("inf")
        return (self.queue_depth - self.idle_workers) / self.workers_ready


@dataclass(frozen=True)
class Plan:
    #: node id (SELF for this node) -> number of candidates it generates
    parts: dict[str, int]


def least_loaded(nodes: list[NodeLoad]) -> list[NodeLoad]:
    """Usable nodes ordered by pressure; ties keep the given order (this node first)."""
    usable = [n for n in nodes if n.workers_ready > 0]
    return sorted(usable, key=lambda n: n.pressure)


def plan(n: int, strategy: AskStrategy, local: NodeLoad, peers: list[NodeLoad], *,
         prefer: str | None = None) -> Plan:
    """Decide the fan-out of one request of n candidates.

    ``prefer`` (route): the node that holds this conversation's prefix in its prompt
    cache; it gets the request while it has an idle worker for it (pressure < 0),
    else the least loaded node does.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if strategy == ROUTE:
        ranked = least_loaded([local, *peers])
        home = next((node for node in ranked if node.node_id == prefer), None)
        if home is not None and home.pressure < 0:
            return Plan({home.node_id: 1})
        return Plan({ranked[0].node_id: 1} if ranked else {})
    ranked_peers = least_loaded(peers)
    members = ([local] if local.workers_ready > 0 else []) + ranked_peers
    members = members[:n]
    return Plan(shares(n, members) if members else {})


def shares(n: int, members: list[NodeLoad]) -> dict[str, int]:
    """n >= len(members) candidates: one each, then each next one to the node that
    would finish its share soonest with it ((count + FIXED_COST) / speed, the speed
    lowered by the work waiting there; ties: the earlier member).

    A node of unknown speed counts as the median of the known ones (all unknown: equal,
    which is round-robin). A peer gets at most twice the even share (``peer_cap``): a
    member that answers fast - with junk, or by lying about nothing but its speed - still
    makes no more of the vote than two honest members would."""
    known = sorted(m.speed for m in members if m.speed > 0)
    typical = known[len(known) // 2] if known else 1.0
    rate = [(m.speed if m.speed > 0 else typical) / (1 + max(0.0, m.pressure))
            for m in members]
    counts = [1] * len(members)
    cap = peer_cap(n, len(members))
    for _ in range(n - len(members)):
        open_ = [i for i, m in enumerate(members) if m.node_id == SELF or counts[i] < cap]
        k = min(open_ or range(len(members)),
                key=lambda i: ((counts[i] + 1 + FIXED_COST) / rate[i], i))
        counts[k] += 1
    return {m.node_id: c for m, c in zip(members, counts, strict=True)}


def peer_cap(n: int, members: int) -> int:
    """The most candidates of n one peer is given among ``members`` nodes: twice the
    even share, rounded up (every candidate still finds a node: when every member is a
    peer at its cap, the cap gives way)."""
    return max(1, -(-2 * n // max(1, members)))
