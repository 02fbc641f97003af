"""Two nodes, two real models: one endpoint for both, and what reaching a peer's model costs.

Node A serves the default model (SmolLM2-135M Q4_1), node B the same model requantized to
Q8_0 by llama.cpp (zswarm.testing.models), each a `zswarm node` process pinned to a core
of its own, on loopback. Measured:
- catalog convergence: from B's ready until A's GET /v1/models lists B's model, and
  whether /v1/models is the same at both nodes then;
- routing overhead (issue 37's goal: a request for a peer's model costs <= 1.1x the same
  request at the holder, at the median): the same greedy chat request for B's model,
  sent to A (which routes it to B) and to B itself, alternating, N times each; total
  time per request and its ratio.
Prints one JSON line; writes bench/results/models.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _common import median, percentile, write_results

from zswarm.testing.cluster import NodeProcess, node_config, wait_until
from zswarm.testing.models import requantized

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def models_at(port: int) -> dict[str, list[str]]:
    data = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
    return {m["id"]: [h["node"] for h in m["zswarm"]["holders"]] for m in data}


def ask_ms(client: httpx.Client, port: int, model: str) -> float:
    t0 = time.perf_counter()
    r = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
        "model": model, "messages": QUESTION, "max_tokens": 16, "temperature": 0})
    r.raise_for_status()
    assert r.json()["zswarm"]["nodes"] == ["b"]
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 20 if args.quick else 100
    q8 = requantized("Q8_0")
    swarm = "bench-models-" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory() as tmp:
        common: dict[str, Any] = {"federation": {"discovery": "mdns",
                                                 "heartbeat_interval_ms": 1000}}
        a = NodeProcess(node_config(Path(tmp), "a", swarm=swarm, model={"threads": 1},
                                    **common), cpus={0})
        b = NodeProcess(node_config(Path(tmp), "b", swarm=swarm,
                                    model={"path": str(q8), "threads": 1}, **common), cpus={1})
        try:
            info_a = a.wait_ready(120)
            info_b = b.wait_ready(120)
            ready_b = time.perf_counter()
            wait_until(lambda: info_b.model_id in models_at(info_a.http_port), 60,
                       what="A lists B's model")
            converged_s = time.perf_counter() - ready_b
            wait_until(lambda: models_at(info_b.http_port) == models_at(info_a.http_port), 60,
                       what="the same catalog at both")
            same = models_at(info_a.http_port) == models_at(info_b.http_port)
            via_a, at_b = [], []
            with httpx.Client(timeout=60) as client:
                for _ in range(3):  # warm both paths
                    ask_ms(client, info_a.http_port, info_b.model_id)
                    ask_ms(client, info_b.http_port, info_b.model_id)
                for _ in range(reps):
                    via_a.append(ask_ms(client, info_a.http_port, info_b.model_id))
                    at_b.append(ask_ms(client, info_b.http_port, info_b.model_id))
        finally:
            a.stop()
            b.stop()
    figures = {"quick": args.quick, "reps": reps, "catalog_converged_s": round(converged_s, 3),
               "catalog_same_at_both": same,
               "at_holder_p50_ms": round(median(at_b), 2),
               "via_peer_p50_ms": round(median(via_a), 2),
               "ratio_p50": round(median(via_a) / median(at_b), 3),
               "at_holder_p95_ms": round(percentile(at_b, 95), 2),
               "via_peer_p95_ms": round(percentile(via_a, 95), 2),
               "added_p50_ms": round(median(via_a) - median(at_b), 2)}
    write_results("models_quick" if args.quick else "models", figures, [
        ("A lists B's model, s after B is ready", f"{figures['catalog_converged_s']}"),
        ("/v1/models the same at both", f"{same}"),
        ("B's model asked at B, p50 (p95) ms",
         f"{figures['at_holder_p50_ms']} ({figures['at_holder_p95_ms']})"),
        ("B's model asked at A (routed to B), p50 (p95) ms",
         f"{figures['via_peer_p50_ms']} ({figures['via_peer_p95_ms']})"),
        ("ratio at p50 (goal <= 1.1)", f"{figures['ratio_p50']}"),
    ])
    print(json.dumps({k: figures[k] for k in ("catalog_converged_s", "catalog_same_at_both",
                                              "at_holder_p50_ms", "via_peer_p50_ms",
                                              "ratio_p50", "added_p50_ms")}))


if __name__ == "__main__":
    main()
