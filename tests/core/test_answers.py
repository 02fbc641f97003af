import pytest

from zswarm.core.answers import answer_key


@pytest.mark.parametrize(("a", "b"), [
    ("Paris", "Paris."), ("paris", "The capital of France is Paris."), ("five", "5"),
    ("2 + 3 = 5", "The answer is 5."), ("5.0", "5"), ("forty-two", "7 * 6 = 42."),
    ("(B)", "Answer: b"), ("To solve this, add 2 to 3. 2 + 3 equals 5.", "5"),
])
def test_same_answers_agree(a, b):
    assert answer_key(a) == answer_key(b)


@pytest.mark.parametrize(("a", "b"), [("Paris", "Berlin"), ("5", "6"), ("(A)", "(B)"),
                                      ("red", "blue")])
def test_different_answers_differ(a, b):
    assert answer_key(a) != answer_key(b)


def test_only_the_start_of_a_long_candidate_is_read():
    from zswarm.core.answers import ANSWER_CHARS

    assert answer_key("The answer is 5. " + "blah " * ANSWER_CHARS + "so it is 7.") == "num:5"
    assert answer_key("x" * ANSWER_CHARS + " = 7") == answer_key("x" * ANSWER_CHARS)


def test_the_question_restated_is_not_the_answer():
    q = "What is 5 x 5?"
    assert answer_key("To calculate 5 x 5, we simply add", q) != "num:5"
    assert answer_key("5 x 5 equals 25.", q) == answer_key("The answer is 25", q) == "num:25"
    assert answer_key("5 x 1 = 5", "What is 5 x 1?") == "num:5"  # stated after "=": kept
    cat = "What do you call a baby cat?"
    assert answer_key("A baby cat is called a kitten.", cat) == answer_key("Kitten!", cat)
    assert answer_key("A baby cat!", cat) == "text:baby cat"  # nothing else to go by


@pytest.mark.parametrize(("answer", "key"), [
    ("Yes.", "yesno:yes"), ("yes, because it is", "yesno:yes"), ("YES", "yesno:yes"),
    ("10 is indeed an even number.", "yesno:yes"),  # restates the question: a yes
    ("No.", "yesno:no"), ("No, 10 is not even.", "yesno:no"), ("It isn't.", "yesno:no"),
    ('The answer is "no".', "yesno:no"), ("10 cannot be odd", "yesno:no"),
    ("Is 10 an even number?", "num:10"),  # the question echoed: not an answer
    ("I like pie", "text:i like pie"),  # a digression: no polarity
])
def test_a_yes_no_question_is_answered_yes_or_no(answer, key):
    assert answer_key(answer, "Is 10 an even number?") == key


def test_yes_and_its_phrasings_form_one_group_that_outvotes_a_united_no():
    from zswarm.core.consensus import decide
    from zswarm.core.messages import Candidate

    q = "Is the sun a star?"
    texts = ["Yes.", "Yes, it is.", "The sun is indeed a star.", "No, it is not.", "No."]
    cands = [Candidate(text=t, finish_reason="stop") for t in texts]
    d = decide("majority", cands, expected=5, final=True, question=q)
    assert d is not None and d.answer_keys[d.winner] == "yesno:yes"


@pytest.mark.parametrize("question", [
    "What is the capital of France?", "Is it Paris or Lyon?", "Name a colour.",
])
def test_other_questions_keep_their_keys(question):
    assert not answer_key("Yes, Paris is", question).startswith("yesno:")


CHOICE = "Which of these is a fruit? (a) carrot (b) apple (c) potato. Answer with the letter."


@pytest.mark.parametrize(("answer", "key"), [
    ("b) apple", "option:b"), ("An apple.", "option:b"), ("Potato", "option:c"),
    ("The answer is b.", "option:b"), ("The correct answer is C. Snake.", "option:c"),
    ("The answer is a carrot.", "option:a"),  # named, not lettered: the "a" is an article
    ("The answer is a pillow.", "text:pillow"),  # neither a letter nor a listed option
    ("apple or carrot", None),  # two options named: not one of them
])
def test_an_option_is_its_letter_or_its_listed_text(answer, key):
    got = answer_key(answer, CHOICE)
    assert got == key if key else not got.startswith("option:")
