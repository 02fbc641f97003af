"""The stopping rule of adaptive consensus (core/stopping.py): waves, and when to stop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zswarm.core import stopping
from zswarm.core.consensus import DEFAULT_TAU
from zswarm.core.messages import Candidate
from zswarm.core.stopping import ADAPTIVE_STRATEGIES, verdict, waves


def cand(text: str, lp: float | None = -0.3, node: str = "a") -> Candidate:
    return Candidate(text=text, finish_reason="stop", mean_logprob=lp, node=node, node_id=node,
                     model_id="m")


@pytest.mark.parametrize(("budget", "sizes"), [
    (1, [1]), (4, [4]), (5, [4, 1]), (8, [4, 4]), (12, [4, 4, 4]), (16, [4, 4, 8]),
    (32, [4, 4, 8, 16]),
])
def test_waves_double_what_was_asked_and_spend_exactly_the_budget(budget, sizes):
    assert waves(budget) == sizes


def test_a_budget_is_positive():
    with pytest.raises(ValueError, match="at least 1"):
        waves(0)


@pytest.mark.parametrize("strategy", ADAPTIVE_STRATEGIES)
def test_agreeing_candidates_settle_after_the_minimum(strategy):
    four = [cand("Paris"), cand("Paris."), cand("paris"), cand("The capital is Paris.")]
    assert stopping.MIN_CANDIDATES == 4  # the whole first wave (tuned: core/stopping.py)
    assert verdict(strategy, four[:3], budget=16, tau=DEFAULT_TAU) is None  # too few
    assert verdict(strategy, four, budget=16, tau=DEFAULT_TAU) == "settled"


@pytest.mark.parametrize("strategy", ADAPTIVE_STRATEGIES)
def test_scattered_answers_stop_at_half_the_budget_as_no_agreement(strategy):
    texts = [f"answer {w}" for w in "abcdefghij"]
    got = [cand(t) for t in texts]
    assert verdict(strategy, got[:7], budget=16, tau=DEFAULT_TAU) is None
    assert verdict(strategy, got[:8], budget=16, tau=DEFAULT_TAU) == "no agreement"


def test_a_split_vote_waits_for_more():
    got = [cand("Paris"), cand("Lyon"), cand("Paris"), cand("Lyon")]
    assert verdict("majority", got, budget=16, tau=DEFAULT_TAU) is None


def test_the_old_early_stop_still_ends_an_ask_the_budget_cannot_turn():
    # 2 of a budget of 3 agree: the last one could not change the winner (and two
    # candidates are too few to call it settled)
    got = [cand("Paris"), cand("Paris")]
    assert verdict("majority", got, budget=3, tau=DEFAULT_TAU) == "cannot change"


def test_the_budget_spent_is_a_stop():
    got = [cand("Paris"), cand("Lyon")]
    assert verdict("majority", got, budget=2, tau=DEFAULT_TAU) == "budget spent"


def test_best_of_n_settles_only_when_its_winner_is_the_common_answer():
    # the most confident candidate says Lyon; most say Paris: not settled
    got = [cand("Lyon", lp=-0.01), cand("Paris", lp=-0.9), cand("Paris", lp=-0.9),
           cand("Paris", lp=-0.9)]
    assert verdict("best_of_n", got, budget=16, tau=DEFAULT_TAU) is None
    agreeing = [cand("Paris", lp=-0.01), *got[1:]]
    assert verdict("best_of_n", agreeing, budget=16, tau=DEFAULT_TAU) == "settled"


def test_confidence_weighs_the_share():
    # 3 to 2 in count (60%), but the two are more confident: 57% of the weight to Lyon
    got = [cand("Paris", lp=-1.0), cand("Paris", lp=-1.0), cand("Paris", lp=-1.0),
           cand("Lyon", lp=-0.3), cand("Lyon", lp=-0.3)]
    assert verdict("confidence", got, budget=16, tau=1.0) is None
    assert verdict("majority", got, budget=16, tau=1.0) == "settled"


def test_a_peer_weight_counts_in_the_share():
    got = [cand("Paris", node="a"), cand("Paris", node="a"), cand("Paris", node="a"),
           cand("Lyon", node="b")]
    assert verdict("majority", got, budget=16, tau=DEFAULT_TAU) == "settled"
    assert verdict("majority", got, budget=16, tau=DEFAULT_TAU, weights={"b": 3.0}) is None


def test_invalid_candidates_never_settle_anything():
    broken = [Candidate(text="", finish_reason="error") for _ in range(10)]
    assert verdict("confidence", broken, budget=16, tau=DEFAULT_TAU) is None


def test_a_strategy_without_groups_takes_no_budget():
    with pytest.raises(ValueError, match="a budget needs"):
        verdict("weighted_vote", [cand("x")], budget=4, tau=DEFAULT_TAU)


_texts = st.sampled_from(["Paris", "paris.", "Lyon", "42", "forty-two", "Yes.", "No", "",
                          "The answer is (b)", "x" * 50])
_cands = st.builds(
    Candidate, text=_texts,
    finish_reason=st.sampled_from(["stop", "length", "error", "cancelled"]),
    mean_logprob=st.none() | st.floats(min_value=-1e6, max_value=0.0),
    node_id=st.sampled_from(["a", "b", "c"]), model_id=st.sampled_from(["m", "m", "other"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_cands, max_size=20), st.integers(min_value=1, max_value=16),
       st.sampled_from(ADAPTIVE_STRATEGIES),
       st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0.01, 1000.0)))
def test_any_candidates_get_a_reason_or_none_never_an_exception(cands, budget, strategy,
                                                                  weights):
    reason = verdict(strategy, cands, budget=budget, tau=DEFAULT_TAU, weights=weights)
    assert reason in (None, "cannot change", "settled", "no agreement", "budget spent")
    if len(cands) >= budget:
        assert reason == "budget spent"  # the budget is never overspent by the rule
    if reason == "settled":
        assert len(cands) >= stopping.MIN_CANDIDATES
