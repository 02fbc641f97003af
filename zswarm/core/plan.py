"""Fan-out policy: which nodes generate how many of a request's candidates.

Pure: the coordinator passes in what it knows (this node's load, the ALIVE
compatible peers and theirs) and gets back a Plan. Rules:

- consensus strategies spread the n candidates round-robin over this node and
  the least-loaded peers, one node per candidate at most, so that n=3 with two
  peers asks three different nodes (diverse votes) and n=1 stays local;
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


@dataclass(frozen=True)
class NodeLoad:
    """What the planner knows about one node (this one or a peer)."""

    node_id: str
    workers_ready: int
    idle_workers: int
    queue_depth: int

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
    parts: dict[str, int] = {}
    for i in range(n if members else 0):
        key = members[i % len(members)].node_id
        parts[key] = parts.get(key, 0) + 1
    return Plan(parts)
