"""Tokens/s of a direct engine call vs the same generation through the node's runtime.

Same run, same prompt, same number of tokens (EOS ignored, greedy): the node path
is Coordinator -> Scheduler -> worker process (zmq ipc + msgpack) -> engine.
Runs alternate between the two paths so that machine noise hits both alike.
Goal: ratio (node tok/s / direct tok/s) >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_config, median, story_request, write_results  # noqa: E402

from zswarm.engines.loader import load_engine  # noqa: E402
from zswarm.runtime.node import local_swarm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps, tokens = (3, 128) if args.quick else (7, 256)
    cfg = bench_config()
    request = story_request(tokens=tokens, temperature=0.0)
    engine = load_engine(cfg.model, threads=2)
    direct: list[float] = []
    node: list[float] = []

    async def run() -> None:
        async with local_swarm(cfg) as swarm:
            await swarm.coordinator.ask(request, strategy="first_valid", deadline_s=120)  # warm
            engine.generate(request)  # warm
            for _ in range(reps):
                t0 = time.perf_counter()
                [c] = engine.generate(request)
                direct.append(c.tokens / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                _, report = await swarm.coordinator.ask(request, strategy="first_valid",
                                                        deadline_s=120)
                node.append(report.candidates[0].tokens / (time.perf_counter() - t0))

    trio.run(run)
    engine.close()
    ratio = median(node) / median(direct)
    figures = {"ratio": round(ratio, 3), "direct_tok_s": round(median(direct), 1),
               "node_tok_s": round(median(node), 1), "tokens": tokens, "reps": reps,
               "direct_all": [round(x, 1) for x in direct], "node_all": [round(x, 1) for x in node]}
    write_results("engine_overhead", figures, [
        ("direct engine, tok/s (median)", f"{figures['direct_tok_s']}"),
        ("node + scheduler + worker, tok/s (median)", f"{figures['node_tok_s']}"),
        ("ratio (goal >= 0.95)", f"{figures['ratio']}"),
        ("tokens per run / runs", f"{tokens} / {reps}"),
    ])
    print(json.dumps({"ratio": figures["ratio"], "direct_tok_s": figures["direct_tok_s"],
                      "node_tok_s": figures["node_tok_s"]}))


if __name__ == "__main__":
    main()
