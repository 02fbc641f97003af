"""Several models on one node: what loading on demand costs, and what it holds.

One `zswarm node` process pinned to one core, two real models in [[models]]: "small"
(the default SmolLM2-135M Q4_1, loaded at start) and "q8" (the same model requantized to
Q8_0 by llama.cpp, zswarm.testing.models), n_ctx 1024, one worker each. Measured, each
with the same greedy streamed chat request (time to its first token, TTFT):
- load cost (each request a new question, so no prompt cache holds it): q8's TTFT when
  it is not loaded (the budget fits one model, so each request
  for q8 after one for small unloads small and loads q8) against q8's TTFT when it is
  loaded; the load time the node reports (/v1/status load_ms), with q8's file in the page
  cache and out of it (posix_fadvise DONTNEED before the request). Goal: unloaded TTFT <=
  load time + 1.2x the loaded TTFT;
- switching: alternating requests for small and q8 with a budget that fits both: loads
  counted (goal: no reload), TTFT against requests for one model only;
- memory: a flood of concurrent requests for both models with the budget of one; the
  node's workers' PSS sampled throughout, against the budget and the estimates;
- the catalog's cost on the wire: heartbeat bytes of a node of 3 models against one of
  1, and the bytes a node receives per heartbeat interval from 8 and from 64 such nodes.
Prints one JSON line; writes bench/results/model_life.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import median, write_results

from zswarm.core import codec
from zswarm.core.messages import Heartbeat, HeldModel, Load, NodeCard
from zswarm.testing.cluster import NodeProcess, node_config
from zswarm.testing.models import requantized

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
#: every TTFT request asks a new question: a model just loaded has nothing in its prompt
#: cache, so neither may the loaded model it is compared with (the system prompt, the
#: same for every request, is cached in a loaded model only)
ASKED = [0]


def fresh_question() -> list[dict[str, str]]:
    ASKED[0] += 1
    return [{"role": "user", "content": f"Question {ASKED[0]}: what is the capital of "
                                        "France?"}]


def ttft_ms(client: httpx.Client, port: int, model: str) -> float:
    """Time to the first token of a streamed greedy answer (the rest is read too)."""
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json={
            "model": model, "messages": fresh_question(), "max_tokens": 8, "temperature": 0,
            "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and \
                    json.loads(line[6:])["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
    assert first is not None, "no token streamed"
    return (first - t0) * 1000


def status(port: int) -> dict[str, Any]:
    data = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=10).json()
    return {m["name"]: m for m in data["models"]}


def evict_from_page_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def workers_pss_mib(pid: int) -> float:
    total = 0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            total += child.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def node(tmp: str, name: str, q8: str, budget_mib: int) -> NodeProcess:
    common = {"threads": 1, "n_ctx": 1024}
    models = [{"name": "small", "path": "default", "preload": True, **common},
              {"name": "q8", "path": q8, **common}]
    return NodeProcess(node_config(Path(tmp), name, swarm="bench-life", models=models,
                                   node={"memory_budget_mib": budget_mib, "min_resident_s": 0},
                                   federation={"enabled": False}), cpus={0})


def load_cost(tmp: str, q8: str, reps: int) -> dict[str, Any]:
    proc = node(tmp, "one", q8, budget_mib=300)  # about 188 + 233 MiB: one at a time
    try:
        port = proc.wait_ready(120).http_port
        loaded, unloaded, cold, loads_ms, cold_loads_ms = [], [], [], [], []
        with httpx.Client(timeout=120) as client:
            ttft_ms(client, port, "q8")
            ttft_ms(client, port, "small")
            for k in range(reps):
                ttft_ms(client, port, "small")  # q8 is unloaded now
                if k % 2:
                    evict_from_page_cache(q8)
                    cold.append(ttft_ms(client, port, "q8"))
                    cold_loads_ms.append(status(port)["q8"]["load_ms"])
                else:
                    unloaded.append(ttft_ms(client, port, "q8"))
                    loads_ms.append(status(port)["q8"]["load_ms"])
                loaded.append(ttft_ms(client, port, "q8"))  # loaded now
    finally:
        proc.stop()
    goal = median(loads_ms) + 1.2 * median(loaded)
    return {"loaded_ttft_p50_ms": round(median(loaded), 1),
            "unloaded_ttft_p50_ms": round(median(unloaded), 1),
            "load_p50_ms": round(median(loads_ms), 1),
            "goal_ms": round(goal, 1), "within_goal": median(unloaded) <= goal,
            "cold_unloaded_ttft_p50_ms": round(median(cold), 1),
            "cold_load_p50_ms": round(median(cold_loads_ms), 1)}


def switching(tmp: str, q8: str, reps: int) -> dict[str, Any]:
    proc = node(tmp, "both", q8, budget_mib=1000)
    try:
        port = proc.wait_ready(120).http_port
        one, alternating = [], []
        with httpx.Client(timeout=120) as client:
            ttft_ms(client, port, "q8")
            for _ in range(reps):
                one.append(ttft_ms(client, port, "small"))
            for k in range(reps):
                alternating.append(ttft_ms(client, port, ("small", "q8")[k % 2]))
            loads = {name: m["loads"] for name, m in status(port).items()}
    finally:
        proc.stop()
    return {"one_model_ttft_p50_ms": round(median(one), 1),
            "alternating_ttft_p50_ms": round(median(alternating), 1),
            "alternating_ratio": round(median(alternating) / median(one), 3),
            "loads": loads}


def memory(tmp: str, q8: str, clients: int) -> dict[str, Any]:
    budget = 300
    proc = node(tmp, "flood", q8, budget_mib=budget)
    peak, done = [0.0], threading.Event()
    answered, refused = [0], [0]
    try:
        port = proc.wait_ready(120).http_port

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], workers_pss_mib(proc.pid))
                time.sleep(0.05)

        def flood(k: int) -> None:
            with httpx.Client(timeout=300) as client:
                for j in range(4):
                    r = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
                        "model": ("small", "q8")[(k + j) % 2], "messages": QUESTION,
                        "max_tokens": 8, "temperature": 0})
                    if r.status_code == 200:
                        answered[0] += 1
                    else:
                        refused[0] += 1

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=flood, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        sampler.join()
        estimates = {name: m["estimate_mib"] for name, m in status(port).items()}
    finally:
        done.set()
        proc.stop()
    return {"budget_mib": budget, "workers_pss_peak_mib": round(peak[0], 1),
            "estimates_mib": estimates, "flood_answered": answered[0],
            "flood_refused": refused[0]}


def catalog_bytes() -> dict[str, Any]:
    def heartbeat(models: int) -> int:
        held = [HeldModel(model_id=f"Model-{i}-8B-Instruct.Q4_K_M.gguf@{i:016x}",
                          name=f"model-{i}") for i in range(models)]
        card = NodeCard(node_id="0123456789abcdef", name="workstation",
                        model_id=held[0].model_id, workers=2, rpc="tcp://192.168.1.20:17617",
                        pub="tcp://192.168.1.20:17616", http=17615, hardware="8 cpu, 32 GiB",
                        key="f" * 16, models=held if models > 1 else [],
                        public="0123456789abcdef" * 4)
        load = Load(workers_ready=2, idle_workers=2, max_queue=64, tokens_per_s=40.0,
                    models=["loaded"] * models if models > 1 else [])
        return len(codec.encode(Heartbeat(card=card, seq=12345, load=load)))

    one, three = heartbeat(1), heartbeat(3)
    return {"heartbeat_bytes_1_model": one, "heartbeat_bytes_3_models": three,
            "per_interval_bytes_8_nodes": 8 * three, "per_interval_bytes_64_nodes": 64 * three}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 6 if args.quick else 20
    q8 = str(requantized("Q8_0"))
    with tempfile.TemporaryDirectory() as tmp:
        figures: dict[str, Any] = {"quick": args.quick, "reps": reps}
        figures.update(load_cost(tmp, q8, reps))
        figures.update(switching(tmp, q8, reps))
        figures.update(memory(tmp, q8, clients=4 if args.quick else 8))
    figures.update(catalog_bytes())
    write_results("model_life_quick" if args.quick else "model_life", figures, [
        ("q8 loaded: TTFT p50 ms", f"{figures['loaded_ttft_p50_ms']}"),
        ("q8 unloaded (file in page cache): TTFT p50 ms, its load ms",
         f"{figures['unloaded_ttft_p50_ms']}, {figures['load_p50_ms']}"),
        ("goal: load + 1.2x loaded TTFT, ms (met)",
         f"{figures['goal_ms']} ({figures['within_goal']})"),
        ("q8 unloaded, file not in page cache: TTFT p50 ms, its load ms",
         f"{figures['cold_unloaded_ttft_p50_ms']}, {figures['cold_load_p50_ms']}"),
        ("both fit, alternating: TTFT p50 ms vs one model (ratio)",
         f"{figures['alternating_ttft_p50_ms']} vs {figures['one_model_ttft_p50_ms']} "
         f"({figures['alternating_ratio']})"),
        ("both fit, alternating: loads per model (goal: 1 each)", f"{figures['loads']}"),
        ("flood, budget of one model: workers' PSS peak MiB vs budget",
         f"{figures['workers_pss_peak_mib']} vs {figures['budget_mib']} "
         f"(estimates {figures['estimates_mib']})"),
        ("flood: answered / refused", f"{figures['flood_answered']} / "
         f"{figures['flood_refused']}"),
        ("heartbeat bytes, 1 model / 3 models",
         f"{figures['heartbeat_bytes_1_model']} / {figures['heartbeat_bytes_3_models']}"),
        ("bytes per interval from 8 / 64 nodes of 3 models",
         f"{figures['per_interval_bytes_8_nodes']} / {figures['per_interval_bytes_64_nodes']}"),
    ])
    print(json.dumps({k: figures[k] for k in (
        "loaded_ttft_p50_ms", "unloaded_ttft_p50_ms", "load_p50_ms", "within_goal",
        "cold_unloaded_ttft_p50_ms", "alternating_ratio", "loads", "workers_pss_peak_mib",
        "budget_mib", "heartbeat_bytes_1_model", "heartbeat_bytes_3_models")}))


if __name__ == "__main__":
    main()
