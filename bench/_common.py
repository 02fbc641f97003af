"""Shared helpers for bench scripts: timing, medians, result files."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of xs."""
    ordered = sorted(xs)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[k])


def write_results(name: str, figures: dict[str, Any], table: list[tuple[str, str]]) -> None:
    """bench/results/NAME.json (full figures) and NAME.md (a short table)."""
    RESULTS.mkdir(exist_ok=True)
    meta = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.machine(),
            "python": platform.python_version()}
    (RESULTS / f"{name}.json").write_text(json.dumps({**figures, "meta": meta}, indent=2) + "\n")
    lines = [f"# {name}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def bench_config() -> Any:
    """One worker on loopback, state in /tmp: the node setup every bench measures."""
    from zswarm.config import parse_config

    return parse_config({"node": {"workers": 1, "bind": "127.0.0.1",
                                  "state_dir": "/tmp/zswarm-bench-state"}})


def story_request(*, n: int = 1, tokens: int, **params: Any) -> Any:
    """A request that generates exactly ``tokens`` tokens per candidate (EOS ignored)."""
    from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams

    return GenerateRequest(
        messages=(ChatMessage(role="user", content="Write a story about a lighthouse."),),
        params=SamplingParams(max_tokens=tokens, ignore_eos=True, **params), n=n)
