"""What collected candidates say under the node's pure functions: fixed-n accuracy by
random subsets, and stopping rules replayed in waves (bench/consensus_quality.py).

The rules compared: the old "cannot change" early stop, a Beta posterior that the
leader stays ahead of the runner-up (Adaptive-Consistency, Aggarwal et al. 2023), the
weight share alone, and zswarm's (core/stopping.verdict).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from quality import correct

from zswarm.core import stopping
from zswarm.core.answers import answer_key
from zswarm.core.calibration import Priors
from zswarm.core.consensus import DEFAULT_TAU, Validation, decide
from zswarm.core.messages import Candidate
from zswarm.errors import NoQuorum

Record = dict[str, Any]
SUBSETS = 20


def learned_factors(records: list[Record], by_id: dict[str, Any], *, calibrate: bool = True,
                    yes_no: bool = False) -> dict[str, dict[str, float]]:
    """Per question id: the calibration (core/calibration.py) a node that answered the
    records before it, in order, with these candidates as its own, would apply (with
    ``yes_no``, yes/no questions calibrated too)."""
    priors = Priors(yes_no=yes_no)
    out: dict[str, dict[str, float]] = {}
    for rec in records:
        question = by_id[rec["id"]]["question"]
        out[rec["id"]] = priors.factors("m", question) if calibrate else {}
        validation = Validation()
        priors.observe("m", question, [validation.answer(c, question)
                                       for c in rec["candidates"] if validation.accepts(c)])
    return out


def _winner(strategy: str, cands: Sequence[Candidate], question: str,
            tau: float = DEFAULT_TAU, factors: dict[str, float] | None = None) -> str | None:
    try:
        d = decide(strategy, cands, expected=len(cands), final=True,  # type: ignore[arg-type]
                   question=question, tau=tau, calibration=factors)
    except NoQuorum:
        return None
    assert d is not None
    return cands[d.winner].text


def fixed_n(records: list[Record], by_id: dict[str, Any], strategy: str, n: int,
            tau: float = DEFAULT_TAU, calibrate: bool = True, yes_no: bool = False
            ) -> list[float]:
    """Per question: right (1/0) with all 16, else the mean over random n-subsets."""
    out = []
    factors = learned_factors(records, by_id, calibrate=calibrate, yes_no=yes_no)
    for rec in records:
        q, cands = by_id[rec["id"]], rec["candidates"]
        everyone = list(range(len(cands)))
        rnd = random.Random(f"{rec['id']}/{n}")
        subsets = [everyone] if n >= len(cands) else \
            [rnd.sample(everyone, n) for _ in range(SUBSETS)]
        hits = [(w := _winner(strategy, [cands[i] for i in s], q["question"], tau,
                              factors[rec["id"]])) is not None
                and correct(q, w) for s in subsets]
        out.append(sum(hits) / len(hits))
    return out


def oracle_n(records: list[Record], by_id: dict[str, Any], n: int) -> list[float]:
    """Per question: how often some candidate of n (the same subsets as fixed_n) is right."""
    out = []
    for rec in records:
        q, cands = by_id[rec["id"]], rec["candidates"]
        right = [correct(q, c.text) for c in cands]
        everyone = list(range(len(cands)))
        rnd = random.Random(f"{rec['id']}/{n}")
        subsets = [everyone] if n >= len(cands) else \
            [rnd.sample(everyone, n) for _ in range(SUBSETS)]
        out.append(sum(any(right[i] for i in s) for s in subsets) / len(subsets))
    return out


def p_leader(a: float, b: float, steps: int = 400) -> float:
    """P(p1 > p2) under Beta(a + 1, b + 1) on the top two (Adaptive-Consistency)."""
    log_norm = math.lgamma(a + b + 2) - math.lgamma(a + 1) - math.lgamma(b + 1)
    h = 0.5 / steps
    return h * sum(math.exp(log_norm + a * math.log(x) + b * math.log(1 - x))
                   for x in (0.5 + (i + 0.5) * h for i in range(steps)))


Factors = dict[str, float]
Rule = Callable[[str, list[Candidate], int, str, Factors], bool]


def _beta_rule(threshold: float) -> Rule:
    def rule(strategy: str, got: list[Candidate], budget: int, question: str,
             factors: Factors) -> bool:
        if _cannot_change(strategy, got, budget, question, factors):
            return True
        counts: dict[str, int] = {}
        for c in got:
            counts[answer_key(c.text, question)] = counts.get(answer_key(c.text, question), 0) + 1
        top = sorted(counts.values(), reverse=True) + [0]
        return p_leader(top[0], top[1]) >= threshold
    return rule


def _cannot_change(strategy: str, got: list[Candidate], budget: int, question: str,
                   factors: Factors) -> bool:
    try:
        return decide(strategy, got, expected=budget, final=False,  # type: ignore[arg-type]
                      question=question, calibration=factors) is not None
    except NoQuorum:
        return False


def _share_only(strategy: str, got: list[Candidate], budget: int, question: str,
                factors: Factors) -> bool:
    reason = stopping.verdict(strategy, got, budget=budget,  # type: ignore[arg-type]
                              tau=DEFAULT_TAU, question=question, calibration=factors)
    return reason in ("cannot change", "settled", "budget spent")


def zswarm_rule(strategy: str, got: list[Candidate], budget: int, question: str,
                factors: Factors) -> bool:
    return stopping.verdict(strategy, got, budget=budget,  # type: ignore[arg-type]
                            tau=DEFAULT_TAU, question=question,
                            calibration=factors) is not None


RULES: dict[str, Rule] = {
    "cannot change (the old early stop)": _cannot_change,
    "beta posterior 0.95 (Adaptive-Consistency)": _beta_rule(0.95),
    "beta posterior 0.9": _beta_rule(0.9),
    "weight share 0.6": _share_only,
    "zswarm (share 0.6 or no agreement)": zswarm_rule,
}


def simulate(records: list[Record], by_id: dict[str, Any], strategy: str, budget: int,
             rule: Rule, orders: int = 4) -> tuple[float, float]:
    """(accuracy, mean candidates) of a stopping rule on the collected candidates: waves
    as core/stopping.waves, each in a random draw, its shorter answers first."""
    hits, used = [], []
    learned = learned_factors(records, by_id)
    for rec in records:
        factors = learned[rec["id"]]
        q, cands = by_id[rec["id"]], rec["candidates"]
        for k in range(orders):
            order = list(range(len(cands)))
            random.Random(f"{rec['id']}/{k}").shuffle(order)
            got: list[Candidate] = []
            for size in stopping.waves(budget):
                wave = sorted(order[len(got):len(got) + size], key=lambda i: cands[i].tokens)
                done = False
                for i in wave:
                    got.append(cands[i])
                    if rule(strategy, got, budget, q["question"], factors):
                        done = True
                        break
                if done:
                    break
            w = _winner(strategy, got, q["question"], factors=factors)
            hits.append(float(w is not None and correct(q, w)))
            used.append(len(got))
    return round(statistics.mean(hits), 4), round(statistics.mean(used), 2)




#: why a vote missed a right answer that was among its candidates, in the order checked
#: (the first that fits): the winner was cut short; the right answer was written under
#: several keys; a yes-question answered "no" (the model's prior); the right key had as
#: many candidates as the winner's; it had fewer; none of these
MISSES = ("truncated winner", "split", "yes/no prior", "tie", "right minority", "other")


def miss(q: dict[str, Any], cands: Sequence[Candidate], strategy: str = "confidence",
         tau: float = DEFAULT_TAU, factors: Factors | None = None) -> str | None:
    """Where the vote over ``cands`` went wrong (one of MISSES), or None: it was right, or
    no candidate was (the oracle missed too)."""
    question = q["question"]
    right = [i for i, c in enumerate(cands) if correct(q, c.text)]
    if not right:
        return None
    try:
        d = decide(strategy, cands, expected=len(cands), final=True,  # type: ignore[arg-type]
                   question=question, tau=tau, calibration=factors)
    except NoQuorum:
        return "other"
    assert d is not None
    if d.winner in right:
        return None
    keys = d.answer_keys or [answer_key(c.text, question) for c in cands]
    winner = cands[d.winner]
    right_keys = {keys[i] for i in right if keys[i] is not None}
    counts: dict[str | None, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    if winner.finish_reason == "length":
        return "truncated winner"
    if len(right_keys) > 1:
        return "split"
    if q["type"] == "yesno" and q["gold"][0] == "yes":
        return "yes/no prior"
    best = max((counts[k] for k in right_keys), default=0)
    won = counts[keys[d.winner]]
    return "tie" if best == won else "right minority" if best < won else "other"
