"""Answer priors: how often a model gives each answer of a closed form, divided out. Pure.

A small model leans: SmolLM2-135M answers "no" to most yes/no questions (205 of 267
keyed candidates on the tuning half of bench/data/questions.jsonl, whose answers are
half yes) and "(c)" to most lettered ones (97 of 190). A vote over its samples
amplifies the lean. Calibration (Zhao et al. 2021; Batch Calibration, Zhou et al.
2023) divides each answer's confidence by the model's prior for it.

The prior is learned from what the model answers (``Priors.observe``), never from
what is right, so it needs no labels: per model and form (yes/no; options a-b, a-c,
...), a count per key of the candidates this node's own workers made - a peer's
candidate never moves it (a peer could send a thousand "(a)" to shift it) - smoothed
by PSEUDO_COUNT per key, so an unseen model starts uniform and a few questions move
it little. ``factors`` is (1/K) / prior(key) for each of the form's K keys, within
[1/MAX_FACTOR, MAX_FACTOR]; a key outside the form (a free-text answer) keeps 1.

Only lettered questions are calibrated; the choice was made on the tuning half of
bench/data/questions.jsonl (confidence, n = 16, the candidates of 2026-12-08, the prior
learned over the questions in order as a node would): there lettered questions went
0.15 -> 0.30 and yes/no 0.55 -> 0.45 (two questions of twenty lost), so yes/no is left
out unless asked (``Priors(yes_no=True)``, for the bench). On the held-out half:
lettered 0.20 -> 0.25, yes/no 0.50 -> 0.45 (an earlier draw of held-out candidates:
yes/no 0.50 -> 0.65). The lettered gain is partly the set's: 29 of its 40 lettered
questions answer (a), and the model favours (c).

Measured instead and not kept: the prior of content-free prompts ("Is N/A?", options
"N/A", Zhao et al.'s method) is mild for this model (no 0.55, c 0.39) and moved the
vote by at most a question either way on each half.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from zswarm.core.answers import listed_letters, yes_no_question

#: the pseudo-count per key: the weight of the uniform prior an unseen model starts with
PSEUDO_COUNT = 16.0
#: counts of a form are halved past this many: the prior follows the recent answers, and
#: a form's counters stay bounded
MAX_OBSERVED = 2048.0
#: no answer counts more than this many times, or less than its inverse, what it would
MAX_FACTOR = 4.0
#: models (and forms) remembered; the least recently used is forgotten past this
MAX_PRIORS = 64

YES_NO = ("yesno:yes", "yesno:no")


def form(question: str, *, yes_no: bool = False) -> tuple[str, ...] | None:
    """The keys a calibrated question's answers fall into: one of the letters it lists;
    with ``yes_no``, also yes or no (measured and not kept: see the module docstring);
    None for any other question."""
    if yes_no and yes_no_question(question):
        return YES_NO
    letters = listed_letters(question)
    return tuple(f"option:{letter}" for letter in letters) if len(letters) >= 2 else None


class Priors:
    """Per (model, form): how many of the model's own candidates gave each key."""

    def __init__(self, *, max_priors: int = MAX_PRIORS, yes_no: bool = False) -> None:
        self._counts: OrderedDict[tuple[str, tuple[str, ...]], dict[str, float]] = \
            OrderedDict()
        self._max = max_priors
        self._yes_no = yes_no

    def observe(self, model_id: str, question: str, keys: Iterable[str | None]) -> None:
        """Count the keys of the model's own candidates to ``question`` (those of another
        form, or None, are not counted)."""
        shape = form(question, yes_no=self._yes_no)
        if shape is None:
            return
        counts = self._counts.get((model_id, shape))
        if counts is None:
            counts = self._counts[(model_id, shape)] = dict.fromkeys(shape, 0.0)
            while len(self._counts) > self._max:
                self._counts.popitem(last=False)
        self._counts.move_to_end((model_id, shape))
        for key in keys:
            if key in counts:
                counts[key] += 1.0
        if sum(counts.values()) > MAX_OBSERVED:
            for key in counts:
                counts[key] /= 2.0

    def prior(self, model_id: str, shape: tuple[str, ...]) -> dict[str, float]:
        """The smoothed share of each key of ``shape`` for the model."""
        counts = self._counts.get((model_id, shape), {})
        total = sum(counts.values()) + PSEUDO_COUNT * len(shape)
        return {key: (counts.get(key, 0.0) + PSEUDO_COUNT) / total for key in shape}

    def factors(self, model_id: str, question: str) -> dict[str, float]:
        """What each key's confidence is multiplied by for this model and question (empty
        for an open question)."""
        shape = form(question, yes_no=self._yes_no)
        if shape is None:
            return {}
        uniform = 1.0 / len(shape)
        return {key: min(MAX_FACTOR, max(1.0 / MAX_FACTOR, uniform / share))
                for key, share in self.prior(model_id, shape).items()}

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every prior, for the status page: ``model form`` -> key -> share."""
        return {f"{model} {'/'.join(k.split(':', 1)[1] for k in shape)}":
                {k: round(v, 3) for k, v in self.prior(model, shape).items()}
                for model, shape in self._counts}


def calibrated(factors: Mapping[str, float], key: str | None) -> float:
    """The factor of one candidate's key (1 for a key the form does not have)."""
    return factors.get(key, 1.0) if key is not None else 1.0
