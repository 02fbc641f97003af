"""Consensus latency of a federated ask: K nodes as separate processes on loopback.

For K = 1, 2, 4, 8 `zswarm node` processes (scripted engine with a fixed delay of
DELAY_MS, one worker each, real mDNS, heartbeats and votes), one client asks node 0
for n = K candidates (one per node) with each strategy; overhead = end-to-end
latency minus the engine's delay. Then the same with the real default model
(K = 1, 2, 4 with cores/K threads each), where the figure is the latency itself and
its ratio to K = 1.
Also measured: discovery time (mDNS advertise -> resolved by every other node,
without and with zeroconf's name probing) and dead-peer detection time (SIGKILL
-> DEAD on another node) at the default heartbeat interval.
Goals: overhead p50 <= 2 ms, p99 <= 10 ms at K = 8; discovery <= 0.5 s median.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _common import RESULTS, percentile, tree_cpu_s, write_results

from zswarm.client import NodeClient
from zswarm.core.consensus import STRATEGIES
from zswarm.core.messages import ChatMessage, GenerateRequest, NodeCard, SamplingParams
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

DELAY_MS = 20.0
QUESTION = (ChatMessage(role="user", content="What is 6 * 7?"),)


#: --keyed: the swarm key every node and the client hold (None: an open swarm)
KEY: list[Any] = [None, {}]


def start_cluster(tmp: Path, k: int, timing: dict[str, float] | None = None,
                  **kw: Any) -> list[NodeProcess]:
    swarm = "bench-" + secrets.token_hex(4)
    kw.setdefault("federation", {"heartbeat_interval_ms": 1000})  # the default, as users run it
    kw.update(KEY[1])
    configs = [node_config(tmp, f"n{i}", swarm=swarm, **kw) for i in range(k)]
    t0 = time.monotonic()
    procs = [NodeProcess(c) for c in configs]
    try:
        for p in procs:
            p.wait_ready(120)
        for p in procs:
            with NodeClient(p.rpc, key=KEY[0]) as node:
                wait_until(lambda: sum(p.state == "alive" for p in node.peers().peers) == k - 1,
                           30, what=f"{k - 1} peers alive", interval_s=0.005)
        if timing is not None:
            timing["swarm_ready_s"] = round(time.monotonic() - t0, 3)
    except BaseException:
        stop_cluster(procs)
        raise
    return procs


def stop_cluster(procs: list[NodeProcess]) -> None:
    for p in procs:
        p.stop()


def measure(endpoint: str, request: GenerateRequest, strategy: str, reps: int) -> list[float]:
    with NodeClient(endpoint, key=KEY[0]) as node:
        for _ in range(3):  # warm up links and workers
            node.ask(request, strategy=strategy, deadline_ms=60_000)
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            reply = node.ask(request, strategy=strategy, deadline_ms=60_000)
            out.append((time.perf_counter() - t0) * 1000)
            assert len(reply.report.candidates) >= 1
    return out


def fixed_delay(tmp: Path, ks: list[int], reps: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for k in ks:
        procs = start_cluster(tmp / f"k{k}", k, answers=["42"], delay_ms=DELAY_MS)
        try:
            request = GenerateRequest(messages=QUESTION, n=k)
            for strategy in STRATEGIES:
                cpu0 = sum(tree_cpu_s(p.pid) for p in procs)
                lat = measure(procs[0].rpc, request, strategy, reps)
                cpu = sum(tree_cpu_s(p.pid) for p in procs) - cpu0
                over = [x - DELAY_MS for x in lat]
                # every node and worker process, per ask (warm-up asks included): on 2
                # cores the overhead cannot be below half of what the swarm spends
                rows[f"k{k}_{strategy}"] = {"k": k, "strategy": strategy,
                                            "p50_ms": round(percentile(over, 50), 3),
                                            "p99_ms": round(percentile(over, 99), 3),
                                            "cpu_ms_per_ask": round(cpu / (reps + 3) * 1000, 3)}
                print(f"K={k} {strategy:<13} overhead p50 {percentile(over, 50):7.2f} ms  "
                      f"p99 {percentile(over, 99):7.2f} ms  CPU per ask, all processes "
                      f"{cpu / (reps + 3) * 1000:6.2f} ms", file=sys.stderr)
        finally:
            stop_cluster(procs)
    return rows


def real_model(tmp: Path, ks: list[int], reps: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    request = GenerateRequest(messages=QUESTION, n=1,
                              params=SamplingParams(max_tokens=16, temperature=0.0,
                                                    ignore_eos=True))
    cores = os.cpu_count() or 1
    for k in ks:
        # K nodes share this machine's cores: llama.cpp threads spin-wait, and
        # oversubscribing cores makes every token crawl (measured: minutes for 16 tokens
        # with 4 nodes x 2 threads on 2 cores). Real swarms have a machine per node.
        threads = max(1, cores // k)
        procs = start_cluster(tmp / f"real{k}", k, model={"threads": threads})
        try:
            req = GenerateRequest(messages=request.messages, params=request.params, n=k)
            lat = measure(procs[0].rpc, req, "best_of_n", reps)
            rows[f"real_k{k}"] = {"k": k, "threads_per_node": threads,
                                  "p50_ms": round(percentile(lat, 50), 1),
                                  "p99_ms": round(percentile(lat, 99), 1)}
            print(f"real model K={k} best_of_n latency p50 {percentile(lat, 50):.1f} ms",
                  file=sys.stderr)
        finally:
            stop_cluster(procs)
    base = rows[f"real_k{ks[0]}"]["p50_ms"]
    for row in rows.values():
        row["ratio_vs_k1"] = round(row["p50_ms"] / base, 2)
    return rows


async def _discovery_once(k: int, probe: bool) -> list[float]:
    """K advertisers+browsers on 127.0.0.1 started together: seconds until each resolved all."""
    from zswarm.net.mdns import Found, Mdns

    swarm = "disc-" + secrets.token_hex(4)
    cards = [NodeCard(node_id=secrets.token_hex(8), name=f"d{i}", model_id="m", workers=1,
                      rpc=f"tcp://127.0.0.1:{20000 + i}", pub=f"tcp://127.0.0.1:{21000 + i}",
                      swarm=swarm) for i in range(k)]
    seen: list[set[str]] = [set() for _ in range(k)]
    done_at: list[float] = [0.0] * k
    all_done = trio.Event()
    token = trio.lowlevel.current_trio_token()
    t0 = time.monotonic()

    def sink(i: int):
        def on_event(event: object) -> None:
            if isinstance(event, Found) and event.card.swarm == swarm:
                seen[i].add(event.card.node_id)
                if len(seen[i] - {cards[i].node_id}) == k - 1 and not done_at[i]:
                    done_at[i] = time.monotonic() - t0
                    if all(done_at):
                        trio.from_thread.run_sync(all_done.set, trio_token=token)
        return on_event

    def start(i: int) -> Mdns:
        m = Mdns("127.0.0.1")
        m.browse(sink(i))
        m.advertise(cards[i], probe=probe)
        return m

    async with trio.open_nursery() as nursery:
        instances: list[Mdns] = []

        async def run(i: int) -> None:
            instances.append(await trio.to_thread.run_sync(start, i))

        for i in range(k):
            nursery.start_soon(run, i)
    try:
        with trio.move_on_after(10):
            await all_done.wait()
    finally:
        for m in instances:
            await trio.to_thread.run_sync(m.close)
    return [d if d else float("inf") for d in done_at]


def discovery(rounds: int) -> dict[str, float]:
    fast = [statistics.median(trio.run(_discovery_once, 3, False)) for _ in range(rounds)]
    slow = [statistics.median(trio.run(_discovery_once, 3, True)) for _ in range(rounds)]
    return {"discovery_s": round(statistics.median(fast), 3),
            "discovery_with_probing_s": round(statistics.median(slow), 3)}


def dead_peer_detection(tmp: Path, rounds: int) -> float:
    """SIGKILL one of two nodes (default 1 s heartbeats, liveness 3) -> DEAD on the other."""
    times = []
    for r in range(rounds):
        procs = start_cluster(tmp / f"dead{r}", 2, answers=["42"],
                              federation={"heartbeat_interval_ms": 1000})
        try:
            with NodeClient(procs[0].rpc) as node:
                killed = time.monotonic()
                procs[1].signal(signal.SIGKILL)
                wait_until(lambda: [p.state for p in node.peers().peers] == ["dead"], 10,
                           what="peer dead", interval_s=0.01)
                times.append(time.monotonic() - killed)
        finally:
            stop_cluster(procs)
    return round(statistics.median(times), 3)


def plot(rows: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for strategy in STRATEGIES:
        pts = sorted((r["k"], r["p50_ms"], r["p99_ms"]) for r in rows.values()
                     if r.get("strategy") == strategy)
        ks = [p[0] for p in pts]
        ax.plot(ks, [p[1] for p in pts], marker="o", label=f"{strategy} p50")
        ax.plot(ks, [p[2] for p in pts], marker="x", linestyle="--", label=f"{strategy} p99")
    ax.set_xlabel("nodes (K), one candidate each")
    ax.set_ylabel("overhead over the engine (ms)")
    ax.set_xscale("log", base=2)
    ax.set_title("zswarm federated ask: consensus overhead vs K (loopback)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keyed", action="store_true", help="every node with a swarm key")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the fixed-delay overhead (K = 1..8), written apart")
    args = parser.parse_args()
    if args.keyed:
        from zswarm.net.security import write_key_file
        folder = Path(tempfile.mkdtemp(prefix="zswarm-bench-key-"))
        KEY[0] = write_key_file(folder / "swarm.key")
        KEY[1] = {"security": {"swarm_key_file": str(folder / "swarm.key")}}
    reps, ks, real_ks, rounds = ((30, [1, 2, 4, 8], [1, 2], 3) if args.quick
                                 else (200, [1, 2, 4, 8], [1, 2, 4], 7))
    with tempfile.TemporaryDirectory(prefix="zswarm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ready: dict[str, float] = {}
        stop_cluster(start_cluster(tmp / "ready", 3, ready, answers=["42"]))
        rows = fixed_delay(tmp, ks, reps)
        if args.overhead_only:
            k8 = [r for r in rows.values() if r["k"] == max(ks)]
            figures = {"keyed": args.keyed, "overhead_p50_ms_k8": max(r["p50_ms"] for r in k8),
                       "overhead_p99_ms_k8": max(r["p99_ms"] for r in k8),
                       "cpu_ms_per_ask_k8_all_processes": max(r["cpu_ms_per_ask"] for r in k8),
                       "swarm_ready_s_k3": ready["swarm_ready_s"], "reps": reps, "rows": rows}
            write_results("consensus_overhead" + ("_keyed" if args.keyed else ""), figures,
                          [(f"K={r['k']} {r['strategy']} overhead p50 / p99 ms",
                            f"{r['p50_ms']} / {r['p99_ms']}") for r in rows.values()])
            print(json.dumps({k: v for k, v in figures.items() if k != "rows"}))
            return
        real = real_model(tmp, real_ks, max(5, reps // 10))
        disc = discovery(rounds)
        dead_s = dead_peer_detection(tmp, max(1, rounds // 3))
    k8 = [r for r in rows.values() if r["k"] == max(ks)]
    figures = {
        "overhead_p50_ms_k8": max(r["p50_ms"] for r in k8),
        "overhead_p99_ms_k8": max(r["p99_ms"] for r in k8),
        "cpu_ms_per_ask_k8_all_processes": max(r["cpu_ms_per_ask"] for r in k8),
        "cpu_ms_per_ask_k1": max(r["cpu_ms_per_ask"] for r in rows.values() if r["k"] == 1),
        **disc, "dead_peer_detect_s": dead_s,
        "swarm_ready_s_k3": ready["swarm_ready_s"], "delay_ms": DELAY_MS, "reps": reps,
        "rows": rows, "real_model": real,
    }
    RESULTS.mkdir(exist_ok=True)
    plot(rows, RESULTS / "consensus_latency.png")
    table = [(f"K={r['k']} {r['strategy']} overhead p50 / p99 ms; CPU per ask, all processes",
              f"{r['p50_ms']} / {r['p99_ms']}; {r['cpu_ms_per_ask']} ms") for r in rows.values()]
    table += [(f"real model K={r['k']} best_of_n latency p50 / p99 ms (ratio vs K=1)",
               f"{r['p50_ms']} / {r['p99_ms']} ({r['ratio_vs_k1']})") for r in real.values()]
    table += [("discovery, 3 nodes, no probing (goal <= 0.5 s)", f"{disc['discovery_s']} s"),
              ("discovery, 3 nodes, zeroconf default probing", f"{disc['discovery_with_probing_s']} s"),
              ("3 node processes launched -> all ALIVE to each other (incl. Python start-up)",
               f"{ready['swarm_ready_s']} s"),
              ("dead peer detected (1 s heartbeats, liveness 3)", f"{dead_s} s")]
    write_results("consensus_latency", figures, table)
    print(json.dumps({k: figures[k] for k in ("overhead_p50_ms_k8", "overhead_p99_ms_k8",
                                               "cpu_ms_per_ask_k8_all_processes",
                                               "cpu_ms_per_ask_k1", "discovery_s",
                                               "dead_peer_detect_s")}))


if __name__ == "__main__":
    main()
