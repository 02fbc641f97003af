"""How fast each node delivers candidates, as this node measured it: the plan splits by it.

Owns one figure per node (this one under core/plan.SELF): the candidates it delivers per
second, from the asks this node made - the seconds from a wave's start to the node's
last candidate of that wave, for the candidates it delivered. A share of c candidates
costs (c + core/plan.FIXED_COST) units, so a node given more candidates does not look
faster for it. Smoothed
(ALPHA) so one slow answer does not swing the split. Measured, never claimed: a peer
cannot pull in work by saying it is fast. At most MAX_NODES nodes (least recently
measured forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from zswarm.core.plan import FIXED_COST, NodeLoad

#: weight of the newest measurement
ALPHA = 0.3
MAX_NODES = 256


class Speeds:
    def __init__(self) -> None:
        self._rate: OrderedDict[str, float] = OrderedDict()

    def observe(self, node_id: str, count: int, seconds: float) -> None:
        """``count`` candidates of one wave arrived from ``node_id`` within ``seconds``."""
        if count <= 0 or not seconds > 0:
            return
        rate = (count + FIXED_COST) / seconds
        old = self._rate.pop(node_id, None)
        self._rate[node_id] = rate if old is None else old + ALPHA * (rate - old)
        while len(self._rate) > MAX_NODES:
            self._rate.popitem(last=False)

    def of(self, node_id: str) -> float:
        """Work units per second (0: not measured yet)."""
        return self._rate.get(node_id, 0.0)

    def applied(self, load: NodeLoad) -> NodeLoad:
        """``load`` with this node's measured speed."""
        return replace(load, speed=self.of(load.node_id))
