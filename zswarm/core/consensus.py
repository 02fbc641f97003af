"""Consensus strategies: turn candidates into one answer and a report. Pure functions.

``decide(...)`` is called each time a candidate arrives (``final=False``) and once
more when no more can arrive (``final=True``). It returns a Decision as soon as the
strategy can no longer change its mind (early stop), else None; with ``final=True``
it always decides or raises NoQuorum.

- first_valid: the first candidate (in arrival order) that passes validation.
- best_of_n: the highest mean token log-probability; when no candidate has one, or
  they come from several models (not comparable), the fallback score is the
  weighted_vote agreement score; a candidate without one scores the least of the
  others. Waits for all.
- weighted_vote: each candidate scores its weighted text similarity (rapidfuzz
  ratio on normalised text, the first SIMILARITY_CHARS characters) to the others;
  the medoid wins. Stops early once no
  remaining candidate could change the winner.
- majority: candidates are grouped by their normalised answer (core/answers.py);
  the group with most weight wins; ties go to more weight, then earlier arrival.
- confidence: majority's groups, each candidate weighted by its confidence
  exp(mean log-probability / tau) (CISC, Taubenfeld et al. 2025: the softmax over the
  candidates, whose common denominator does not change the winner), times its node's
  weight; the heaviest group wins and, inside it, its most confident candidate. A
  candidate without a log-probability counts as the least confident one that has one.
  A confidence is at least CONFIDENCE_FLOOR, so no candidate - whatever a peer claims -
  counts more than 1 / CONFIDENCE_FLOOR times another of the same node weight.
  Log-probabilities are only compared within one model: when the candidates come from
  several models, or none has log-probabilities, every candidate counts 1 (majority),
  and the decision's note says so.
Log-probabilities are claims when a peer sends them: the coordinator has the deciding
ones re-scored by the local model before an answer stands (runtime/verify.py).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, NoReturn, get_args

from rapidfuzz import fuzz
from typing_extensions import Never

from zswarm.core.answers import answer_key, cut_answer_key
from zswarm.core.calibration import calibrated
from zswarm.core.messages import Candidate, Report, ReportCandidate
from zswarm.core.structured import Shape
from zswarm.errors import NoQuorum

Strategy = Literal["first_valid", "best_of_n", "weighted_vote", "majority", "confidence"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
#: the strategies whose decisions log-probabilities (claims, when a peer sends them) sway
SCORED_STRATEGIES: tuple[Strategy, ...] = ("best_of_n", "confidence")

#: the temperature of ``confidence`` (chosen by bench/consensus_quality.py on the tuning
#: half: at 2.0 yes/no answers score as under majority, where 1.0 trusted the model's
#: confident "No" - its bias - over a split "yes"; the other kinds are unchanged)
DEFAULT_TAU = 2.0
#: the least confidence a candidate has under ``confidence`` (a cap on what one can claim)
CONFIDENCE_FLOOR = 0.05


@dataclass(frozen=True)
class Validation:
    """What makes a candidate valid. Errors, cancellations and empty texts never are."""

    allow_truncated: bool = True
    regex: str | None = None
    require_json: bool = False
    #: a structured request's shape (core/structured.py): a candidate is valid only if
    #: complete and of the shape, and its answer key is its value
    shape: Shape | None = None

    def accepts(self, cand: Candidate) -> bool:
        if cand.finish_reason in ("error", "cancelled") or not cand.text.strip():
            return False
        if cand.finish_reason == "length" and (not self.allow_truncated or self.shape):
            return False
        if self.shape is not None and self.shape.key(cand.text) is None:
            return False
        if self.regex is not None and re.search(self.regex, cand.text) is None:
            return False
        if self.require_json:
            try:
                json.loads(cand.text)
            except ValueError:
                return False
        return True


    def key(self, text: str, question: str) -> str:
        """A valid candidate's answer key: its structured value, else core/answers.py's."""
        if self.shape is not None:
            return self.shape.key(text, question) or ""
        return answer_key(text, question)

    def answer(self, cand: Candidate, question: str) -> str | None:
        """The key a valid candidate votes for, or None when it states no answer: a
        candidate cut by max_tokens is read up to its last complete clause
        (core/answers.cut_answer_key); a structured one always has its value."""
        if cand.finish_reason == "length" and self.shape is None:
            return cut_answer_key(cand.text, question)
        return self.key(cand.text, question)


@dataclass(frozen=True)
class Decision:
    winner: int
    scores: list[float | None]
    agreement: float
    answer_keys: list[str | None] = field(default_factory=list)
    note: str = ""


#: the key of a model's weight among the node weights (no node id has a colon)
MODEL_KEY = "model:"
#: a weight's key is a node id or its first characters, at least this many (`zswarm
#: peers` shows 12): never a name, which the peer chooses (config.py checks the keys)
MIN_ID_PREFIX = 8


def resolve_weights(weights: Mapping[str, float], node_ids: set[str]) -> dict[str, float]:
    """The weights by the ids present: a key that is an id counts for it; a shorter key
    (the start of an id) counts for the one present id that starts with it - the longest
    such key - and for none when two present ids do: a node cannot take another's weight
    by choosing an id that looks like it. Unmatched keys stay (inert), so the largest
    weight is still known to the early stop."""
    out = dict(weights)
    for key in sorted(weights, key=len, reverse=True):
        if len(key) < MIN_ID_PREFIX or key in node_ids:
            continue
        matching = [n for n in node_ids if n.startswith(key) and n not in weights]
        if len(matching) == 1:
            out.setdefault(matching[0], float(weights[key]))
    return out


def node_weight(weights: Mapping[str, float], node_id: str) -> float:
    """The weight of one node (resolve_weights with only that node present)."""
    return float(resolve_weights(weights, {node_id}).get(node_id, 1.0))


def _weight(weights: Mapping[str, float], cand: Candidate) -> float:
    """The node's weight, by node id (a name is chosen by the peer and may change);
    ``weights`` resolved for the candidates present (``decide`` does); in a committee
    across models, times its model's (key ``model:<id>``: core/committee.py)."""
    return float(weights.get(cand.node_id, 1.0)) * float(
        weights.get(MODEL_KEY + cand.model_id, 1.0))


def _max_weight(weights: Mapping[str, float]) -> float:
    """The largest weight a candidate can have (a node's times a model's)."""
    nodes = [w for k, w in weights.items() if not k.startswith(MODEL_KEY)]
    models = [w for k, w in weights.items() if k.startswith(MODEL_KEY)]
    return max([1.0, *nodes]) * max([1.0, *models])


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


#: texts are compared on their first this many normalised characters: similarity costs
#: O(len^2 / 64) per pair (1.3 s for two 200,000-character texts, 0.03 ms at 1,000)
SIMILARITY_CHARS = 1000


@lru_cache(maxsize=4096)
def _similarity(a: str, b: str) -> float:
    return fuzz.ratio(a, b) / 100.0


def similarity_matrix(texts: Sequence[str]) -> list[list[float]]:
    """Pairwise similarity in [0, 1] (rapidfuzz ratio of normalised, bounded texts).

    Pairs are cached: decide() runs after every candidate, and each pair is compared once.
    """
    normed = [_norm(t[: 4 * SIMILARITY_CHARS])[:SIMILARITY_CHARS] for t in texts]
    return [[_similarity(a, b) for b in normed] for a in normed]


def decide(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    *,
    expected: int,
    final: bool,
    weights: Mapping[str, float] | None = None,
    validation: Validation | None = None,
    tau: float = DEFAULT_TAU,
    question: str = "",
    calibration: Mapping[str, float] | None = None,
) -> Decision | None:
    """Decide now if the strategy allows it; see the module docstring.

    ``question`` (the prompt's last user message) helps group answers: a number or word
    of the question, restated, is not taken for the answer (core/answers.py).
    ``calibration`` (core/calibration.py: key -> factor, the asker's own figures for the
    round's model) multiplies each confidence under ``confidence`` when one model made
    every candidate.
    """
    weights = resolve_weights(weights or {}, {c.node_id for c in candidates})
    validation = validation or Validation()
    valid = [i for i, c in enumerate(candidates) if validation.accepts(c)]
    remaining = max(0, expected - len(candidates))
    if not valid:
        if not (final or remaining == 0):
            return None
        cut = [i for i, c in enumerate(candidates) if c.finish_reason == "length"]
        if validation.shape is not None and cut:  # as OpenAI does: the cut answer, "length"
            return Decision(winner=cut[0], scores=[None] * len(candidates), agreement=0.0,
                            note="every candidate was cut by max_tokens before its structure "
                                 "was complete")
        raise NoQuorum(f"none of {len(candidates)} candidates passed validation")
    match strategy:
        case "first_valid":
            return _first_valid(candidates, valid)
        case "best_of_n":
            if remaining and not final:
                return None
            return _best_of_n(candidates, valid, weights, _compared(candidates, validation))
        case "weighted_vote":
            return _weighted_vote(candidates, valid, weights, _compared(candidates, validation),
                                  remaining=0 if final else remaining)
        case "majority":
            return _majority(candidates, valid, weights, question, validation,
                             remaining=0 if final else remaining)
        case "confidence":
            return _confidence(candidates, valid, weights, tau, question, validation,
                               calibration or {}, remaining=0 if final else remaining)
        case _:
            _unknown(strategy)


def _unknown(strategy: Never) -> NoReturn:
    """Every strategy is matched above (the type checker says so); a caller outside its
    view (the public ``decide``) may still name another."""
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def _first_valid(candidates: Sequence[Candidate], valid: list[int]) -> Decision:
    winner = valid[0]
    scores: list[float | None] = [None] * len(candidates)
    scores[winner] = 1.0
    return Decision(winner=winner, scores=scores, agreement=1.0 / len(valid))


def _compared(candidates: Sequence[Candidate], validation: Validation) -> list[str]:
    """What similarity compares: the texts, or a structured answer's canonical values."""
    if validation.shape is None:
        return [c.text for c in candidates]
    return [validation.key(c.text, "") for c in candidates]


def _vote_scores(
    candidates: Sequence[Candidate], valid: list[int], weights: Mapping[str, float],
    texts: Sequence[str]
) -> tuple[dict[int, float], list[list[float]]]:
    sim = similarity_matrix([texts[i] for i in valid])
    raw: dict[int, float] = {}
    for a, i in enumerate(valid):
        raw[i] = sum(
            _weight(weights, candidates[j]) * sim[a][b] for b, j in enumerate(valid) if j != i
        )
    return raw, sim


def _agreement(sim: list[list[float]], pos: int) -> float:
    others = [s for b, s in enumerate(sim[pos]) if b != pos]
    return sum(others) / len(others) if others else 1.0


def _best_of_n(
    candidates: Sequence[Candidate], valid: list[int], weights: Mapping[str, float],
    texts: Sequence[str]
) -> Decision:
    raw, sim = _vote_scores(candidates, valid, weights, texts)
    with_lp = [candidates[i].mean_logprob for i in valid
               if candidates[i].mean_logprob is not None]
    models = {candidates[i].model_id for i in valid}
    scores: list[float | None] = [None] * len(candidates)
    note = ""
    if not with_lp or len(models) > 1:
        note = ("no log-probabilities: scored by agreement" if not with_lp else
                f"{len(models)} models: log-probabilities not comparable, scored by agreement")
        for i in valid:
            scores[i] = raw[i]
    else:  # one model: without a log-probability (or a checked claim), the least of them
        least = min(float(lp) for lp in with_lp if lp is not None)
        for i in valid:
            lp = candidates[i].mean_logprob
            scores[i] = float(lp) if lp is not None else least
    winner = max(valid, key=lambda i: (scores[i], -i))
    return Decision(winner, scores, _agreement(sim, valid.index(winner)), note=note)


def _weighted_vote(
    candidates: Sequence[Candidate],
    valid: list[int],
    weights: Mapping[str, float],
    texts: Sequence[str],
    *,
    remaining: int,
) -> Decision | None:
    raw, sim = _vote_scores(candidates, valid, weights, texts)
    ranked = sorted(valid, key=lambda i: (-raw[i], i))
    leader = ranked[0]
    if remaining:
        # Each unseen candidate adds at most w_max to any score, and itself can
        # score at most the total weight of everyone else. Unknown peers weigh 1.
        w_max = _max_weight(weights)
        runner_up = raw[ranked[1]] if len(ranked) > 1 else 0.0
        newcomer_max = sum(_weight(weights, candidates[i]) for i in valid) + w_max * (remaining - 1)
        if raw[leader] - runner_up <= remaining * w_max or raw[leader] <= newcomer_max:
            return None
    scores: list[float | None] = [None] * len(candidates)
    for i in valid:
        scores[i] = raw[i]
    return Decision(leader, scores, _agreement(sim, valid.index(leader)))


def _majority(
    candidates: Sequence[Candidate],
    valid: list[int],
    weights: Mapping[str, float],
    question: str,
    validation: Validation,
    *,
    remaining: int,
) -> Decision | None:
    weight = {i: _weight(weights, candidates[i]) for i in valid}
    keys, group_weight, first_seen, answered = _groups(candidates, valid, weight, question,
                                                       validation)
    ranked = sorted(group_weight, key=lambda k: (-group_weight[k], first_seen[k]))
    best = ranked[0]
    if remaining:
        w_max = _max_weight(weights)
        second = group_weight[ranked[1]] if len(ranked) > 1 else 0.0
        if group_weight[best] - second <= remaining * w_max or not answered:
            return None
    total = sum(weight.values())  # a candidate that states no answer still counts here
    scores: list[float | None] = [None] * len(candidates)
    for i in valid:
        key = keys[i]
        scores[i] = None if key is None else group_weight[key] / total
    return Decision(first_seen[best], scores, group_weight[best] / total, answer_keys=keys)


def confidences(candidates: Sequence[Candidate], valid: list[int], tau: float
                ) -> tuple[dict[int, float], str]:
    """Each valid candidate's confidence in [CONFIDENCE_FLOOR, 1], and how it was found."""
    with_lp = [i for i in valid if candidates[i].mean_logprob is not None]
    models = {candidates[i].model_id for i in valid}
    if not with_lp:
        return dict.fromkeys(valid, 1.0), "no log-probabilities: counted like majority"
    if len(models) > 1:
        return dict.fromkeys(valid, 1.0), \
            f"{len(models)} models: log-probabilities not comparable, counted like majority"
    out = {}
    for i in with_lp:
        lp = candidates[i].mean_logprob
        assert lp is not None
        out[i] = max(CONFIDENCE_FLOOR, math.exp(min(0.0, lp) / tau))
    # a candidate without one (or whose claim could not be checked) is not trusted more
    # than the least confident candidate that has one
    least = min(out.values())
    for i in valid:
        out.setdefault(i, least)
    note = "" if len(with_lp) == len(valid) else (
        f"{len(valid) - len(with_lp)} candidate(s) without log-probabilities counted as "
        "the least confident")
    return out, note


def _groups(candidates: Sequence[Candidate], valid: list[int], weight: Mapping[int, float],
            question: str, validation: Validation, factors: Mapping[str, float] | None = None
            ) -> tuple[list[str | None], dict[str, float], dict[str, int], bool]:
    """Answer key per candidate, summed weight (times its key's calibration ``factors``)
    per key, first arrival per key, and whether any candidate states an answer. One that
    states none (Validation.answer) joins no group and keeps key None, unless none does:
    then every candidate is grouped by its whole text's key (a round of cut preambles
    still has a winner, but no early stop: the next candidate that states an answer would
    win alone)."""
    keys: list[str | None] = [None] * len(candidates)
    for i in valid:
        keys[i] = validation.answer(candidates[i], question)
    answered = any(keys[i] is not None for i in valid)
    if not answered:
        for i in valid:
            keys[i] = validation.key(candidates[i].text, question)
    total: dict[str, float] = {}
    first: dict[str, int] = {}
    for i in valid:
        key = keys[i]
        if key is not None:
            total[key] = total.get(key, 0.0) + weight[i] * calibrated(factors or {}, key)
            first.setdefault(key, i)
    return keys, total, first, answered


def _confidence(
    candidates: Sequence[Candidate],
    valid: list[int],
    weights: Mapping[str, float],
    tau: float,
    question: str,
    validation: Validation,
    calibration: Mapping[str, float],
    *,
    remaining: int,
) -> Decision | None:
    conf, note = confidences(candidates, valid, tau)
    if len({candidates[i].model_id for i in valid}) > 1:
        calibration = {}  # counted like majority: there is no one model's prior
    weight = {i: _weight(weights, candidates[i]) * conf[i] for i in valid}
    keys, total, first, answered = _groups(candidates, valid, weight, question, validation,
                                           calibration)
    weight = {i: w * calibrated(calibration, keys[i]) for i, w in weight.items()}
    ranked = sorted(total, key=lambda k: (-total[k], first[k]))
    best = ranked[0]
    lift = max([1.0, *calibration.values()])  # what a newcomer's weight may be multiplied by
    if remaining and (not answered or not _settled(candidates, valid, weights, keys, weight,
                                                   best, remaining, question, validation,
                                                   lift)):
        return None
    if calibration and any(k in calibration for k in total):
        note = "; ".join(filter(None, [note, "calibrated by this node's prior for the model: "
                                       + ", ".join(f"{k.split(':', 1)[1]} x{f:.2f}"
                                                   for k, f in calibration.items())]))
    winner = max((i for i in valid if keys[i] == best), key=lambda i: (weight[i], -i))
    grand = sum(weight.values())  # a candidate that states no answer still counts here
    scores: list[float | None] = [None] * len(candidates)
    for i in valid:
        scores[i] = None if keys[i] is None else weight[i] / grand
    return Decision(winner, scores, total[best] / grand, answer_keys=keys, note=note)


def _settled(candidates: Sequence[Candidate], valid: list[int], weights: Mapping[str, float],
             keys: list[str | None], weight: Mapping[int, float], best: str, remaining: int,
             question: str, validation: Validation, lift: float = 1.0) -> bool:
    """Can no ``remaining`` newcomers change the winner? Each adds at most w_max
    (confidence <= 1) to one group; a second model turns the rule into counting; and,
    while there is one model, a newcomer with a log-probability may lower what each
    candidate without one counts (the least confident's) down to CONFIDENCE_FLOOR, or
    make the rule confidence where it was counting. So the winner's are taken at their
    lowest and the others' at their highest. A calibrated newcomer counts up to ``lift``
    times more."""
    w_max = _max_weight(weights) * lift
    counted = {i: _weight(weights, candidates[i]) for i in valid}
    _, by_count, _, _ = _groups(candidates, valid, counted, question, validation)
    sums = [by_count]
    if len({candidates[i].model_id for i in valid}) == 1:
        bound: dict[str, float] = {}
        for i in valid:
            key = keys[i]
            if key is None:
                continue
            if candidates[i].mean_logprob is not None:
                w = weight[i]
            else:
                w = counted[i] * (CONFIDENCE_FLOOR if key == best else 1.0)
            bound[key] = bound.get(key, 0.0) + w
        sums.append(bound)
    for total in sums:
        rest = max((v for k, v in total.items() if k != best), default=0.0)
        if total[best] - rest <= remaining * w_max:
            return False
    return True


def deciding_claims(strategy: Strategy, candidates: Sequence[Candidate], decision: Decision
                    ) -> list[int]:
    """The candidates whose log-probability helped decide: best_of_n's winner; under
    confidence, the winning group when the candidates disagree (a unanimous round does
    not depend on anyone's confidence). The others strategies use no log-probabilities.
    A peer's entry here must be checked (runtime/verify.py) before the answer stands."""
    if strategy not in SCORED_STRATEGIES:
        return []
    if strategy == "best_of_n":
        return [decision.winner]
    if not decision.answer_keys:
        return []
    keys = decision.answer_keys
    if len({k for k in keys if k is not None}) < 2:
        return []
    return [i for i, k in enumerate(keys) if k == keys[decision.winner]]


def build_report(
    strategy: str,
    candidates: Sequence[Candidate],
    decision: Decision,
    *,
    expected: int,
    timings: Mapping[str, float] | None = None,
    note: str = "",
) -> Report:
    """The report returned with every answer: who said what, scores, agreement, timings."""
    keys = decision.answer_keys or [None] * len(candidates)
    return Report(
        strategy=strategy,
        winner=decision.winner,
        agreement=round(decision.agreement, 4),
        candidates=[
            ReportCandidate(
                node=c.node,
                node_id=c.node_id,
                worker=c.worker,
                text=c.text,
                score=None if s is None else round(s, 4),
                finish_reason=c.finish_reason,
                latency_ms=round(c.latency_ms, 2),
                tokens=c.tokens,
                prompt_tokens=c.prompt_tokens,
                cached_tokens=c.cached_tokens,
                answer_key=k,
                token_logprobs=c.token_logprobs,
                mean_logprob=c.mean_logprob,
                model_id=c.model_id,
            )
            for c, s, k in zip(candidates, decision.scores, keys, strict=True)
        ],
        timings=dict(timings or {}),
        expected=expected,
        note="; ".join(n for n in (decision.note, note) if n),
    )
