"""A swarm of N on one machine: N = 8, 16, 32, 64 real node processes, what each costs.

Per N: `zswarm node` processes (scripted engine, one worker each, a fixed delay of
DELAY_MS; real mDNS on loopback, heartbeats every 1 s x 3, votes over ZeroMQ), started
together. Measured: the time from the last node ready until every node sees every other
ALIVE; the CPU each node process spends per second in an idle swarm (heartbeats only),
and per heartbeat received; RSS and open fds per node; the consensus overhead of asking
node 0 for K = 8 candidates (majority; latency minus the engine's delay); the time
until 4 observers see a SIGKILLed node DEAD; warnings and errors the nodes logged on the
way (limits hit). One JSON line per N; a PNG plot of each figure against N.

Goals (issue 19): at 64, all ALIVE within 2 s of the last ready, dead within 3.0 s,
idle CPU per node <= 0.5% of a core, no node over its fd or socket limits.

    python bench/swarm_size.py            # N = 8, 16, 32, 64
    python bench/swarm_size.py --quick    # N = 8, 16
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    median,
    percentile,
    proc_status_mib,
    process_cpu_s,
    write_results,
)

from zswarm.client import NodeClient
from zswarm.core.messages import ChatMessage, GenerateRequest
from zswarm.testing.cluster import NodeProcess, node_config, wait_until
from zswarm.testing.floods import open_fds

DELAY_MS = 20.0
INTERVAL_MS = 1000
IDLE_S = 10.0
#: after every node sees every other ALIVE, this long before the idle swarm is measured
#: (the last joiners' first pings and peer exchanges are start-up, not idle)
SETTLE_S = 10.0


def alive_counts(clients: list[NodeClient]) -> list[int]:
    """How many peers each node sees ALIVE (over one standing connection per node: a new
    connection per poll would load the swarm being measured)."""
    return [sum(x.state == "alive" for x in node.peers(timeout_s=5).peers) for node in clients]


def one_size(tmp: Path, n: int, reps: int) -> dict[str, Any]:
    swarm = "size-" + secrets.token_hex(4)
    configs = [node_config(tmp / f"n{n}", f"s{i}", swarm=swarm, answers=["42"],
                           delay_ms=DELAY_MS, federation={"heartbeat_interval_ms": INTERVAL_MS})
               for i in range(n)]
    t0 = time.monotonic()
    procs = [NodeProcess(c) for c in configs]
    clients: list[NodeClient] = []
    row: dict[str, Any] = {"n": n}
    try:
        for p in procs:
            p.wait_ready(300)
        ready = time.monotonic()
        row["start_all_ready_s"] = round(ready - t0, 2)
        clients = [NodeClient(p.rpc) for p in procs]
        wait_until(lambda: min(alive_counts(clients)) == n - 1, 120,
                   what=f"every node sees {n - 1} alive", interval_s=0.1)
        row["all_alive_after_last_ready_s"] = round(time.monotonic() - ready, 2)
        time.sleep(SETTLE_S)  # the start-up burst is over: now the idle swarm of every day
        before = [process_cpu_s(p.pid) for p in procs]
        time.sleep(IDLE_S)
        used = [(process_cpu_s(p.pid) - b) / IDLE_S for p, b in zip(procs, before, strict=True)]
        row["idle_cpu_pct_per_node_median"] = round(100 * median(used), 2)
        row["idle_cpu_pct_per_node_max"] = round(100 * max(used), 2)
        beats_per_s = (n - 1) * 1000 / INTERVAL_MS
        row["cpu_ms_per_heartbeat_received"] = round(median(used) * 1000 / beats_per_s, 3)
        rss = [proc_status_mib(p.pid, "VmRSS") for p in procs]
        row["rss_mib_per_node_median"] = round(median(rss), 1)
        fds = [open_fds(p.pid) for p in procs]
        row["fds_per_node_median"] = int(median(fds))
        row["fds_per_node_max"] = max(fds)
        k = min(8, n)
        request = GenerateRequest(messages=(ChatMessage(role="user", content="6 * 7?"),), n=k)
        node = clients[0]
        for _ in range(3):
            node.ask(request, strategy="majority", deadline_ms=30_000)
        over = []
        for _ in range(reps):
            t1 = time.perf_counter()
            node.ask(request, strategy="majority", deadline_ms=30_000)
            over.append((time.perf_counter() - t1) * 1000 - DELAY_MS)
        row[f"k{k}_overhead_p50_ms"] = round(percentile(over, 50), 2)
        row[f"k{k}_overhead_p99_ms"] = round(percentile(over, 99), 2)
        victim = procs[-1]
        victim_name = f"s{n - 1}"
        observers = clients[:4]
        victim.signal(signal.SIGKILL)
        t2 = time.monotonic()

        def all_see_dead() -> bool:
            for node in observers:
                states = {x.name: x.state for x in node.peers(timeout_s=5).peers}
                if states.get(victim_name) != "dead":
                    return False
            return True

        wait_until(all_see_dead, 30, what="the killed node DEAD", interval_s=0.02)
        row["dead_detect_s"] = round(time.monotonic() - t2, 2)
        logs = [p.log() for p in procs[:-1]]
        row["warnings_logged"] = sum(log.count("WARNING") for log in logs)
        row["errors_logged"] = sum(log.count("ERROR") for log in logs)
        limits = ("too many open files", "table full", "cannot open a socket", "EMFILE")
        row["limits_hit"] = sorted({w for w in limits for log in logs if w in log})
    finally:
        for client in clients:
            client.close()
        for p in procs:
            p.stop()
    return row


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["all_alive_after_last_ready_s", "dead_detect_s", "idle_cpu_pct_per_node_median",
            "cpu_ms_per_heartbeat_received", "rss_mib_per_node_median", "fds_per_node_median",
            "k8_overhead_p50_ms"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    ns = [r["n"] for r in rows]
    for ax, key in zip(axes.flat, keys, strict=False):
        ax.plot(ns, [r.get(key) for r in rows], marker="o")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("nodes")
        ax.set_xscale("log", base=2)
    axes.flat[-1].axis("off")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="")
    args = parser.parse_args()
    sizes = ([int(x) for x in args.sizes.split(",")] if args.sizes
             else [8, 16] if args.quick else [8, 16, 32, 64])
    tmp = Path(tempfile.mkdtemp(prefix="zswarm-size-"))
    rows = []
    for n in sizes:
        row = one_size(tmp, n, reps=30 if args.quick else 100)
        rows.append(row)
        print(json.dumps(row), flush=True)
    name = "swarm_size" + ("_quick" if args.quick else "")
    plot(rows, RESULTS / f"{name}.png")
    table = []
    for r in rows:
        table.append((f"N={r['n']}: all ALIVE after the last ready / dead detected (s)",
                      f"{r['all_alive_after_last_ready_s']} / {r['dead_detect_s']}"))
        table.append((f"N={r['n']}: idle CPU per node, median / max (% of a core); "
                      "per heartbeat received (ms)",
                      f"{r['idle_cpu_pct_per_node_median']} / {r['idle_cpu_pct_per_node_max']}; "
                      f"{r['cpu_ms_per_heartbeat_received']}"))
        table.append((f"N={r['n']}: RSS (MiB), fds median / max per node",
                      f"{r['rss_mib_per_node_median']}, {r['fds_per_node_median']} / "
                      f"{r['fds_per_node_max']}"))
        k = min(8, r["n"])
        table.append((f"N={r['n']}: K={k} overhead p50 / p99 (ms); limits hit; warnings",
                      f"{r[f'k{k}_overhead_p50_ms']} / {r[f'k{k}_overhead_p99_ms']}; "
                      f"{r['limits_hit'] or 'none'}; {r['warnings_logged']}"))
    write_results(name, {"rows": rows}, table)


if __name__ == "__main__":
    main()
