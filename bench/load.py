"""Load: 3 nodes with fixed-delay engines, 200 concurrent clients over HTTP and ZeroMQ.

Three `zswarm node` processes on loopback (scripted engine, fixed delay per
candidate, one worker each, mDNS discovery) take requests from 200 clients at
once for 60 s: half over HTTP (OpenAI chat completions), half over ZeroMQ
(ClientRequest), each to a random node, with n = 1 or 3 and a mix of strategies.
Every request must end as answered, or refused (HTTP 503 / Overloaded); anything
else is counted as lost, and a request without any answer within 60 s as hung.
Reported: counts, latency p50/p99 of answered requests, peak RSS of each node.

    python bench/load.py            # 60 s
    python bench/load.py --quick    # 15 s, ends with one JSON line
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import trio
from _common import percentile, proc_status_mib, write_results

from zswarm import client
from zswarm.core import codec
from zswarm.core.ids import new_request_id
from zswarm.core.messages import (
    ChatMessage,
    ClientReply,
    ClientRequest,
    Error,
    GenerateRequest,
    SamplingParams,
)
from zswarm.errors import error_from_kind
from zswarm.http.base import status_of
from zswarm.testing.cluster import NodeProcess, dealer, node_config, wait_until

HUNG_S = 60.0
STRATEGIES = ["first_valid", "majority", "best_of_n", "route"]


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.latencies_ms: list[float] = []

    def add(self, outcome: str, t0: float) -> None:
        self.outcomes[outcome] += 1
        if outcome == "answered":
            self.latencies_ms.append((time.perf_counter() - t0) * 1000)


async def http_client(roots: list[str], until: float, rng: random.Random, tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=HUNG_S) as http:
        while trio.current_time() < until:
            n = rng.choice([1, 1, 3])
            body = {"model": "default", "max_tokens": 8,
                    "messages": [{"role": "user", "content": "What is 6 * 7?"}],
                    "zswarm": {"n": n, "strategy": rng.choice(STRATEGIES)}}
            t0 = time.perf_counter()
            try:
                r = await http.post(rng.choice(roots) + "/chat/completions", json=body)
            except httpx.TimeoutException:
                tally.add("hung", t0)
                continue
            except httpx.HTTPError as exc:
                tally.add(f"lost: {type(exc).__name__}", t0)
                continue
            if r.status_code == 200:
                ok = r.json()["choices"][0]["message"]["content"] in ("42", "41", "40")
                tally.add("answered" if ok else "lost: wrong answer", t0)
            elif r.status_code == 503:
                tally.add("refused", t0)
            else:
                tally.add(f"lost: HTTP {r.status_code}", t0)


async def zmq_client(endpoints: list[str], until: float, rng: random.Random,
                     tally: Tally) -> None:
    with dealer(rng.choice(endpoints)) as sock:  # pinned to that node's key
        while trio.current_time() < until:
            rid = new_request_id()
            request = GenerateRequest(messages=(ChatMessage(role="user", content="6 * 7?"),),
                                      params=SamplingParams(max_tokens=8),
                                      n=rng.choice([1, 1, 3]))
            await sock.send([codec.encode(ClientRequest(
                request_id=rid, request=request, strategy=rng.choice(STRATEGIES),
                deadline_ms=30_000))])
            t0 = time.perf_counter()
            with trio.move_on_after(HUNG_S):
                while True:
                    reply = codec.decode((await sock.recv_multipart())[-1])
                    if getattr(reply, "request_id", None) == rid:
                        break
            if isinstance(reply, ClientReply) and getattr(reply, "request_id", None) == rid:
                tally.add("answered", t0)
            elif isinstance(reply, Error) and \
                    status_of(error_from_kind(reply.kind, reply.message)) == 503:
                tally.add("refused", t0)  # what HTTP answers with 503 + Retry-After
            elif isinstance(reply, Error) and reply.request_id == rid:
                tally.add(f"lost: {reply.kind}", t0)
            else:
                tally.add("hung", t0)


async def drive(nodes: list[dict], clients: int, seconds: float, seed: int) -> Tally:
    tally = Tally()
    roots = [f"http://127.0.0.1:{n['http_port']}/v1" for n in nodes]
    endpoints = [n["rpc_endpoint"] for n in nodes]
    until = trio.current_time() + seconds
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        for i in range(clients):
            sub = random.Random(rng.random())
            if i % 2:
                nursery.start_soon(http_client, roots, until, sub, tally)
            else:
                nursery.start_soon(zmq_client, endpoints, until, sub, tally)
    return tally


def run(clients: int, seconds: float, delay_ms: float, seed: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="zswarm-load-"))
    swarm = "load-" + secrets.token_hex(4)
    procs = [NodeProcess(node_config(work, name, swarm=swarm, answers=[answer],
                                     delay_ms=delay_ms,
                                     federation={"heartbeat_interval_ms": 500}))
             for name, answer in (("a", "42"), ("b", "42"), ("c", "41"))]
    try:
        infos = [p.wait_ready(60) for p in procs]
        wait_until(lambda: all(sum(p.state == "alive" for p in client.peers(
            i["rpc_endpoint"]).peers) == 2 for i in infos), 30, what="three nodes see each other")
        t0 = time.monotonic()
        tally = trio.run(drive, infos, clients, seconds, seed)
        elapsed = time.monotonic() - t0
        alive = all(p.proc.poll() is None for p in procs)
        rss = [round(proc_status_mib(p.pid), 1) for p in procs]
    finally:
        for p in procs:
            p.stop()
    out = tally.outcomes
    lost = {k: v for k, v in out.items() if k.startswith("lost")}
    lat = tally.latencies_ms or [0.0]
    return {"requests": sum(out.values()), "answered": out["answered"],
            "refused": out["refused"], "lost": sum(lost.values()), "hung": out["hung"],
            "lost_by_kind": lost, "p50_ms": round(percentile(lat, 50), 1),
            "p99_ms": round(percentile(lat, 99), 1),
            "answered_per_s": round(out["answered"] / elapsed, 1),
            "nodes_alive": alive, "peak_rss_mib": rss, "clients": clients,
            "seconds": round(elapsed, 1), "engine_delay_ms": delay_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    f = run(args.clients, seconds, args.delay_ms, args.seed)
    if not args.no_results:
        write_results("load" + ("_quick" if args.quick else ""), f, [
            ("clients / seconds", f"{f['clients']} / {f['seconds']}"),
            ("requests: answered / refused / lost / hung",
             f"{f['requests']}: {f['answered']} / {f['refused']} / {f['lost']} / {f['hung']}"),
            ("latency of answered, p50 / p99 ms", f"{f['p50_ms']} / {f['p99_ms']}"),
            ("answered per second", f"{f['answered_per_s']}"),
            ("peak RSS per node, MiB", f"{f['peak_rss_mib']}"),
        ])
    print(json.dumps({k: f[k] for k in ("requests", "answered", "refused", "lost", "hung",
                                          "p50_ms", "p99_ms", "answered_per_s",
                                          "peak_rss_mib", "nodes_alive")}))
    sys.exit(0 if f["lost"] == 0 and f["hung"] == 0 and f["nodes_alive"] else 1)


if __name__ == "__main__":
    main()
