"""Pulling a model over the swarm: rate against a plain TCP copy, the serving node's answers
meanwhile, and `zswarm join` from an empty state dir to the first answer.

Side by side in one run, the default model file (98 MB):
- pull rate (zswarm/pull.py: pieces over ZeroMQ, each hashed, in order to NAME.part, the
  whole file hashed at the end) against a plain TCP socket copy of the same file to a
  file, over loopback and, where network namespaces can be built (root), over a veth
  pair through a bridge (the copy and the pull both run inside the namespaces);
- the serving node's answer latency (one question, 16 tokens) while pulls run back to
  back, against idle;
- `zswarm join ADDRESS` on an empty state dir: written config, pull at start, ready,
  first answer.

Goals (issue 18): pull >= 0.8x the plain copy; answers during a transfer <= 1.2x idle.

    python bench/pull.py            # 3 rounds
    python bench/pull.py --quick    # 1 round, ends with one JSON line
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import median, write_results

from zswarm import client
from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams
from zswarm.engines.models import resolve_model
from zswarm.pull import pull
from zswarm.testing.cluster import NodeProcess, free_port, node_config

MODEL = resolve_model("default")
REAL = {"model": {"path": "default", "n_ctx": 512}}
TCP_COPY = r"""
import socket, sys, time
mode, host, port, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if mode == "serve":
    srv = socket.create_server((host, port))
    print("ready", flush=True)
    conn, _ = srv.accept()
    with open(path, "rb") as f:
        conn.sendfile(f)
    conn.close()
else:
    t0 = time.perf_counter()
    s = socket.create_connection((host, port))
    with open(path, "wb") as out:
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            out.write(data)
    print(time.perf_counter() - t0)
"""


def tcp_copy_s(host: str, port: int, dest: Path, wrap: list[list[str]] | None = None) -> float:
    """Seconds to copy the model over one TCP connection into ``dest`` (a plain copy)."""
    server_cmd = [sys.executable, "-c", TCP_COPY, "serve", host, str(port), str(MODEL.path)]
    client_cmd = [sys.executable, "-c", TCP_COPY, "get", host, str(port), str(dest)]
    if wrap:
        server_cmd, client_cmd = wrap[0] + server_cmd, wrap[1] + client_cmd
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        out = subprocess.run(client_cmd, capture_output=True, text=True, timeout=120, check=True)
        return float(out.stdout.strip())
    finally:
        server.wait(10)


def pull_s(member: str, directory: Path) -> float:
    shutil.rmtree(directory, ignore_errors=True)
    t0 = time.perf_counter()
    pull(member, MODEL.model_id, directory)
    return time.perf_counter() - t0


def ask_ms(endpoint: str) -> float:
    request = GenerateRequest(messages=(ChatMessage(role="user", content="Name a colour."),),
                              params=SamplingParams(temperature=0.0, max_tokens=16,
                                                    ignore_eos=True))
    t0 = time.perf_counter()
    client.ask(endpoint, request, strategy="first_valid", deadline_ms=60_000)
    return (time.perf_counter() - t0) * 1000


def loopback(work: Path, rounds: int) -> dict[str, float]:
    cfg = node_config(work, "server", swarm="bench-pull", **REAL)
    with NodeProcess(cfg) as node:
        node.wait_ready(120)
        pulls = [pull_s(node.rpc, work / "pulled") for _ in range(rounds)]
        copies = [tcp_copy_s("127.0.0.1", free_port(), work / "copy.bin") for _ in range(rounds)]
        for _ in range(3):
            ask_ms(node.rpc)  # warm
        idle = [ask_ms(node.rpc) for _ in range(10 * rounds)]
        stop = threading.Event()
        busy_pulls = [0]

        def keep_pulling() -> None:
            while not stop.is_set():
                pull_s(node.rpc, work / "busy")
                busy_pulls[0] += 1

        puller = threading.Thread(target=keep_pulling)
        puller.start()
        try:
            time.sleep(0.2)  # the first pieces are flowing
            during = [ask_ms(node.rpc) for _ in range(10 * rounds)]
        finally:
            stop.set()
            puller.join()
    size_mb = MODEL.size_bytes / 1e6
    return {"loopback_pull_mb_s": round(size_mb / median(pulls), 1),
            "loopback_copy_mb_s": round(size_mb / median(copies), 1),
            "loopback_ratio": round(median(copies) / median(pulls), 2),
            "answer_idle_ms": round(median(idle), 1),
            "answer_during_pull_ms": round(median(during), 1),
            "answer_ratio": round(median(during) / median(idle), 2),
            "pulls_during_answers": busy_pulls[0]}


def veth(work: Path, rounds: int) -> dict[str, object]:
    """The same over a veth pair and a bridge (network namespaces), if they can be built."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
    from netns import Lan, netns_available  # type: ignore[import-not-found]

    why = netns_available()
    if why is not None:
        return {"veth": f"not measured: {why}"}
    with Lan(2) as lan:
        server_host, puller_host = lan.names
        address = lan.addresses[server_host]
        cfg = node_config(work, "vserver", swarm="bench-pull-ns", bind=address, **REAL)
        with NodeProcess(cfg, netns=server_host) as node:
            node.wait_ready(120)
            pulls = []
            for _ in range(rounds):
                shutil.rmtree(work / "vpulled", ignore_errors=True)
                out = subprocess.run(
                    ["ip", "netns", "exec", puller_host, sys.executable, "-m", "zswarm", "pull",
                     MODEL.model_id, "--node", node.rpc, "--dir", str(work / "vpulled"),
                     "--json"], capture_output=True, text=True, timeout=300, check=True)
                pulls.append(float(json.loads(out.stdout)["seconds"]))
        wrap = [["ip", "netns", "exec", server_host], ["ip", "netns", "exec", puller_host]]
        copies = [tcp_copy_s(address, 18000 + i, work / "vcopy.bin", wrap)
                  for i in range(rounds)]
    size_mb = MODEL.size_bytes / 1e6
    return {"veth_pull_mb_s": round(size_mb / median(pulls), 1),
            "veth_copy_mb_s": round(size_mb / median(copies), 1),
            "veth_ratio": round(median(copies) / median(pulls), 2)}


def join_to_answer(work: Path) -> float:
    """Seconds from `zswarm join` on an empty state dir to the first answer."""
    cfg = node_config(work, "member", swarm="bench-join", **REAL)
    with NodeProcess(cfg) as member:
        member.wait_ready(120)
        fresh = work / "fresh"
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        config = fresh / "swarm.toml"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "zswarm", "join", member.rpc, "--no-start",
                        "--state-dir", str(fresh / "state"), "--config", str(config)],
                       check=True, capture_output=True, timeout=60)
        # this bench's own ports and loopback (the defaults may be taken on this machine)
        config.write_text(config.read_text().replace('bind = "auto"', 'bind = "127.0.0.1"')
                          + f"\n[ports]\nrpc = {free_port()}\npub = 0\nhttp = 0\n")
        with NodeProcess(config) as node:
            node.wait_ready(180)
            ask_ms(node.rpc)
            return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    work = Path(tempfile.mkdtemp(prefix="zswarm-pull-"))
    try:
        figures: dict[str, object] = {**loopback(work, rounds), **veth(work, rounds),
                                      "join_to_first_answer_s": round(join_to_answer(work), 2),
                                      "model_mb": round(MODEL.size_bytes / 1e6, 1),
                                      "rounds": rounds}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results("pull" + ("_quick" if args.quick else ""), figures, [
        ("pull over loopback / plain TCP copy (goal >= 0.8)",
         f"{figures['loopback_ratio']} ({figures['loopback_pull_mb_s']} vs "
         f"{figures['loopback_copy_mb_s']} MB/s)"),
        ("pull over a veth pair / plain TCP copy (goal >= 0.8)",
         f"{figures.get('veth_ratio', figures.get('veth'))} "
         f"({figures.get('veth_pull_mb_s')} vs {figures.get('veth_copy_mb_s')} MB/s)"),
        ("serving node's answer during pulls / idle (goal <= 1.2)",
         f"{figures['answer_ratio']} ({figures['answer_during_pull_ms']} vs "
         f"{figures['answer_idle_ms']} ms)"),
        ("zswarm join on an empty state dir to the first answer (s)",
         str(figures["join_to_first_answer_s"])),
    ])
    print(json.dumps(figures))


if __name__ == "__main__":
    socket.setdefaulttimeout(120)
    main()
