"""A model's lean on lettered questions, divided out: learned from its own answers, bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zswarm.core import calibration
from zswarm.core.calibration import MAX_FACTOR, YES_NO, Priors, form
from zswarm.core.consensus import decide
from zswarm.core.messages import Candidate

YES_NO_Q = "Is Paris in France?"
LETTER_Q = "Which of these is a fruit? (a) carrot (b) apple (c) potato. Answer with the letter."
OTHER_Q = "Which of these is cold? (a) fire (b) ice (c) sun. Answer with the letter."
LETTERS = ("option:a", "option:b", "option:c")
_keys = st.lists(st.sampled_from([*LETTERS, "text:maybe", None]), max_size=200)


def test_forms():
    assert form(LETTER_Q) == LETTERS
    assert form(YES_NO_Q) is None  # measured on the tuning half and not kept
    assert form(YES_NO_Q, yes_no=True) == YES_NO
    assert form("What is the capital of France?") is None
    assert form("Is it Paris or Lyon?", yes_no=True) is None  # asks to choose
    assert Priors().factors("m", "What is 2 + 2?") == {}
    assert Priors().factors("m", YES_NO_Q) == {}
    assert Priors(yes_no=True).factors("m", YES_NO_Q) == {"yesno:yes": 1.0, "yesno:no": 1.0}


def test_an_unseen_model_is_uniform_and_a_lean_is_divided_out():
    priors = Priors()
    assert priors.factors("m", LETTER_Q) == dict.fromkeys(LETTERS, 1.0)
    for _ in range(10):  # as on the tuning half: "(c)" half the time, "(a)" least
        priors.observe("m", OTHER_Q, ["option:c"] * 8 + ["option:b"] * 5 + ["option:a"] * 3)
    f = priors.factors("m", LETTER_Q)
    assert f["option:a"] > 1.5 > f["option:b"] > 1 > f["option:c"] > 0.6
    assert priors.factors("other", LETTER_Q) == dict.fromkeys(LETTERS, 1.0)
    # two letters are another form: learned apart
    assert priors.factors("m", "Hot or cold? (a) ice (b) fire") == {"option:a": 1.0,
                                                                    "option:b": 1.0}


@given(st.lists(_keys, max_size=30))
def test_factors_stay_within_their_cap_and_counts_within_their_bound(rounds):
    priors = Priors()
    for keys in rounds:
        priors.observe("m", LETTER_Q, keys)
    for f in priors.factors("m", LETTER_Q).values():
        assert 1 / MAX_FACTOR <= f <= MAX_FACTOR
    share = priors.prior("m", LETTERS)
    assert abs(sum(share.values()) - 1) < 1e-9


def test_driving_past_the_bounds_keeps_them():
    priors = Priors(max_priors=3)
    for i in range(10):  # a model id per ask: only the last three are kept
        priors.observe(f"m{i}", LETTER_Q, ["option:c"])
    assert len(priors.snapshot()) == 3
    for _ in range(1000):  # counts are halved: they follow recent answers, bounded
        priors.observe("m9", LETTER_Q, ["option:c"] * 16)
    counts = priors._counts[("m9", LETTERS)]
    assert sum(counts.values()) <= calibration.MAX_OBSERVED
    assert priors.factors("m9", LETTER_Q)["option:a"] == MAX_FACTOR


def c(text: str, lp: float = -0.5, model: str = "m") -> Candidate:
    return Candidate(text=text, finish_reason="stop", mean_logprob=lp, model_id=model)


def test_a_calibrated_minority_of_yes_outweighs_a_model_that_says_no_to_everything():
    cands = [c("No, Paris is not in France.")] * 5 + [c("Yes, Paris is in France.")] * 2
    plain = decide("confidence", cands, expected=7, final=True, question=YES_NO_Q)
    factors = {"yesno:yes": 3.0, "yesno:no": 0.6}
    fixed = decide("confidence", cands, expected=7, final=True, question=YES_NO_Q,
                   calibration=factors)
    assert plain is not None and plain.answer_keys[plain.winner] == "yesno:no"
    assert fixed is not None and fixed.answer_keys[fixed.winner] == "yesno:yes"
    assert "calibrated" in fixed.note
    # two models: counted like majority, there is no one model's lean to divide out
    mixed = [*cands[:5], c("Yes.", model="m2"), c("Yes.", model="m2")]
    both = decide("confidence", mixed, expected=7, final=True, question=YES_NO_Q,
                  calibration=factors)
    assert both is not None and both.answer_keys[both.winner] == "yesno:no"


@given(st.lists(st.sampled_from(["Yes.", "No.", "No, it is not."]), min_size=1, max_size=12),
       st.lists(st.sampled_from(["Yes.", "No."]), min_size=1, max_size=8),
       st.floats(1 / MAX_FACTOR, MAX_FACTOR), st.floats(1 / MAX_FACTOR, MAX_FACTOR))
def test_an_early_stop_under_calibration_never_changes(first, later, yes, no):
    factors = {"yesno:yes": yes, "yesno:no": no}
    total = len(first) + len(later)
    cands = [c(t) for t in first]
    early = decide("confidence", cands, expected=total, final=False, question=YES_NO_Q,
                   calibration=factors)
    if early is None:
        return
    full = decide("confidence", cands + [c(t, lp=0.0) for t in later], expected=total,
                  final=True, question=YES_NO_Q, calibration=factors)
    assert full is not None and full.answer_keys[full.winner] == early.answer_keys[early.winner]
