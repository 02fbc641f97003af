"""The scoring rule of bench/consensus_quality.py tolerates phrasing, not wrong answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from quality import correct, load_questions  # noqa: E402

CAPITAL = {"type": "text", "gold": ["paris"]}
NUMBER = {"type": "number", "gold": ["12"], "question": "What is 3 x 4?"}
YESNO = {"type": "yesno", "gold": ["no"], "question": "Is 7 an even number?"}
CHOICE = {"type": "choice", "gold": ["b", "apple", "!carrot", "!potato"]}


@pytest.mark.parametrize(("question", "answer", "right"), [
    (CAPITAL, "Paris.", True), (CAPITAL, "The capital is Paris", True),
    (CAPITAL, "paris\nLyon is bigger", True), (CAPITAL, "Lyon", False),
    (CAPITAL, "Parisian", False), (CAPITAL, "Lyon\nParis", False),
    (NUMBER, "12", True), (NUMBER, "12.0", True), (NUMBER, "Twelve.", True),
    (NUMBER, "The answer is 12", True), (NUMBER, "120", False), (NUMBER, "13 or 12", False),
    (NUMBER, "3 x 4 = 12\n\nThis is", True), (NUMBER, "3 x 4 = 7", False),
    (NUMBER, "3 times 4 is 12", True), (NUMBER, "3 x 4 =", False),
    (YESNO, "No.", True), (YESNO, "No, it is not", True), (YESNO, "Yes", False),
    (YESNO, "Nothing", False), (YESNO, "7 is not an even number.", True),
    (YESNO, "7 is an even number.", False),  # restating the question says yes
    (YESNO, "A number is a number.", False),  # neither
    (CHOICE, "b", True), (CHOICE, "(b) apple", True), (CHOICE, "B) apple", True),
    (CHOICE, "apple", True), (CHOICE, "a", False), (CHOICE, "apple or carrot", False),
    (CHOICE, 'The correct answer is "b"', True), (CHOICE, "The answer is (a) carrot", False),
    (CHOICE, "(b) is right", True), (CHOICE, "b. apple", True),
    # an article is not option a (the scorer read "A planet." as "(a) Mars" until 2026-12-08)
    (CHOICE | {"gold": ["a", "apple", "!carrot"]}, "A fruit.", False),
    (CHOICE | {"gold": ["a", "apple", "!carrot"]}, "An apple.", True),
])
def test_scoring(question, answer, right):
    assert correct(question, answer) is right


def test_the_question_set_is_large_and_every_gold_answer_scores_right():
    questions = load_questions()
    assert len(questions) >= 300 and len({q["id"] for q in questions}) == len(questions)
    assert {q["kind"] for q in questions} >= {"arithmetic", "units", "capitals", "facts",
                                              "yesno", "choice"}
    for q in questions:
        assert correct(q, q["gold"][0].capitalize() + "."), q


def test_each_kind_of_miss_is_told_from_the_others():
    from stopping_sim import miss

    from zswarm.core.messages import Candidate

    def c(text: str, finish: str = "stop", logprob: float = -1.0) -> Candidate:
        return Candidate(text=text, finish_reason=finish, tokens=3, mean_logprob=logprob)

    yes = {"type": "yesno", "gold": ["yes"], "question": "Is 8 an even number?"}
    assert miss(NUMBER, [c("12"), c("12"), c("13")], "majority") is None  # right
    assert miss(NUMBER, [c("13"), c("14")], "majority") is None  # nobody right: oracle too
    assert miss(NUMBER, [c("12"), c("13"), c("13"), c("13")], "majority") == "right minority"
    # the same right answer under two keys ("I think Paris" keys as "i think paris"):
    # each loses, together they would win
    capital = {"type": "text", "gold": ["paris"], "question": "What is the capital of France?"}
    assert miss(capital, [c("Paris."), c("Paris."), c("I think Paris"),
                          c("I think Paris"), c("Lyon"), c("Lyon"),
                          c("Lyon")], "majority") == "split"
    assert miss(NUMBER, [c("12"), c("13, since", "length"), c("13, since", "length")],
                "majority") == "truncated winner"
    assert miss(yes, [c("Yes."), c("No."), c("No.")], "majority") == "yes/no prior"
    # as many for the right key as for the winner's, which was surer
    assert miss(NUMBER, [c("12", logprob=-2.0), c("13", logprob=-0.1)],
                "confidence") == "tie"
