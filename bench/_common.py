"""Shared helpers for bench scripts: timing, medians, result files.

Benches run as ``python bench/NAME.py``: Python puts bench/ first on sys.path, so
they import this module (and quality.py) as they are.
"""

from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from collections.abc import Callable
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


def proc_status_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory field of /proc/PID/status in MiB (VmHWM: peak RSS; VmRSS: now); 0 if the
    process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_cpu_s(pid: int) -> float:
    """CPU seconds its live threads have run so far, to the nanosecond
    (/proc/PID/task/*/schedstat; /proc/PID/stat counts in 10 ms ticks, too coarse
    for an idle node's 0.5% of a core over 10 s)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended meanwhile
    return total / 1e9


def tree_cpu_s(pid: int) -> float:
    """process_cpu_s of a process and its children (a node and its worker processes)."""
    total = process_cpu_s(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                total += tree_cpu_s(int(child))
            except OSError:
                pass  # it exited meanwhile
    return total


def run_clients(work: Callable[[int], None], clients: int) -> float:
    """``work(k)`` for k = 0 .. clients - 1, each in a thread of its own, all at once;
    the seconds until the last one ends."""
    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


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


def report_tok_s_ratio(name: str, *, direct: list[float], other: list[float], key: str,
                       label: str, tokens: int, tokens_label: str, reps: int) -> None:
    """Results of a "path X vs the engine called directly" bench: files + the JSON line.

    ``key`` names the other path in the figures (``{key}_tok_s``, ``{key}_all``).
    """
    figures = {"ratio": round(median(other) / median(direct), 3),
               "direct_tok_s": round(median(direct), 1), f"{key}_tok_s": round(median(other), 1),
               "tokens": tokens, "reps": reps, "direct_all": [round(x, 1) for x in direct],
               f"{key}_all": [round(x, 1) for x in other]}
    write_results(name, figures, [
        ("direct engine, tok/s (median)", f"{figures['direct_tok_s']}"),
        (f"{label}, tok/s (median)", f"{figures[f'{key}_tok_s']}"),
        ("ratio (goal >= 0.95)", f"{figures['ratio']}"),
        (f"{tokens_label} / runs", f"{tokens} / {reps}"),
    ])
    print(json.dumps({"ratio": figures["ratio"], "direct_tok_s": figures["direct_tok_s"],
                      f"{key}_tok_s": figures[f"{key}_tok_s"]}))
