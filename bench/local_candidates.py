"""Wall time for n = 1, 2, 4 candidates of the same length on one worker, as ratios to n = 1.

Through the node's runtime (one worker process): the n candidates are decoded
as one batch (parallel sequences sharing the prompt's KV cache). EOS is ignored
so every candidate has exactly max_tokens tokens. Goal: n=4 <= 2.6x n=1.
Also prints the same ratios for the engine called directly.
"""

from __future__ import annotations

import argparse
import json
import time

import trio
from _common import bench_config, median, story_request, write_results

from zswarm.asks import Ask
from zswarm.core.messages import GenerateRequest
from zswarm.engines.loader import load_engine
from zswarm.runtime.local import local_node

NS = (1, 2, 4)


def request(n: int, tokens: int) -> GenerateRequest:
    return story_request(n=n, tokens=tokens, temperature=0.8, seed=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps, tokens = (3, 96) if args.quick else (5, 192)
    cfg = bench_config()
    node_times: dict[int, list[float]] = {n: [] for n in NS}
    direct_times: dict[int, list[float]] = {n: [] for n in NS}

    async def run() -> None:
        async with local_node(cfg) as local:
            await local.coordinator.ask(Ask(request(1, 16), "best_of_n", 120_000))
            for _ in range(reps):
                for n in NS:
                    t0 = time.perf_counter()
                    _, report = await local.coordinator.ask(
                        Ask(request(n, tokens), "best_of_n", 300_000))
                    node_times[n].append(time.perf_counter() - t0)
                    assert all(c.tokens == tokens for c in report.candidates)

    trio.run(run)
    engine = load_engine(cfg.model, threads=2)
    engine.generate(request(1, 16))
    for _ in range(reps):
        for n in NS:
            t0 = time.perf_counter()
            engine.generate(request(n, tokens))
            direct_times[n].append(time.perf_counter() - t0)
    engine.close()
    base = median(node_times[1])
    dbase = median(direct_times[1])
    figures = {
        "ratio_n2": round(median(node_times[2]) / base, 3),
        "ratio_n4": round(median(node_times[4]) / base, 3),
        "direct_ratio_n2": round(median(direct_times[2]) / dbase, 3),
        "direct_ratio_n4": round(median(direct_times[4]) / dbase, 3),
        "n1_s": round(base, 3), "tokens": tokens, "reps": reps,
        "node_s": {n: [round(x, 3) for x in v] for n, v in node_times.items()},
        "direct_s": {n: [round(x, 3) for x in v] for n, v in direct_times.items()},
    }
    write_results("local_candidates", figures, [
        (f"n=1 wall time, {tokens} tokens (node)", f"{figures['n1_s']} s"),
        ("n=2 / n=1 (node)", f"{figures['ratio_n2']}"),
        ("n=4 / n=1 (node, goal <= 2.6)", f"{figures['ratio_n4']}"),
        ("n=2 / n=1 (engine direct)", f"{figures['direct_ratio_n2']}"),
        ("n=4 / n=1 (engine direct)", f"{figures['direct_ratio_n4']}"),
    ])
    print(json.dumps({k: figures[k] for k in
                      ("ratio_n2", "ratio_n4", "direct_ratio_n2", "direct_ratio_n4")}))


if __name__ == "__main__":
    main()
