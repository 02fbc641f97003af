"""Token sampling on a logits vector (numpy): temperature, top-k, top-p, seeded RNG.

Also returns the token's log-probability under the model's own distribution
(temperature 1), which best_of_n uses as its score.
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
) -> tuple[int, float]:
    """Pick one token id; return it with its model log-probability."""
    x = logits
    if banned is not None and banned.size:
        x = logits.copy()
        x[banned] = -np.inf
    top = float(x.max())
    logz = top + float(np.log(np.exp(x - top).sum(dtype=np.float64)))
    if params.temperature <= 0.0 or params.top_k == 1:
        token = int(np.argmax(x))
        return token, _logprob(float(x[token]) - logz)
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
    return token, _logprob(float(x[token]) - logz)


def _logprob(value: float) -> float:
    """Within the wire's range for a log-probability (finite, at most 0)."""
    return max(-1e9, min(0.0, value)) if value == value else -1e9
