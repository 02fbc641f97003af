"""Token sampling on a logits vector (numpy): temperature, top-k, top-p, seeded RNG, and
a grammar's mask (``allowed``: the tokens a structured answer may take next).

Also returns the token's log-probability under the model's own distribution
(temperature 1, before any mask: what the model itself thinks, so that a peer's score
can be re-derived by teacher forcing), which best_of_n and confidence use, and the most
likely tokens of that distribution (``top_logprobs``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from zswarm.core.messages import SamplingParams

FloatArray = npt.NDArray[np.float32]


def make_rng(seed: int | None, index: int) -> np.random.Generator:
    """One generator per candidate: the same seed gives the same candidates."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, index])


def sample(
    logits: FloatArray,
    params: SamplingParams,
    rng: np.random.Generator,
    *,
    banned: npt.NDArray[np.int64] | None = None,
    allowed: npt.NDArray[np.bool_] | None = None,
    counts: dict[int, int] | None = None,
) -> tuple[int, float]:
    """Pick one token id (among ``allowed`` ones, when given: at least one must be), the
    request's biases and penalties applied (``counts``: the answer's tokens so far);
    return it with its model log-probability."""
    model = logits
    if banned is not None and banned.size:
        model = logits.copy()
        model[banned] = -np.inf
    logz = log_norm(model)
    x = adjusted(model, params, counts or {})
    if allowed is not None:
        x = np.where(allowed, x, np.float32(-np.inf))
    if params.temperature <= 0.0 or params.top_k == 1:
        token = int(np.argmax(x))
        return token, _logprob(float(model[token]) - logz)
    k = params.top_k if 0 < params.top_k < x.size else x.size
    idx = np.argpartition(x, -k)[-k:] if k < x.size else np.arange(x.size)
    scaled = x[idx].astype(np.float64) / params.temperature
    order = np.argsort(-scaled)
    idx, scaled = idx[order], scaled[order]
    cdf = np.cumsum(np.exp(scaled - scaled[0]))
    cdf /= cdf[-1]
    if params.top_p < 1.0:
        keep = int(np.searchsorted(cdf, params.top_p)) + 1
        cdf = cdf[:keep] / cdf[keep - 1]
    pick = min(int(np.searchsorted(cdf, rng.random(), side="right")), cdf.size - 1)
    token = int(idx[pick])
    return token, _logprob(float(model[token]) - logz)


def adjusted(logits: FloatArray, params: SamplingParams, counts: dict[int, int]
             ) -> FloatArray:
    """The logits the answer samples from: OpenAI's logit_bias, presence_penalty and
    frequency_penalty applied (``counts``: how often each token appeared in the answer);
    ``logits`` itself when none is set (the model's own log-probabilities are read from
    it, never from these)."""
    pp, fp, bias = params.presence_penalty, params.frequency_penalty, params.logit_bias
    if not (bias or (counts and (pp or fp))):
        return logits
    x: FloatArray = np.array(logits, copy=True)
    for token, b in bias.items():
        if token < x.size:
            x[token] += b
    if pp or fp:
        for token, count in counts.items():
            x[token] -= pp + fp * count
    return x


def log_norm(x: FloatArray) -> float:
    """log(sum(exp(x))), computed stably."""
    top = float(x.max())
    return top + float(np.log(np.exp(x - top).sum(dtype=np.float64)))


def top_logprobs(logits: FloatArray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens of the model's distribution, most likely first."""
    k = min(k, logits.size)
    idx = np.argpartition(logits, -k)[-k:]
    idx = idx[np.argsort(-logits[idx])]
    logz = log_norm(logits)
    return [(int(t), _logprob(float(logits[t]) - logz)) for t in idx]


def _logprob(value: float) -> float:
    """Within the wire's range for a log-probability (finite, at most 0)."""
    return max(-1e9, min(0.0, value)) if value == value else -1e9
