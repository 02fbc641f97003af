"""A committee across models: one vote's candidates asked of several models, weighed by
how often each model's candidates agreed with the answers decided before.

Owns: ``shares`` (a committee's n split over its models) and ``ModelWeights`` - per
model, a decaying average of the share of its valid candidates whose answer key was the
decided one, turned into a bounded weight (MIN_WEIGHT to MAX_WEIGHT; a model not seen yet
weighs 1). It is learned from this node's own decisions only: which model a candidate
is of is what this node asked for (core/claims.py labels a peer's vote with it), never a
peer's claim. The weight of a candidate's model multiplies its node's weight
(``core/consensus._weight``: keys ``model:<id>``, which no node id can be). Pure.

Self-MoA (arXiv 2502.00674) finds that mixing weaker models into a vote often hurts:
bench/committee.py measures a committee against the best single model, and the default
is one model.
"""

from __future__ import annotations

from collections.abc import Sequence

from zswarm.core.consensus import MODEL_KEY
from zswarm.core.messages import Candidate

#: models one committee may ask at most
MAX_COMMITTEE = 8
#: how fast the agreement average follows new decisions (the weight of the newest)
RATE = 0.1
MIN_WEIGHT = 0.5
MAX_WEIGHT = 1.5
#: models whose agreement is remembered (model ids come from peers' cards: a member that
#: keeps announcing new ones costs the least recently seen, not memory)
MAX_TRACKED = 64


def shares(n: int, models: Sequence[str]) -> list[tuple[str, int]]:
    """n candidates over the models, as evenly as can be (the first ones get the rest);
    a model whose share would be 0 is left out."""
    each, rest = divmod(n, len(models))
    counts = [(m, each + (i < rest)) for i, m in enumerate(models)]
    return [(m, c) for m, c in counts if c > 0]


class ModelWeights:
    """Per model: the decaying share of its candidates that agreed with the decision."""

    def __init__(self) -> None:
        #: model id -> agreement average (0..1), least recently observed first; at most
        #: MAX_TRACKED
        self.agreement: dict[str, float] = {}

    def weight(self, model_id: str) -> float:
        a = self.agreement.get(model_id)
        if a is None:
            return 1.0
        return MIN_WEIGHT + (MAX_WEIGHT - MIN_WEIGHT) * a

    def weights(self, models: Sequence[str]) -> dict[str, float]:
        """The node-weights entries of these models (``model:<id>`` -> weight)."""
        return {MODEL_KEY + m: self.weight(m) for m in models}

    def observe(self, candidates: Sequence[Candidate], keys: Sequence[str | None],
                winner: int, models: Sequence[str]) -> None:
        """After a committee's decision: ``keys`` are the candidates' answer keys (None:
        not valid), ``winner`` the decided one."""
        won = keys[winner] if 0 <= winner < len(keys) else None
        if won is None:
            return
        for m in models:
            mine = [k for c, k in zip(candidates, keys, strict=False)
                    if c.model_id == m and k is not None]
            if not mine:
                continue
            rate = sum(1 for k in mine if k == won) / len(mine)
            old = self.agreement.pop(m, 0.5)
            self.agreement[m] = (1 - RATE) * old + RATE * rate
            if len(self.agreement) > MAX_TRACKED:
                del self.agreement[next(iter(self.agreement))]

