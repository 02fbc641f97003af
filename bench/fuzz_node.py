"""Fuzz a live node: hostile frames at its RPC socket and heartbeat subscriber, hostile HTTP.

A `zswarm node` process on loopback takes, from several connections at once:
random and mutated ZeroMQ frames of every message type at its RPC socket
(zswarm.testing.fuzz); garbage heartbeats and votes from a fake static peer that
it subscribes to and asks for votes; random HTTP requests at every route. Meanwhile
a client keeps asking real questions (`--model default`: the real model; `scripted`:
the scripted engine). Then floods, each held for a while as questions go on: mDNS
records of the node's swarm (each a fake node that never answers), and idle TCP
connections to its RPC and HTTP ports; the node runs with a desktop's 1,024 open
files. Reported: frames sent, node alive, questions asked/answered (and answered
during each flood), peak RSS and open files of the node process, peer entries kept
from the flood, HTTP 5xx other than 503/504 (want 0).

    python bench/fuzz_node.py            # 100,000 frames + 3,000 HTTP requests
    python bench/fuzz_node.py --quick    # about a minute, ends with one JSON line
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import zmq
from _common import proc_status_mib, write_results

from zswarm import client
from zswarm.core import codec
from zswarm.core.ids import pinned, unpinned
from zswarm.core.messages import (
    ChatMessage,
    GenerateRequest,
    Heartbeat,
    Load,
    NodeCard,
    SamplingParams,
    Status,
    StatusRequest,
)
from zswarm.net.security import one_off, pin
from zswarm.net.zmq_trio import open_socket
from zswarm.testing.cluster import NodeProcess, node_config
from zswarm.testing.floods import idle_connections, mdns_flood, open_fds
from zswarm.testing.fuzz import FrameFuzzer

#: the node runs with a desktop session's open-file limit (soft and hard)
DESKTOP_FDS = 1024


class FakePeer(threading.Thread):
    """A static peer that answers Status honestly (so the node subscribes to it and asks it
    for votes), answers votes with garbage and publishes garbage between real heartbeats."""

    def __init__(self, swarm: str, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        creds = one_off()  # a key of its own: the node pins it, and the id is its key's
        self.rpc = open_socket(zmq.ROUTER, role="server", creds=creds)
        port = self.rpc.bind_to_random_port("tcp://127.0.0.1")
        self.pub = open_socket(zmq.PUB, role="server", creds=creds)
        pub_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        rpc = f"tcp://127.0.0.1:{port}"
        self.endpoint = pinned(rpc, creds.node.public)  # its address, with its key
        self.card = NodeCard(node_id=creds.node.node_id, name="fake", model_id="scripted",
                             workers=1, rpc=rpc, pub=f"tcp://127.0.0.1:{pub_port}",
                             swarm=swarm, public=creds.node.public)
        self.stop = stop
        self.fuzz = FrameFuzzer(seed)
        self.sent = 0

    def run(self) -> None:
        seq = 0
        try:
            while not self.stop.is_set():
                seq += 1
                self.pub.send(codec.encode(Heartbeat(card=self.card, seq=seq, load=Load(
                    workers_ready=1, idle_workers=1), interval_ms=200)))
                for _ in range(500):  # faster than the node reads: its queue fills up
                    self.pub.send_multipart(next(self.fuzz.frames()))
                    self.sent += 1
                while self.rpc.poll(0):
                    ident, *parts = self.rpc.recv_multipart()
                    try:
                        msg = codec.decode(parts[-1])
                    except Exception:
                        continue
                    if isinstance(msg, StatusRequest):
                        reply = codec.encode(Status(request_id=msg.request_id, card=self.card,
                                                    load=Load(workers_ready=1, idle_workers=1)))
                    else:  # a vote request or anything else: garbage back
                        reply = self.fuzz.frame()
                        self.sent += 1
                    self.rpc.send_multipart([ident, reply])
                time.sleep(0.01)
        finally:
            self.rpc.close()
            self.pub.close()


def fuzz_rpc(endpoint: str, count: int, seed: int, counter: Counter[str],
             stop: threading.Event) -> None:
    sock = open_socket(zmq.DEALER, role="client", creds=one_off())
    sock.setsockopt(zmq.SNDHWM, 1000)
    target, public = unpinned(endpoint)
    pin(sock, public)
    sock.connect(target)
    frames = FrameFuzzer(seed).frames()
    try:
        sent = 0
        while sent < count and not stop.is_set():
            try:
                sock.send_multipart(next(frames), flags=zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
            while sock.poll(0):
                sock.recv_multipart()
                counter["replies"] += 1
        counter["frames"] += sent
    finally:
        sock.close()


def fuzz_http(root: str, count: int, seed: int, statuses: Counter[str]) -> None:
    requests = FrameFuzzer(seed).http_requests()
    with httpx.Client(timeout=30) as http:
        for _ in range(count):
            method, path, headers, body = next(requests)
            try:
                r = http.request(method, root + path, headers=headers,
                                 content=body if method in ("POST", "PUT") else None)
                statuses[str(r.status_code)] += 1
            except httpx.TimeoutException:  # our client gave up (a long generation)
                statuses["client timeout (30 s)"] += 1
            except httpx.HTTPError as exc:  # no response at all: counted against the node
                statuses[f"no response: {type(exc).__name__}"] += 1
                print(f"no response: {method} {path} {headers} {body[:200]!r}: {exc}",
                      file=sys.stderr)


def questions(endpoint: str, stop: threading.Event, result: Counter[str], model: str) -> None:
    want = "Paris" if model == "default" else "42"
    request = GenerateRequest(messages=(ChatMessage(
        role="user", content="What is the capital of France? Answer in one word."),),
        params=SamplingParams(max_tokens=8, temperature=0.0), n=2)
    with client.NodeClient(endpoint) as node:
        while not stop.is_set():
            result["asked"] += 1
            try:
                reply = node.ask(request, strategy="majority", deadline_ms=60_000)
            except Exception as exc:  # counted: the bench reports every failure
                result[f"failed: {type(exc).__name__}: {exc}"[:120]] += 1
                continue
            result["answered"] += 1
            result["right"] += want.lower() in reply.answer.lower()


def floods(proc: NodeProcess, info: dict, swarm: str, records: int, connections: int,
           asked: Counter[str], window_s: float) -> dict:
    """mDNS records of this swarm, then idle TCP connections to the RPC and HTTP ports, each
    held for ``window_s`` while the question thread keeps asking; the node runs with a
    desktop's 1,024 open files."""
    out: dict[str, object] = {}

    def hold(name: str) -> None:
        before = asked["answered"]
        peak = 0
        end = time.monotonic() + window_s  # a measurement window, not a synchronisation
        while time.monotonic() < end and proc.proc.poll() is None:
            peak = max(peak, open_fds(proc.pid))
            time.sleep(0.1)
        out[f"{name}_answered_meanwhile"] = asked["answered"] - before
        out[f"{name}_peak_fds"] = peak

    with mdns_flood(records, swarm=swarm, tag="flood"):
        hold("mdns")
        try:
            listed = client.peers(info.rpc_endpoint, timeout_s=5).peers
            out["mdns_entries_kept"] = sum(p.name.startswith("flood") for p in listed)
        except Exception as exc:  # reported: the node did not answer
            out["mdns_entries_kept"] = f"no answer: {exc}"
    out["mdns_records"] = records
    for name, port in (("rpc_idle", int(unpinned(info.rpc_endpoint)[0].rsplit(":", 1)[1])),
                       ("http_idle", int(info.http_port))):
        with idle_connections(port, connections) as conns:
            out[f"{name}_connections"] = len(conns)
            hold(name)
    return out


def watch(proc: NodeProcess, gone: threading.Event, done: threading.Event) -> None:
    """Stop the fuzzers if the node dies (they would wait for it forever)."""
    while not done.is_set():
        if proc.proc.poll() is not None:
            gone.set()
            return
        time.sleep(0.2)


def run(frames: int, http_requests: int, connections: int, model: str, seed: int,
        records: int, idle: int, window_s: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="zswarm-fuzz-"))
    swarm = "fuzz-" + secrets.token_hex(4)
    stop_peer = threading.Event()
    peer = FakePeer(swarm, stop_peer, seed)
    peer.start()
    answers = None if model == "default" else ["42"]
    cfg = node_config(work, "target", swarm=swarm, answers=answers,
                      federation={"discovery": "both", "peers": [peer.endpoint],
                                  "deadline_ms": 2000})
    proc = NodeProcess(cfg, max_fds=DESKTOP_FDS)
    try:
        info = proc.wait_ready(120)
        rss_start = proc_status_mib(proc.pid)
        counter: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        asked: Counter[str] = Counter()
        stop_questions = threading.Event()
        asker = threading.Thread(target=questions, args=(info.rpc_endpoint, stop_questions,
                                                         asked, model))
        asker.start()
        t0 = time.monotonic()
        node_gone = threading.Event()
        watchdog = threading.Thread(target=watch, args=(proc, node_gone, stop_questions),
                                    daemon=True)
        watchdog.start()
        workers = [threading.Thread(target=fuzz_rpc, args=(
            info.rpc_endpoint, frames // connections, seed + i, counter, node_gone))
            for i in range(connections)]
        workers.append(threading.Thread(target=fuzz_http, args=(
            f"http://127.0.0.1:{info.http_port}", http_requests, seed, statuses)))
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        elapsed = time.monotonic() - t0
        flooded = floods(proc, info, swarm, records, idle, asked, window_s) \
            if records and not node_gone.is_set() else {}
        stop_questions.set()
        asker.join(120)
        alive = proc.proc.poll() is None
        try:
            client.status(info.rpc_endpoint, timeout_s=5)
            answers_status = True
        except Exception:
            answers_status = False
        bad_5xx = sum(n for code, n in statuses.items() if code.startswith("no response")
                      or (code.isdigit() and int(code) >= 500 and code not in ("503", "504")))
        failures = {k: v for k, v in asked.items() if k.startswith("failed")}
        return {
            "frames_sent": counter["frames"] + peer.sent, "rpc_frames": counter["frames"],
            "peer_frames": peer.sent, "rpc_replies": counter["replies"],
            "http_requests": sum(statuses.values()), "http_5xx": bad_5xx,
            "http_statuses": dict(sorted(statuses.items())),
            "node_alive": alive and answers_status,
            "questions_asked": asked["asked"], "questions_answered": asked["answered"],
            "questions_right": asked["right"], "question_failures": failures,
            "node_rss_start_mib": round(rss_start, 1),
            "node_peak_rss_mib": round(proc_status_mib(proc.pid), 1) if alive else None,
            "seconds": round(elapsed, 1), "model": model, "connections": connections,
            "max_fds": DESKTOP_FDS, **flooded,
        }
    finally:
        stop_peer.set()
        proc.stop()
        peer.join(5)
        if proc.proc.returncode not in (0, None):
            print(proc.log()[-3000:], file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--http", type=int, default=None)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--model", choices=["default", "scripted"], default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--records", type=int, default=None,
                        help="mDNS records in the flood (0: no floods)")
    parser.add_argument("--idle", type=int, default=1_100,
                        help="idle connections to each of the RPC and HTTP ports")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/results")
    args = parser.parse_args()
    frames = args.frames or (30_000 if args.quick else 100_000)
    http_requests = args.http or (1_000 if args.quick else 3_000)
    records = args.records if args.records is not None else (1_200 if args.quick else 3_000)
    figures = run(frames, http_requests, args.connections, args.model, args.seed, records,
                  args.idle, 5.0 if args.quick else 15.0)
    if not args.no_results:
        write_results("fuzz_node" + ("_quick" if args.quick else ""), figures, [
            ("frames sent (rpc + fake peer)", f"{figures['frames_sent']}"),
            ("HTTP requests / 5xx other than 503, 504", f"{figures['http_requests']} / "
                                                         f"{figures['http_5xx']}"),
            ("node alive", f"{figures['node_alive']}"),
            ("questions asked / answered", f"{figures['questions_asked']} / "
                                           f"{figures['questions_answered']}"),
            ("node peak RSS, MiB (start)", f"{figures['node_peak_rss_mib']} "
                                           f"({figures['node_rss_start_mib']})"),
            *((k.replace("_", " "), str(v)) for k, v in figures.items()
              if k.startswith(("mdns_", "rpc_idle_", "http_idle_"))),
        ])
    print(json.dumps({k: figures[k] for k in (
        "frames_sent", "node_alive", "questions_asked", "questions_answered", "http_requests",
        "http_5xx", "node_peak_rss_mib", "seconds", *(k for k in figures if k.startswith((
            "mdns_", "rpc_idle_", "http_idle_"))))}))
    ok = figures["node_alive"] and figures["http_5xx"] == 0 and \
        figures["questions_answered"] == figures["questions_asked"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
