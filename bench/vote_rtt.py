"""Vote round trip between two processes: ZeroMQ + msgpack vs an HTTP + JSON baseline.

A server process holds one node's vote path - Coordinator.gather_local -> Scheduler
-> a zero-time in-process engine (zswarm.testing.inline) - behind the node's two
front doors: a VoteRequest on its ZMQ ROUTER endpoint (runtime/rpc.py), and
POST /v1/federation/vote (JSON) on its HTTP shim (http/app.py: hypercorn + Starlette).
The client process sends votes over a PeerLink (the federation's DEALER) and over
httpx, 1 and 16 in flight, in the same run. Goals: zmq p50 <= 0.5 ms at 1 in
flight, >= 5x faster than HTTP, >= 10,000 votes/s at 16 in flight.

Also, as the floor under the node's figure: the same PeerLink against a bare trio ROUTER
(the node's own adapter, net/zmq_trio.py) that decodes each VoteRequest and answers a
ready Vote - transport, adapter and codec, none of the node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import trio
from _common import percentile, process_cpu_s, write_results

from zswarm.core.ids import new_request_id, pinned, unpinned
from zswarm.core.messages import (
    Candidate,
    ChatMessage,
    GenerateRequest,
    NodeCard,
    Vote,
    VoteRequest,
)
from zswarm.net.security import SwarmKey, load_key_file, one_off, write_key_file

REQUEST = GenerateRequest(messages=(ChatMessage(role="user", content="What is 6 * 7?"),), n=1)


async def serve() -> None:
    """A node whose workers answer at once (InlinePool): only the vote path is measured.

    Built from the same constructors as zswarm/node.py, with the pool swapped.
    """
    from zswarm.config import parse_config
    from zswarm.http.base import HttpNode
    from zswarm.http.server import open_listener, serve_http
    from zswarm.runtime.context import NodeContext, NoPeers
    from zswarm.runtime.coordinator import Coordinator
    from zswarm.runtime.local import serving
    from zswarm.runtime.models import Models
    from zswarm.runtime.rpc import RpcServer, open_endpoint
    from zswarm.runtime.scheduler import Scheduler
    from zswarm.testing.inline import InlinePool

    cfg = parse_config({"node": {"name": "server", "bind": "127.0.0.1",
                                 "state_dir": "/tmp/zswarm-bench-vote"},
                        "federation": {"enabled": False}})
    creds = one_off(_key())  # the node's own key (and the swarm's, with --keyed)
    sock, endpoint = open_endpoint("tcp://127.0.0.1:0", creds)
    listener = open_listener("127.0.0.1", 0)
    card = NodeCard(node_id=creds.node.node_id, name="server", model_id="scripted",
                    workers=32, rpc=endpoint, pub="", http=listener.getsockname()[1],
                    public=creds.node.public)
    pool = InlinePool(Scheduler(max_queue=1024), workers=32)
    ctx = NodeContext(cfg, card, Models.fixed(pool, "scripted"), key=creds.swarm,
                      creds=creds)
    coordinator = Coordinator(ctx, NoPeers())
    with sock:
        async with trio.open_nursery() as nursery, serving(ctx, ctx.models):
            await nursery.start(RpcServer(ctx, sock, coordinator, NoPeers()).serve)
            await nursery.start(serve_http, HttpNode(ctx, coordinator, NoPeers(), nursery),
                                listener)
            print(json.dumps({"zmq": pinned(endpoint, card.public),
                              "http": f"http://127.0.0.1:{card.http}"}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the client closes our stdin
            nursery.cancel_scope.cancel()


async def serve_floor() -> None:
    """A bare ROUTER on the node's adapter: decode the request, answer a ready Vote."""
    import zmq

    from zswarm.core import codec
    from zswarm.net.zmq_trio import TrioSocket

    creds = one_off(_key())
    sock, endpoint = TrioSocket.bound(zmq.ROUTER, "tcp://127.0.0.1:0", creds=creds)
    answer = [Candidate(text="42", finish_reason="stop", tokens=1)]
    print(json.dumps({"zmq": pinned(endpoint, creds.node.public)}), flush=True)
    with sock:
        async with trio.open_nursery() as nursery:
            async def replies() -> None:
                while True:
                    ident, data = await sock.recv_multipart()
                    msg = codec.decode(data)
                    assert isinstance(msg, VoteRequest)
                    sock.send_multipart([ident, codec.encode(Vote(
                        request_id=msg.request_id, node_id="s", name="server",
                        candidates=answer, elapsed_ms=0.0))])
            nursery.start_soon(replies)
            await trio.to_thread.run_sync(sys.stdin.read)
            nursery.cancel_scope.cancel()


def _key() -> SwarmKey | None:
    """The swarm key of a --keyed run (its file's path in ZSWARM_BENCH_KEY), else None."""
    path = os.environ.get("ZSWARM_BENCH_KEY")
    return load_key_file(Path(path)) if path else None


def _vote_msg() -> tuple[str, VoteRequest]:
    rid = new_request_id()
    return rid, VoteRequest(request_id=rid, request=REQUEST, deadline_ms=5000, origin="bench")


async def bench_zmq(endpoint: str, sequential: int, concurrent: int) -> tuple[list[float], float]:
    from zswarm.net.bus import PeerLink

    target, public = unpinned(endpoint)
    link = PeerLink(target, public, "server", creds=one_off(_key()))
    async with trio.open_nursery() as nursery:
        await nursery.start(link.serve)
        latencies = []
        for i in range(sequential + 200):
            rid, msg = _vote_msg()
            t0 = time.perf_counter()
            reply = await link.request(msg, rid, timeout_s=5.0)
            if i >= 200:  # the first 200 warm up
                latencies.append((time.perf_counter() - t0) * 1000)
            assert isinstance(reply, Vote) and reply.candidates[0].text == "42"

        async def worker(count: int) -> None:
            for _ in range(count):
                rid, msg = _vote_msg()
                await link.request(msg, rid, timeout_s=5.0)

        t0 = time.perf_counter()
        async with trio.open_nursery() as clients:
            for _ in range(16):
                clients.start_soon(worker, concurrent // 16)
        rate = (concurrent // 16 * 16) / (time.perf_counter() - t0)
        nursery.cancel_scope.cancel()
    return latencies, rate


async def bench_new_links(endpoint: str, count: int) -> list[float]:
    """A status round trip on a new link each time (connect, handshake: CURVE with the
    node's key, a ticket in a keyed swarm; one request): what a probe costs, in ms."""
    from zswarm.core.messages import StatusRequest
    from zswarm.net.bus import PeerLink

    target, public = unpinned(endpoint)
    creds = one_off(_key())
    out = []
    for _ in range(count):
        link = PeerLink(target, public, "server", creds=creds, reconnect=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.serve)
            rid = new_request_id()
            t0 = time.perf_counter()
            await link.request(StatusRequest(request_id=rid), rid, timeout_s=5.0)
            out.append((time.perf_counter() - t0) * 1000)
            nursery.cancel_scope.cancel()
    return out


async def bench_http(base: str, sequential: int, concurrent: int) -> tuple[list[float], float]:
    import httpx

    from zswarm.net.security import http_token

    def body() -> dict[str, object]:
        return {"request_id": new_request_id(), "deadline_ms": 5000,
                "request": msgspec.to_builtins(REQUEST)}

    key = _key()
    headers = {"Authorization": f"Bearer {http_token(key)}"} if key is not None else {}
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as http:
        latencies = []
        for i in range(sequential + 50):
            t0 = time.perf_counter()
            r = await http.post("/v1/federation/vote", json=body())
            if i >= 50:
                latencies.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and r.json()["candidates"][0]["text"] == "42"

        async def worker(count: int) -> None:
            for _ in range(count):
                r = await http.post("/v1/federation/vote", json=body())
                assert r.status_code == 200

        t0 = time.perf_counter()
        async with trio.open_nursery() as clients:
            for _ in range(16):
                clients.start_soon(worker, concurrent // 16)
        rate = (concurrent // 16 * 16) / (time.perf_counter() - t0)
    return latencies, rate


@contextlib.contextmanager
def _server(flag: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """This script as a server process (``--serve`` or ``--serve-floor``), stopped after."""
    server = subprocess.Popen([sys.executable, __file__, flag], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield server, json.loads(server.stdout.readline())
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keyed", action="store_true",
                        help="a keyed swarm (CURVE with each node's key and the swarm's "
                        "tickets); without: an open one (CURVE with each node's key)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve or args.serve_floor:
        trio.run(serve_floor if args.serve_floor else serve)
        return
    if args.keyed and "ZSWARM_BENCH_KEY" not in os.environ:
        folder = tempfile.mkdtemp(prefix="zswarm-bench-key-")
        write_key_file(Path(folder) / "swarm.key")
        os.environ["ZSWARM_BENCH_KEY"] = str(Path(folder) / "swarm.key")  # (the servers too)
    seq, conc, http_seq, http_conc = ((2000, 32000, 400, 1600) if args.quick
                                      else (10000, 160000, 2000, 8000))
    with _server("--serve") as (server, endpoints):
        server_cpu0, client_cpu0 = process_cpu_s(server.pid), time.process_time()
        zmq_lat, zmq_rate = trio.run(bench_zmq, endpoints["zmq"], seq, conc)
        votes = seq + 200 + conc // 16 * 16
        server_cpu = (process_cpu_s(server.pid) - server_cpu0) / votes * 1000
        client_cpu = (time.process_time() - client_cpu0) / votes * 1000
        http_lat, http_rate = trio.run(bench_http, endpoints["http"], http_seq, http_conc)
        new_links = trio.run(bench_new_links, endpoints["zmq"], 200 if args.quick else 1000)
    with _server("--serve-floor") as (_, endpoints):
        floor_lat, floor_rate = trio.run(bench_zmq, endpoints["zmq"], seq, conc)
    figures = {
        "zmq_p50_ms": round(percentile(zmq_lat, 50), 3),
        "zmq_p99_ms": round(percentile(zmq_lat, 99), 3),
        "http_p50_ms": round(percentile(http_lat, 50), 3),
        "http_p99_ms": round(percentile(http_lat, 99), 3),
        "zmq_votes_per_s_c16": round(zmq_rate),
        "cpu_ms_per_vote_voter": round(server_cpu, 4),
        "cpu_ms_per_vote_asker_link": round(client_cpu, 4),
        "cpu_ms_per_vote_hop": round(server_cpu + client_cpu, 4),
        "http_votes_per_s_c16": round(http_rate),
        "new_link_status_p50_ms": round(percentile(new_links, 50), 3),
        "floor_p50_ms": round(percentile(floor_lat, 50), 3),
        "floor_votes_per_s_c16": round(floor_rate),
    }
    figures["speedup_vs_http"] = round(figures["http_p50_ms"] / figures["zmq_p50_ms"], 2)
    figures["throughput_ratio_c16"] = round(zmq_rate / http_rate, 2)
    figures["floor_speedup_vs_http"] = round(figures["http_p50_ms"] / figures["floor_p50_ms"], 2)
    write_results("vote_rtt_keyed" if args.keyed else "vote_rtt",
                  {**figures, "keyed": args.keyed, "sequential": seq, "concurrent": conc}, [
        ("zmq vote p50 / p99, 1 in flight (goal p50 <= 0.5 ms)",
         f"{figures['zmq_p50_ms']} / {figures['zmq_p99_ms']} ms"),
        ("http+json vote p50 / p99, 1 in flight",
         f"{figures['http_p50_ms']} / {figures['http_p99_ms']} ms"),
        ("speedup at p50 (goal >= 5x)", f"{figures['speedup_vs_http']}x"),
        ("zmq votes/s, 16 in flight (goal >= 10,000)", f"{figures['zmq_votes_per_s_c16']}"),
        ("http votes/s, 16 in flight", f"{figures['http_votes_per_s_c16']}"),
        ("floor: the same link to a bare ROUTER on the adapter, p50; votes/s at 16; vs HTTP",
         f"{figures['floor_p50_ms']} ms; {figures['floor_votes_per_s_c16']}; "
         f"{figures['floor_speedup_vs_http']}x"),
        ("a new link's first status round trip (its handshake included), p50",
         f"{figures['new_link_status_p50_ms']} ms"),
        ("CPU per vote hop, voter + asker's link (goal <= 0.25 ms)",
         f"{figures['cpu_ms_per_vote_hop']} ms ({figures['cpu_ms_per_vote_voter']} + "
         f"{figures['cpu_ms_per_vote_asker_link']})"),
    ])
    print(json.dumps({k: figures[k] for k in ("zmq_p50_ms", "http_p50_ms", "speedup_vs_http",
                                               "zmq_votes_per_s_c16", "cpu_ms_per_vote_hop",
                                               "floor_p50_ms", "floor_speedup_vs_http")}))


if __name__ == "__main__":
    main()
