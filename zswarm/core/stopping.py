"""Adaptive consensus: how a budget of candidates is spent in waves, and when to stop. Pure.

An ask with a *budget* (at most that many candidates) asks for them in waves
(``waves``: 4, then as many again, doubling, until the budget is spent; each wave is
spread over the swarm like a fixed n). After every candidate that arrives, ``verdict``
says whether the winner is settled; the coordinator then cancels what is still being
generated and decides.

The rule (chosen by bench/consensus_quality.py on the tuning half of
bench/data/questions.jsonl, reported on the other half; the alternatives it measured
are listed in its output):

- ``cannot change``: the strategy's own early stop - the candidates still allowed by
  the budget could not change the winner (core/consensus.py's ``decide(final=False)``);
- ``settled``: after at least MIN_CANDIDATES candidates, the winner's answer holds at
  least SETTLED_SHARE of the weight (``confidence``: the confidence-weighted share;
  ``majority`` and ``best_of_n``: the share of candidates, by node weight, that give
  the winner's answer);
- ``no agreement``: half the budget is spent and no answer holds more than
  FUTILE_SHARE: the model does not know, and more samples of it rarely agree later
  (on the tuning half they changed the accuracy by less than they cost);
- ``budget spent`` when every wave has run.

MIN_CANDIDATES was 3 until 2026-12-08: with the vote's keys and calibration of issue 39,
a budget of 16 that may settle on 3 candidates lost to a fixed n = 8 on the tuning half
(0.413 with 6.2 candidates against 0.427); settling on 4 at the least (the whole first
wave) reached 0.431 with 7.4, and on the held-out half 0.503 with 7.3 against 0.496.

A posterior that the leader stays ahead (Adaptive-Consistency's Beta rule, on counts
or on confidence weights) was measured too: with a 135M model most questions have no
dominant answer, the posterior rarely reaches 0.95, and it spent 12-13 of 16
candidates for the accuracy this rule reaches with about 6.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

from zswarm.core.consensus import Decision, Strategy, Validation, decide, resolve_weights
from zswarm.core.messages import Candidate
from zswarm.errors import NoQuorum

#: the strategies a budget works with: they group answers, so "settled" has a meaning
ADAPTIVE_STRATEGIES: Final[tuple[Strategy, ...]] = ("confidence", "majority", "best_of_n")
#: the first wave; each later one doubles what was asked so far (4, 4, 8 for 16)
FIRST_WAVE: Final = 4
MIN_CANDIDATES: Final = 4
SETTLED_SHARE: Final = 0.6
FUTILE_SHARE: Final = 0.3

StopReason = Literal["cannot change", "settled", "no agreement", "budget spent"]


def waves(budget: int, first: int = FIRST_WAVE) -> list[int]:
    """The sizes of the waves that spend ``budget``: ``first``, then doubling the total."""
    if budget < 1:
        raise ValueError("a budget is at least 1")
    out: list[int] = []
    size = first
    while sum(out) < budget:
        out.append(min(size, budget - sum(out)))
        size = sum(out)
    return out


def leader_share(strategy: Strategy, candidates: Sequence[Candidate], decision: Decision, *,
                 weights: Mapping[str, float], validation: Validation, question: str
                 ) -> float:
    """The share of the weight that gives the winner's answer (see the module docstring)."""
    if strategy != "best_of_n":
        return decision.agreement  # confidence and majority: the winning group's share
    valid = [c for c in candidates if validation.accepts(c)]
    if not valid:
        return 0.0
    won = validation.key(candidates[decision.winner].text, question)
    resolved = resolve_weights(weights, {c.node_id for c in valid})
    weight = [resolved.get(c.node_id, 1.0) for c in valid]
    same = sum(w for c, w in zip(valid, weight, strict=True)
               if validation.key(c.text, question) == won)
    return same / sum(weight)


def verdict(strategy: Strategy, candidates: Sequence[Candidate], *, budget: int,
            weights: Mapping[str, float] | None = None, validation: Validation | None = None,
            tau: float, question: str = "", calibration: Mapping[str, float] | None = None
            ) -> StopReason | None:
    """Why the ask may stop now, or None to wait for more (see the module docstring)."""
    if strategy not in ADAPTIVE_STRATEGIES:
        raise ValueError(f"a budget needs one of {', '.join(ADAPTIVE_STRATEGIES)}, "
                         f"not {strategy}")
    weights = weights or {}
    validation = validation or Validation()
    count = len(candidates)
    if count >= budget:
        return "budget spent"
    try:
        if decide(strategy, candidates, expected=budget, final=False, weights=weights,
                  validation=validation, tau=tau, question=question,
                  calibration=calibration) is not None:
            return "cannot change"
        now = decide(strategy, candidates, expected=count, final=True, weights=weights,
                     validation=validation, tau=tau, question=question,
                     calibration=calibration)
    except NoQuorum:
        return None  # nothing valid yet: more may come
    assert now is not None
    share = leader_share(strategy, candidates, now, weights=weights, validation=validation,
                         question=question)
    if count >= MIN_CANDIDATES and share >= SETTLED_SHARE:
        return "settled"
    if 2 * count >= budget and share <= FUTILE_SHARE:
        return "no agreement"
    return None
