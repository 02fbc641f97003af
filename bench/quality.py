"""Scoring answers of bench/consensus_quality.py against bench/data/questions.jsonl.

Tolerant of the model's phrasing: only the first line counts; "Paris.", "The capital
is Paris" and "paris" are right for Paris; "12", "12.0", "twelve", "The answer is 12"
and "3 x 4 = 12" for 12 (a number after "=" wins, and numbers of the question itself
are skipped); "Yes, it is" or "10 is indeed an even number" for yes (_polarity);
"(b)", "B) apple", 'The answer is "b"' or "apple" for choice b (but not when a wrong
option is named too; and "A fruit." is the article, not option a).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

QUESTIONS = Path(__file__).resolve().parent / "data" / "questions.jsonl"

_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
               "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000})


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _first_line(text: str) -> str:
    line = next((s for s in text.strip().splitlines() if s.strip()), "")
    return " ".join(line.lower().replace("’", "'").split())[:200]


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _canonical(number: str) -> str:
    value = float(number.replace(",", ""))
    return str(int(value)) if value == int(value) else str(value)


def _number(text: str, question: str) -> str | None:
    """The number the text answers with: after the last "=", else the first one that is
    not one of the question's own (the model restates "3 x 4 = 12"), else the first."""
    if "=" in text:
        after = _NUMBER.search(text.rsplit("=", 1)[1])
        return _canonical(after.group()) if after else None
    asked = {_canonical(m) for m in _NUMBER.findall(question)}
    found = [_canonical(m) for m in _NUMBER.findall(text)]
    found += [str(_WORDS[w]) for w in re.findall(r"[a-z]+", text) if w in _WORDS]
    fresh = [n for n in found if n not in asked]
    return (fresh or found or [None])[0]


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", text) is not None


def _polarity(text: str, question: str) -> str | None:
    """What a reader takes for yes or no: the first "yes"/"no" of the first sentence;
    else a negation is no; else a sentence restating most of the question ("10 is indeed
    an even number" to "Is 10 an even number?") is yes; else (a digression) neither."""
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    found = re.search(r"\b(yes|no)\b", sentence)
    if found:
        return found.group(1)
    if re.search(r"\b(not|never|cannot)\b|n't\b", sentence):
        return "no"
    asked = set(re.findall(r"[a-z0-9]+", question.lower())[1:]) - {"a", "an", "the"}
    said = set(re.findall(r"[a-z0-9]+", sentence))
    return "yes" if asked and 2 * len(asked & said) >= len(asked) else None


def correct(question: dict[str, Any], answer: str) -> bool:
    text = _first_line(answer)
    gold: list[str] = question["gold"]
    kind = question["type"]
    if kind == "number":
        return _number(text, question.get("question", "")) == gold[0]
    if kind == "yesno":
        return _polarity(text, question.get("question", "")) == gold[0]
    if kind == "choice":
        # "(a) ...", "a) ...", "a." or "a" alone; but in "A planet." the "a" is an article
        letter = (re.match(r"^(?:\(([a-c])\)|([a-c])(?:[.,:)]|$))", text)
                  or re.search(r"answer is:? ?[\"'(]?([a-c])\b", text)
                  or re.search(r"[\"'(]([a-c])[\"')]", text))
        if letter:
            return next(g for g in letter.groups() if g) == gold[0]
        wrong = [g[1:] for g in gold if g.startswith("!")]
        return _has(text, gold[1]) and not any(_has(text, w) for w in wrong)
    return any(_has(text, g) for g in gold)


def split(questions: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    """A fixed half of the set: within each kind, questions 0, 2, 4, ... are ``tune`` (the
    half the rules and defaults were chosen on) and 1, 3, 5, ... are ``held`` (the half
    they are reported on). Never reshuffled: a figure on ``held`` is out of sample."""
    if part not in ("tune", "held"):
        raise ValueError("part is tune or held")
    seen: dict[str, int] = {}
    out = []
    for q in questions:
        index = seen[q["kind"]] = seen.get(q["kind"], -1) + 1
        if (index % 2 == 1) == (part == "held"):
            out.append(q)
    return out
