from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zswarm.core.consensus import (
    CONFIDENCE_FLOOR,
    STRATEGIES,
    Validation,
    build_report,
    decide,
)
from zswarm.core.messages import Candidate
from zswarm.errors import NoQuorum


def cand(text: str, *, node: str = "a", finish: str = "stop", lp: float | None = None,
         model: str = "m@1") -> Candidate:
    return Candidate(text=text, finish_reason=finish, mean_logprob=lp, node=node, node_id=node,  # type: ignore[arg-type]
                     worker="w0", model_id=model)


def test_first_valid_skips_invalid_and_stops_early():
    cands = [cand("", finish="stop"), cand("boom", finish="error"), cand("Paris")]
    d = decide("first_valid", cands, expected=5, final=False)
    assert d is not None and d.winner == 2


def test_first_valid_can_refuse_truncated():
    cands = [cand("Par", finish="length"), cand("Paris.")]
    d = decide("first_valid", cands, expected=2, final=True,
               validation=Validation(allow_truncated=False))
    assert d is not None and d.winner == 1


def test_first_valid_regex_and_json_checks():
    cands = [cand("no number"), cand("it is 42")]
    d = decide("first_valid", cands, expected=2, final=True, validation=Validation(regex=r"\d+"))
    assert d is not None and d.winner == 1
    cands = [cand("{bad"), cand('{"a": 1}')]
    d = decide("first_valid", cands, expected=2, final=True, validation=Validation(require_json=True))
    assert d is not None and d.winner == 1


def test_best_of_n_waits_then_picks_highest_logprob():
    cands = [cand("x", lp=-2.0), cand("y", lp=-0.5)]
    assert decide("best_of_n", cands, expected=3, final=False) is None
    d = decide("best_of_n", cands, expected=3, final=True)
    assert d is not None and d.winner == 1 and d.scores[1] == -0.5


def test_best_of_n_falls_back_to_agreement_without_logprobs():
    cands = [cand("Paris is the capital"), cand("Berlin"), cand("Paris is the capital.")]
    d = decide("best_of_n", cands, expected=3, final=True)
    assert d is not None and d.winner in (0, 2) and "agreement" in d.note


def test_majority_normalises_answers():
    cands = [cand("Paris"), cand("Berlin"), cand("The capital of France is Paris."),
             cand("paris"), cand("Paris.")]
    d = decide("majority", cands, expected=5, final=True)
    assert d is not None and d.winner == 0 and d.agreement == pytest.approx(0.8)


def test_majority_numbers_agree_across_forms():
    cands = [cand("five"), cand("2 + 3 = 5"), cand("6")]
    d = decide("majority", cands, expected=3, final=True)
    assert d is not None and d.winner == 0 and d.agreement == pytest.approx(2 / 3)


def test_majority_early_stop_only_when_decided():
    cands = [cand("5"), cand("5")]
    assert decide("majority", cands, expected=4, final=False) is None
    cands.append(cand("5"))
    d = decide("majority", cands, expected=4, final=False)
    assert d is not None and d.winner == 0


def test_majority_weights_break_ties():
    cands = [cand("4", node="a"), cand("5", node="b")]
    d = decide("majority", cands, expected=2, final=True, weights={"b": 2.0})
    assert d is not None and d.winner == 1


def test_majority_tie_goes_to_earlier_arrival():
    d = decide("majority", [cand("4"), cand("5")], expected=2, final=True)
    assert d is not None and d.winner == 0


def test_weighted_vote_picks_medoid():
    cands = [cand("the sky is blue"), cand("bananas are yellow"), cand("the sky is blue today"),
             cand("the sky is so blue")]
    d = decide("weighted_vote", cands, expected=4, final=True)
    assert d is not None and d.winner in (0, 2, 3) and d.winner != 1


def test_weighted_vote_early_stop_is_sound():
    same = [cand("red") for _ in range(6)]
    d = decide("weighted_vote", same, expected=7, final=False)
    # 6 identical: the leader has 5.0, any newcomer at most 6.0 -> cannot stop yet
    assert d is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_or_all_invalid_raises_no_quorum(strategy):
    with pytest.raises(NoQuorum):
        decide(strategy, [], expected=0, final=True)
    with pytest.raises(NoQuorum):
        decide(strategy, [cand("", finish="error")], expected=1, final=True)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown strategy"):
        decide("nope", [cand("x")], expected=1, final=True)


def test_report_shape():
    cands = [cand("5", node="n1"), cand("5", node="n2")]
    d = decide("majority", cands, expected=2, final=True)
    assert d is not None
    rep = build_report("majority", cands, d, expected=2, timings={"total_ms": 3.0})
    assert rep.winner == 0 and rep.candidates[1].node == "n2"
    assert rep.candidates[0].answer_key == "num:5" and rep.timings["total_ms"] == 3.0


texts = st.sampled_from(["5", "five", "6", "Paris", "paris.", "Berlin", "red", "blue", "", "42",
                         # cut by max_tokens these state no answer, or only their start
                         "To add 2 and 3, we", "The answer is 5, but it", "approximately 1"])
#: mostly complete; a cut candidate is read up to its last complete clause
finishes = st.sampled_from(["stop", "stop", "stop", "length"])
cand_lists = st.lists(
    st.builds(lambda t, node, lp, f: cand(t, node=node, lp=lp, finish=f), texts,
              st.sampled_from(["a", "b", "c"]),
              st.one_of(st.none(), st.floats(-5, 0)), finishes),
    min_size=1, max_size=8)
mixed_lists = st.lists(
    st.builds(lambda t, node, lp, model, f: cand(t, node=node, lp=lp, model=model, finish=f),
              texts, st.sampled_from(["a", "b", "c"]), st.one_of(st.none(), st.floats(-5, 0)),
              st.sampled_from(["m@1", "m@1", "m@1", "other@2"]), finishes),
    min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(cand_lists, st.sampled_from(STRATEGIES))
def test_winner_is_a_valid_candidate(cands, strategy):
    try:
        d = decide(strategy, cands, expected=len(cands), final=True)
    except NoQuorum:
        assert all(not c.text.strip() for c in cands)
        return
    assert d is not None
    assert 0 <= d.winner < len(cands) and cands[d.winner].text.strip()
    assert 0.0 <= d.agreement <= 1.0 + 1e-9


@settings(max_examples=150, deadline=None)
@given(cand_lists, st.randoms(use_true_random=False))
def test_majority_answer_independent_of_arrival_order_without_ties(cands, rnd: random.Random):
    try:
        d1 = decide("majority", cands, expected=len(cands), final=True)
    except NoQuorum:
        return
    assert d1 is not None
    weights = sorted((s for s in d1.scores if s is not None), reverse=True)
    shuffled = list(cands)
    rnd.shuffle(shuffled)
    d2 = decide("majority", shuffled, expected=len(cands), final=True)
    assert d2 is not None
    key1 = d1.answer_keys[d1.winner]
    key2 = d2.answer_keys[d2.winner]
    # only a tie between groups may change the outcome (documented tie-break: arrival)
    top = weights[0]
    tied_groups = {d1.answer_keys[i] for i, s in enumerate(d1.scores) if s == top}
    if len(tied_groups) == 1:
        assert key1 == key2


@settings(max_examples=100, deadline=None)
@given(cand_lists)
def test_duplicates_count_as_agreement(cands):
    said = Validation().answer  # a cut candidate that states no answer boosts none
    valid = [c for c in cands if c.text.strip() and said(c, "") is not None]
    if not valid:
        return
    target = valid[0]
    boosted = list(cands) + [target] * (len(cands) + 1)
    d = decide("majority", boosted, expected=len(boosted), final=True)
    assert d is not None
    assert said(boosted[d.winner], "") == said(target, "")


def test_similarity_reads_a_bounded_prefix():
    from zswarm.core.consensus import SIMILARITY_CHARS, similarity_matrix

    a = "word " * SIMILARITY_CHARS
    sim = similarity_matrix([a + "tail one", a + "a different ending altogether"])
    assert sim[0][1] == 1.0  # the texts differ only after the compared prefix


# --- confidence ------------------------------------------------------------------------


def test_confidence_lets_a_confident_minority_beat_an_unsure_majority():
    cands = [cand("Paris", lp=-2.0), cand("paris.", lp=-2.2), cand("Paris", lp=-1.9),
             cand("Lyon", lp=-0.1), cand("Lyon", lp=-0.15)]
    d = decide("confidence", cands, expected=5, final=True, tau=0.5)
    assert d is not None and d.answer_keys[d.winner] == "text:lyon"
    assert d.winner == 3  # inside the group: its most confident candidate
    assert decide("majority", cands, expected=5, final=True).answer_keys[0] == "text:paris"
    # a higher tau trusts log-probabilities less: the majority wins again
    d = decide("confidence", cands, expected=5, final=True, tau=5.0)
    assert d is not None and d.answer_keys[d.winner] == "text:paris"


def test_confidence_without_logprobs_is_majority_and_says_so():
    cands = [cand("6"), cand("six"), cand("7")]
    d = decide("confidence", cands, expected=3, final=True)
    m = decide("majority", cands, expected=3, final=True)
    assert d is not None and m is not None and d.winner == m.winner == 0
    assert "no log-probabilities" in d.note
    # without a log-probability, no more trusted than the least confident one with one
    d = decide("confidence", [cand("6", lp=-3.0), cand("7"), cand("6", lp=-0.1)],
               expected=3, final=True)
    assert d is not None and d.answer_keys[d.winner] == "num:6"
    assert "counted as the least confident" in d.note


def test_confidence_never_compares_two_models_log_probabilities():
    cands = [cand("6", lp=-3.0, model="a@1"), cand("6", lp=-3.0, model="a@1"),
             cand("7", lp=-0.01, model="b@2")]
    d = decide("confidence", cands, expected=3, final=True)
    assert d is not None and d.answer_keys[d.winner] == "num:6" and "2 models" in d.note


def test_confidence_ties_go_to_the_earlier_group():
    d = decide("confidence", [cand("7", lp=-0.5), cand("6", lp=-0.5)], expected=2, final=True)
    assert d is not None and d.winner == 0


def test_confidence_node_weights_multiply():
    cands = [cand("7", node="a", lp=-0.2), cand("6", node="b", lp=-0.4)]
    d = decide("confidence", cands, expected=2, final=True, tau=0.5)
    assert d is not None and d.winner == 0
    d = decide("confidence", cands, expected=2, final=True, tau=0.5, weights={"b": 3.0})
    assert d is not None and d.winner == 1


def test_confidence_caps_what_one_candidate_can_claim():
    # a peer claiming certainty (log-prob 0) counts as much as 1 / CONFIDENCE_FLOOR
    # of the least confident candidates, never more
    liar = cand("9", node="peer", lp=0.0)
    honest = [cand("4", lp=-50.0) for _ in range(int(1 / CONFIDENCE_FLOOR) + 1)]
    d = decide("confidence", [liar, *honest], expected=len(honest) + 1, final=True)
    assert d is not None and d.answer_keys[d.winner] == "num:4"


def test_confidence_stops_early_only_when_the_winner_is_settled():
    sure = [cand("7", lp=-0.01), cand("7", lp=-0.02), cand("7", lp=-0.01)]
    assert decide("confidence", sure[:2], expected=5, final=False) is None  # 3 could come
    d = decide("confidence", [*sure, cand("7", lp=-0.01)], expected=5, final=False)
    assert d is not None and d.winner == 0


@settings(max_examples=300, deadline=None)
@given(mixed_lists, st.sampled_from(["confidence", "majority", "weighted_vote"]),
       st.sampled_from([0.2, 0.5, 2.0]))
def test_an_early_stop_never_changes_the_answer(cands, strategy, tau):
    """Whatever arrives after an early stop, the final winner's answer is the same."""
    try:
        final = decide(strategy, cands, expected=len(cands), final=True, tau=tau)
    except NoQuorum:
        return
    assert final is not None
    for k in range(1, len(cands)):
        try:
            early = decide(strategy, cands[:k], expected=len(cands), final=False, tau=tau)
        except NoQuorum:
            continue
        if early is not None:
            if strategy == "weighted_vote":
                assert cands[early.winner].text == cands[final.winner].text
            else:
                assert early.answer_keys[early.winner] == final.answer_keys[final.winner]
            break


def test_confidence_does_not_stop_early_when_a_second_model_could_turn_it_into_counting():
    sure, unsure = cand("7", lp=0.0), cand("6", lp=-50.0)
    seen = [sure, sure, unsure, unsure, unsure]
    # by confidence 7 leads by 1.85 > one outstanding candidate; but if that one comes
    # from another model the rule becomes counting, and 6 would win 4 to 2
    assert decide("confidence", seen, expected=6, final=False) is None
    final = decide("confidence", [*seen, cand("6", lp=-1.0, model="other@2")], expected=6,
                   final=True)
    assert final is not None and final.answer_keys[final.winner] == "num:6"


def test_a_weight_by_the_start_of_a_node_id_as_zswarm_peers_shows_it():
    from zswarm.core.consensus import node_weight

    weights = {"3f2a9c0d1e4b": 2.0, "3f2a9c0d1e4b5a67": 5.0, "77aa88bb": 3.0, "77aa": 9.0}
    assert node_weight(weights, "3f2a9c0d1e4b5a67") == 5.0  # the whole id first
    assert node_weight(weights, "3f2a9c0d1e4b0000") == 2.0  # its first 12 characters
    assert node_weight(weights, "77aa88bb00000000") == 3.0  # the longest key that fits
    assert node_weight(weights, "77aa000000000000") == 1.0  # 4 characters are not a key
    cands = [cand("Paris", node="77aa88bb00000000"), cand("Lyon", node="n1"),
             cand("Lyon", node="n2")]
    d = decide("majority", cands, expected=3, final=True, weights=weights)
    assert d is not None and cands[d.winner].text == "Paris"  # 3 > 1 + 1


def test_a_look_alike_id_does_not_take_a_weight_given_by_prefix():
    from zswarm.core.consensus import resolve_weights

    weights = {"3f2a9c0d1e4b": 5.0}
    honest, lookalike = "3f2a9c0d1e4b5a67", "3f2a9c0d1e4bffff"
    assert resolve_weights(weights, {honest})[honest] == 5.0
    both = resolve_weights(weights, {honest, lookalike})
    assert honest not in both and lookalike not in both  # ambiguous: nobody gets it
    cands = [cand("Paris", node=honest), cand("Lyon", node=lookalike), cand("Lyon", node="n1")]
    d = decide("majority", cands, expected=3, final=True, weights=weights)
    assert d is not None and cands[d.winner].text == "Lyon"  # counted 1 each: 1 against 2


def test_confidence_does_not_stop_on_counts_a_first_log_probability_could_undo():
    """Three candidates without log-probabilities agree; the two to come carry them. The
    first of those lowers what the three count (to the least confident's), so three of
    five is not settled yet (found by the property above)."""
    cands = [cand("5"), cand("5"), cand("5"), cand("5", lp=-1.0), cand("6", lp=0.0)]
    final = decide("confidence", cands, expected=5, final=True, tau=0.2)
    assert final is not None and cands[final.winner].text == "6"
    for k in (3, 4):
        early = decide("confidence", cands[:k], expected=5, final=False, tau=0.2)
        assert early is None


@pytest.mark.parametrize("strategy", ["majority", "confidence"])
def test_cut_preambles_do_not_outvote_a_complete_answer(strategy):
    # held-out arithmetic-027: fifteen "To add 43 and 15, we can" cut by max_tokens and
    # one "43 + 15 is 58." - the preambles state no answer, so they join no group
    q = "What is 43 + 15?"
    cands = [cand("To add 43 and 15, we can", finish="length", lp=-0.4) for _ in range(6)]
    cands.append(cand("43 + 15 is 58.", lp=-0.7))
    d = decide(strategy, cands, expected=7, final=True, question=q)
    assert d is not None and d.winner == 6
    assert d.answer_keys[:6] == [None] * 6 and d.scores[:6] == [None] * 6
    # the share counts every valid candidate: one answer in seven is no consensus
    assert d.agreement < 0.3


@pytest.mark.parametrize("strategy", ["majority", "confidence"])
def test_a_round_of_cut_preambles_still_has_a_winner_but_no_early_stop(strategy):
    q = "What is 43 + 15?"
    cands = [cand("To add 43 and 15, we can", finish="length", lp=-0.4) for _ in range(5)]
    assert decide(strategy, cands, expected=6, final=False, question=q) is None  # 1 left
    d = decide(strategy, cands, expected=5, final=True, question=q)
    assert d is not None and d.answer_keys[d.winner] is not None
