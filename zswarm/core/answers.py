"""Normalising a free-text answer to a short key, so that equal answers compare equal.

Used by the ``majority`` strategy (self-consistency). The rules, in order:

0. To a yes/no question (one that opens with "is", "are", "do", "can", ... and offers no
   "or"), an answer
   is ``yes`` or ``no``: the first "yes" or "no" of its first sentence; else ``no`` if
   that sentence negates ("not", "n't", "cannot", "never"); else ``yes`` if it restates
   at least half of the question's words ("10 is indeed an even number" to "Is 10 an
   even number?"). Anything else (an echo of the question, a digression) falls through
   to the rules below. Without this rule "Yes.", "Yes, it is." and "The sun is a star"
   made three groups, and a split "yes" lost to a united "no".
1. An option letter ("(B)", "B)", "Answer: b") becomes ``option:b``; so does an answer
   naming exactly one of the options the question lists ("An apple." to "(a) carrot
   (b) apple (c) potato"), or quoting or bracketing exactly one of its letters ('The
   correct answer is "b".', "The fruit is (b).").
2. Otherwise a number (digits or an English number word up to ninety-nine) becomes
   ``num:<value>``: the last number stated after "=", "is", "equals" or "answer" in
   the first sentence that has one (not one that opens an expression: "= 25 + 10"
   states no result); failing that, the last number of the first sentence with a
   number. "5", "5.0", "five", "2 + 3 = 5" and "The answer is 5. Adding 2 and 3 ..."
   agree.
3. Otherwise a short phrase: the part after the first "is"/"are"/"=" of the first
   sentence up to its clause's end (a comma), lower-cased, with articles and
   punctuation removed: "Paris", "Paris.", "paris", "The capital of France is Paris."
   and "The capital of France is Paris, a city of ..." all become ``text:paris``; when
   that part only restates the question ("Paris is the capital of France."), the part
   before the copula.

A candidate cut by max_tokens is read up to its last complete clause (``cut_answer_key``):
its last words may be cut mid-word or mid-number ("approximately 1" of "100"), and a
cut preamble ("To add 43 and 15, we can") states no answer at all - its key is None,
and the vote counts it for no answer (core/consensus.py).

Given the question (``answer_key(text, question)``), its own numbers and words
restated are not taken for the answer: for "What is 5 x 5?", "To calculate 5 x 5 ..."
states no number, and for "What do you call a baby cat?", "A baby cat is called a
kitten" becomes ``text:kitten`` (unless nothing else is left).

Only the first ANSWER_CHARS characters are read (a final answer comes first; a peer's
200,000-character candidate must not cost seconds), and keys are cached.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: the part of a candidate that answer_key reads
ANSWER_CHARS = 2000

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUES: dict[str, int] = {w: i for i, w in enumerate(_UNITS)}
_WORD_VALUES.update({w: 20 + 10 * i for i, w in enumerate(_TENS)})
for _t, _tv in list(_WORD_VALUES.items())[20:]:
    for _u in range(1, 10):
        _WORD_VALUES[f"{_t}-{_UNITS[_u]}"] = _tv + _u
        _WORD_VALUES[f"{_t} {_UNITS[_u]}"] = _tv + _u

_NUMBER_WORDS = "|".join(sorted((re.escape(w) for w in _WORD_VALUES), key=len, reverse=True))
_NUMBER_RE = re.compile(rf"-?\d+(?:[.,]\d+)*|\b(?:{_NUMBER_WORDS})\b", re.IGNORECASE)
#: a number followed by an operator and another number is an expression ("= 25 + 10"),
#: not a result
_OPERAND = r"(?!\s*(?:[-+*/×x]|plus|minus|times)\s*\d)"
_STATED_RE = re.compile(
    rf"(?:=|\bis\b|\bequals\b|\banswer\b:?)\W*?"
    rf"(-?\d+(?:[.,]\d+)*(?![\d.,]*\d)|\b(?:{_NUMBER_WORDS})\b){_OPERAND}",
    re.IGNORECASE,
)
_OPTION_RE = re.compile(
    # "(b)", "b)", "B." or "b" alone; "the answer is (b)" or "... is b." - but in "the
    # answer is a pillow" the "a" is an article
    r"^\s*\(?([a-e])\)?\s*(?:[).:]|$)|\b(?:answer|option)\s*(?:is)?\s*:?\s*"
    r"(?:\(([a-e])\)|([a-e])(?=[).,:;!?]|\s*$))",
    re.IGNORECASE,
)
#: a letter quoted or in parentheses ('the answer is "b"', "The smallest is (b).")
_MARKED_LETTER_RE = re.compile(r"""["'(]([a-e])(?:\)|["'.,]|\s*$)""", re.IGNORECASE)
_YES_NO_QUESTION_RE = re.compile(
    r"^(?:is|are|am|was|were|do|does|did|can|could|will|would|should|shall|has|have|had|"
    r"may|might|must)\b", re.IGNORECASE)
_YES_NO_RE = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_NEGATION_RE = re.compile(r"\b(?:not|never|cannot)\b|n't\b", re.IGNORECASE)
_COPULA_RE = re.compile(r"\b(?:is|are|was|were)\b|=", re.IGNORECASE)
_ARTICLES = {"the", "a", "an"}


def _number_key(token: str) -> str:
    lowered = token.lower()
    if lowered in _WORD_VALUES:
        return f"num:{_WORD_VALUES[lowered]}"
    cleaned = lowered.replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return f"num:{cleaned}"
    return f"num:{int(value)}" if value.is_integer() else f"num:{value:g}"


def _first_sentence(text: str) -> str:
    parts = re.split(r"(?<=[.!?])\s+|\n", text.strip(), maxsplit=1)
    return parts[0] if parts else ""


def answer_key(text: str, question: str = "") -> str:
    """The normalised key of an answer (see the module docstring for the rules)."""
    return _answer_key(text[:ANSWER_CHARS], question[-ANSWER_CHARS:])


@lru_cache(maxsize=256)
def _question_terms(question: str) -> tuple[frozenset[str], frozenset[str]]:
    """The number keys and the lower-cased words of the question."""
    numbers = frozenset(_number_key(n) for n in _NUMBER_RE.findall(question))
    return numbers, frozenset(_stem(w) for w in re.findall(r"[^\W_]+", question.lower()))


@lru_cache(maxsize=256)
def _yes_no_terms(question: str) -> frozenset[str] | None:
    """The words of a yes/no question that an answer restating it repeats (its verb and
    articles aside), or None when the question's last sentence is not a yes/no one."""
    last = [s for s in re.split(r"(?<=[.!?:])\s+|\n+", question.strip()) if s.strip()]
    if not last or not _YES_NO_QUESTION_RE.match(last[-1]) \
            or re.search(r"\bor\b", last[-1], re.IGNORECASE):
        return None  # "Is it Paris or Lyon?" asks to choose
    words = [_stem(w) for w in re.findall(r"[^\W_]+", last[-1].lower())[1:]]
    return frozenset(w for w in words if w not in _ARTICLES)


_LISTED_RE = re.compile(r"\(([a-e])\)\s*([^()]+?)(?=\s*\([a-e]\)|[.?!]|$)", re.IGNORECASE)


@lru_cache(maxsize=256)
def _options(question: str) -> tuple[tuple[str, str], ...]:
    """The options a question lists as "(a) carrot (b) apple": (letter, lower-cased text)."""
    return tuple((m.group(1).lower(), " ".join(m.group(2).lower().split()))
                 for m in _LISTED_RE.finditer(question))


def yes_no_question(question: str) -> bool:
    """Whether rule 0 reads the answers to ``question`` as yes or no."""
    return _yes_no_terms(question[-ANSWER_CHARS:]) is not None


def listed_letters(question: str) -> tuple[str, ...]:
    """The option letters ``question`` lists ("(a) carrot (b) apple" lists a and b)."""
    return tuple(dict.fromkeys(letter for letter, _ in _options(question[-ANSWER_CHARS:])))


def _named_option(text: str, question: str) -> str | None:
    """The letter of the one listed option the answer's first sentence names ("An apple."
    for "(b) apple"), or None (no options, none named, or several)."""
    options = _options(question)
    if len(options) < 2:
        return None
    sentence = _first_sentence(text).lower()
    named = {letter for letter, option in options
             if option and re.search(rf"(?<!\w){re.escape(option)}(?!\w)", sentence)}
    return named.pop() if len(named) == 1 else None


def _yes_no(text: str, question: str) -> str | None:
    """``yes``/``no`` for an answer to a yes/no question (rule 0), else None."""
    terms = _yes_no_terms(question)
    if terms is None:
        return None
    sentence = _first_sentence(text)
    word = _YES_NO_RE.search(sentence)
    if word:
        return word.group(1).lower()
    if sentence.rstrip().endswith("?"):
        return None  # the question echoed back
    if _NEGATION_RE.search(sentence):
        return "no"
    said = {_stem(w) for w in re.findall(r"[^\W_]+", sentence.lower())}
    if terms and 2 * len(terms & said) >= len(terms):
        return "yes"
    return None


def _stem(word: str) -> str:
    """A crude stem, so "called" matches the question's "call"."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)]
    return word


@lru_cache(maxsize=4096)
def _answer_key(text: str, question: str) -> str:
    stripped = text.strip()
    polarity = _yes_no(stripped, question)
    if polarity is not None:
        return f"yesno:{polarity}"
    asked, asked_words = _question_terms(question)
    option = _OPTION_RE.search(stripped)
    if option:
        return f"option:{next(g for g in option.groups() if g).lower()}"
    named = _named_option(stripped, question) or _marked_letter(stripped, question)
    if named is not None:
        return f"option:{named}"
    sentences = [p for p in re.split(r"(?<=[.!?])\s+|\n+", stripped) if p.strip()]
    for sentence in sentences:
        stated = _STATED_RE.findall(sentence)
        if stated:
            return _number_key(stated[-1])
    for sentence in sentences:  # a number of the question, restated, is not an answer
        numbers = [k for k in map(_number_key, _NUMBER_RE.findall(sentence)) if k not in asked]
        if numbers:
            return numbers[-1]
    return "text:" + " ".join(_phrase(_first_sentence(stripped), asked_words))[:200]


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def _phrase(sentence: str, asked_words: frozenset[str]) -> list[str]:
    """Rule 3's words: what the sentence's first copula says, up to the clause's end ("The
    capital of Turkey is Ankara, which is ..." says "ankara"), without the question's
    words; when it says only the question's words, what stands before it ("Paris is the
    capital of France" says "paris"); with neither, the whole sentence."""
    pieces = _COPULA_RE.split(sentence, maxsplit=1)
    before, after = (pieces[0], pieces[1]) if len(pieces) > 1 else ("", sentence)
    after = re.split(r"[,;]|\s[-–—]\s", after.lstrip(" :\"'"), maxsplit=1)[0]

    def fresh(text: str) -> list[str]:
        return [w for w in _words(text) if _stem(w) not in asked_words and w not in _ARTICLES]

    words = fresh(after) or fresh(before) or _words(after) or _words(sentence)
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return words


def _marked_letter(text: str, question: str) -> str | None:
    """The one listed option letter the first sentence quotes or puts in parentheses
    ('The correct answer is "b".', "The smallest is (b)."), or None."""
    listed = set(listed_letters(question))
    if len(listed) < 2:
        return None
    marked = {m.lower() for m in _MARKED_LETTER_RE.findall(_first_sentence(text))} & listed
    return marked.pop() if len(marked) == 1 else None


#: where a candidate cut by max_tokens may have been cut mid-word or mid-number: after
#: its last clause boundary
_BOUNDARY_RE = re.compile(r"[.!?;:,](?=\s|$)|\n")
#: what states an answer in a phrase (rule 3): a copula or "answer"
_STATES_RE = re.compile(r"\b(?:is|are|was|were|equals|answer)\b|=", re.IGNORECASE)


def complete_part(text: str) -> str:
    """What a candidate cut by max_tokens said in full: its text up to the last clause
    boundary (".", "!", "?", ";", ":" or "," before a space, or a line break); "" when
    there is none. "The boiling point is approximately 1" (of "100") says nothing in
    full; "8 x 3 equals 24, which is the" says "8 x 3 equals 24,"."""
    ends = [m.end() for m in _BOUNDARY_RE.finditer(text[:ANSWER_CHARS])]
    return text[:ends[-1]] if ends else ""


def cut_answer_key(text: str, question: str = "") -> str | None:
    """The key of a candidate cut by max_tokens, read from its complete part only, or
    None when that part states no answer: nothing complete, or only a phrase without a
    copula ("To add 43 and 15," - a preamble, not an answer)."""
    return _cut_answer_key(text[:ANSWER_CHARS], question[-ANSWER_CHARS:])


@lru_cache(maxsize=4096)  # decide() runs after every candidate: each is read once
def _cut_answer_key(text: str, question: str) -> str | None:
    done = complete_part(text)
    if not done.strip():
        return None
    key = answer_key(done, question)
    if key.startswith("text:") and (key == "text:" or not _STATES_RE.search(done)):
        return None
    return key
