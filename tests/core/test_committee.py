"""A committee's shares, and the weights of its models learned from the decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zswarm.core.committee import MAX_WEIGHT, MIN_WEIGHT, ModelWeights, shares
from zswarm.core.consensus import decide
from zswarm.core.messages import Candidate


def cand(text: str, model: str, node: str = "me") -> Candidate:
    return Candidate(text=text, finish_reason="stop", model_id=model, node_id=node)


def test_shares_split_n_evenly_over_the_models():
    assert shares(8, ["a", "b", "c"]) == [("a", 3), ("b", 3), ("c", 2)]
    assert shares(2, ["a", "b", "c"]) == [("a", 1), ("b", 1)]


def test_a_model_that_agrees_with_the_decisions_weighs_more_one_that_does_not_less():
    w = ModelWeights()
    assert w.weight("good") == w.weight("bad") == 1.0  # not seen yet
    for _ in range(30):
        cs = [cand("Paris", "good"), cand("Paris", "good"), cand("Lyon", "bad")]
        w.observe(cs, ["paris", "paris", "lyon"], 0, ["good", "bad"])
    assert w.weight("good") > 1.4 and w.weight("bad") < 0.6


def test_model_weights_change_a_vote_only_within_their_bounds():
    w = ModelWeights()
    w.agreement = {"good": 1.0, "bad": 0.0}
    cs = [cand("Paris", "good"), cand("Lyon", "bad"), cand("Lyon", "bad")]
    weights = w.weights(["good", "bad"])
    assert weights == {"model:good": MAX_WEIGHT, "model:bad": MIN_WEIGHT}
    # two of the bad model (0.5 each) do not outvote one of the good one (1.5)...
    assert decide("majority", cs, expected=3, final=True, weights=weights).winner == 0
    # ...but its candidates still count: four of them do (2.0)
    cs += [cand("Lyon", "bad"), cand("Lyon", "bad")]
    assert cs[decide("majority", cs, expected=5, final=True, weights=weights).winner
              ].text == "Lyon"


@given(st.lists(st.tuples(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6),
                          st.lists(st.sampled_from(["x", "y", None]), min_size=6,
                                   max_size=6), st.integers(0, 5)), max_size=40))
def test_weights_stay_within_their_bounds_whatever_is_observed(rounds):
    w = ModelWeights()
    for models, keys, winner in rounds:
        cs = [cand("t", m) for m in models]
        w.observe(cs, keys[:len(cs)], min(winner, len(cs) - 1), ["a", "b", "c"])
    for m in ("a", "b", "c", "never"):
        assert MIN_WEIGHT <= w.weight(m) <= MAX_WEIGHT


def test_models_announced_without_end_cost_the_least_recently_seen_not_memory():
    from zswarm.core.committee import MAX_TRACKED

    w = ModelWeights()
    for i in range(3 * MAX_TRACKED):  # a member announcing a new model id every time
        w.observe([cand("x", "good"), cand("x", f"new{i}")], ["x", "x"], 0,
                  ["good", f"new{i}"])
    assert len(w.agreement) == MAX_TRACKED
    assert "good" in w.agreement and w.weight("good") > 1.4  # seen every time: kept
