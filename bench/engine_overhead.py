"""Tokens/s of a direct engine call vs the same generation through the node's runtime.

Same run, same prompt, same number of tokens (EOS ignored, greedy): the node path
is Coordinator -> Scheduler -> worker process (zmq ipc + msgpack) -> engine.
Runs alternate between the two paths so that machine noise hits both alike.
Goal: ratio (node tok/s / direct tok/s) >= 0.95.
"""

from __future__ import annotations

import argparse
import time

import trio
from _common import bench_config, report_tok_s_ratio, story_request

from zswarm.asks import Ask
from zswarm.engines.loader import load_engine
from zswarm.runtime.local import local_node


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
        async with local_node(cfg) as local:
            await local.coordinator.ask(Ask(request, "first_valid", 120_000))  # warm
            engine.generate(request)  # warm
            for _ in range(reps):
                t0 = time.perf_counter()
                [c] = engine.generate(request)
                direct.append(c.tokens / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                _, report = await local.coordinator.ask(Ask(request, "first_valid", 120_000))
                node.append(report.candidates[0].tokens / (time.perf_counter() - t0))

    trio.run(run)
    engine.close()
    report_tok_s_ratio("engine_overhead", direct=direct, other=node, key="node",
                       label="node + scheduler + worker", tokens=tokens,
                       tokens_label="tokens per run", reps=reps)

if __name__ == "__main__":
    main()
