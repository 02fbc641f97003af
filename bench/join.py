"""Joining on networks that are not a flat LAN: seconds until a newcomer is ALIVE at every
member and until another node's ask uses its candidates, per topology (issue 26).

Three hosts in network namespaces built here (root only; the bench says why not and
stops otherwise), nftables rules inside them, `zswarm node` processes with scripted
engines (joining does not depend on the model) and the default 1 s heartbeat interval.
a starts alone, b joins by a's address (a static peer, as `zswarm join` writes), then
the newcomer c does the same. Topologies:

- ``no-multicast``: multicast dropped on every host (no mDNS anywhere);
- ``no-multicast+firewall``: the same, and c refuses inbound TCP (a laptop's firewall);
- ``flat+firewall``: mDNS works, c refuses inbound TCP;
- ``readdress``: multicast dropped; b restarts at another address (the "newcomer" is b).

For each, from the moment the newcomer is healthy (its node.json written): the seconds
until it is ALIVE at each member (add ``healthy_after_start_s`` for the time from the
start of its process), and until a member's ask (n=3, best_of_n, asked every
0.2 s inside that member's namespace) gets a candidate from it. Then, all ALIVE, the CPU
a and c spend over 20 s (c reached over its own link, against c reached directly), and
the bytes of one heartbeat sent over a link. Goals: ALIVE everywhere <= 5 s, a changed
address back <= 10 s.

    sudo .venv/bin/python bench/join.py           # every topology, 3 rounds
    sudo .venv/bin/python bench/join.py --quick   # 1 round; ends with one JSON line
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import median, process_cpu_s, write_results

from zswarm.core import codec
from zswarm.core.messages import Heartbeat, Load, NodeCard
from zswarm.testing.cluster import NodeProcess, node_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e.netns: the LAN
from tests.e2e.netns import Lan, netns_available  # noqa: E402

RPC, PUB = 17617, 17616
TOPOLOGIES = ("no-multicast", "no-multicast+firewall", "flat+firewall", "readdress")
CPU_WINDOW_S = 20.0
#: runs inside a member's namespace: when does TARGET turn ALIVE, when is it first used
WATCH = r"""
import sys, time
from zswarm import client
from zswarm.config import load_config
from zswarm.core.messages import ChatMessage, GenerateRequest
from zswarm.net.security import swarm_key
rpc, target, config, address = sys.argv[1:5]
cfg = load_config(config)
key = swarm_key(cfg.security.swarm_key_file, source=cfg.source)
end = time.time() + 60
while time.time() < end:
    try:
        peers = client.peers(rpc, key=key, timeout_s=2).peers
    except Exception:
        peers = []
    if any(p.name == target and p.state == "alive" and (address == "-" or p.address == address)
           for p in peers):
        print("alive", time.time(), flush=True)
        break
    time.sleep(0.05)
question = GenerateRequest(messages=(ChatMessage(role="user", content="q"),), n=3)
while time.time() < end:
    try:
        reply = client.ask(rpc, question, strategy="best_of_n", deadline_ms=5000, key=key)
        if any(c.node == target for c in reply.report.candidates):
            print("used", time.time(), flush=True)
            break
    except Exception:
        pass
    time.sleep(0.2)
"""


class Run:
    def __init__(self, lan: Lan, tmp: Path, topology: str) -> None:
        self.lan, self.tmp, self.topology = lan, tmp, topology
        self.hosts = dict(zip("abc", lan.names, strict=True))
        self.procs: dict[str, NodeProcess] = {}
        self.configs: dict[str, Path] = {}

    def start(self, name: str) -> tuple[float, float]:
        """(when the process was started, when it was healthy), wall clock."""
        launched = time.time()
        first = f"tcp://{self.lan.addresses[self.hosts['a']]}:{RPC}"
        self.configs[name] = node_config(
            self.tmp, name, swarm=f"bench-join-{self.topology}",
            bind=self.lan.addresses[self.hosts[name]], answers=[f"from {name}"],
            ports={"rpc": RPC, "pub": PUB, "http": 0},
            federation={"heartbeat_interval_ms": 1000, "peers": [] if name == "a" else [first]})
        log = self.configs[name].with_name(f"node-{time.monotonic_ns()}.log")
        self.procs[name] = NodeProcess(self.configs[name], netns=self.hosts[name], log_path=log)
        self.procs[name].wait_ready(60)
        return launched, time.time()

    def watch(self, member: str, target: str, address: str = "-") -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.hosts[member], sys.executable, "-c",
                                 WATCH, self.procs[member].rpc, target,
                                 str(self.configs[member]), address],
                                stdout=subprocess.PIPE, text=True)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def one(topology: str) -> dict[str, Any]:
    with Lan(3) as lan, tempfile.TemporaryDirectory() as tmp:
        run = Run(lan, Path(tmp), topology)
        try:
            if topology != "flat+firewall":
                for host in lan.names:
                    lan.drop_multicast(host)
            if topology.endswith("firewall"):
                lan.refuse_inbound(run.hosts["c"])
            run.start("a")
            run.start("b")
            if topology == "readdress":
                run.start("c")
                for member in ("a", "c"):  # b known and used everywhere before it moves
                    run.watch(member, "b").communicate(timeout=90)
                run.procs["b"].stop()
                old, new = lan.addresses[run.hosts["b"]], "10.77.0.77"
                lan.readdress(run.hosts["b"], new)
                run.configs["b"].write_text(run.configs["b"].read_text().replace(old, new))
                newcomer, members, address = "b", ("a", "c"), new
                launched, ready = run.start("b")
            else:
                newcomer, members, address = "c", ("a", "b"), "-"
            watchers = {m: run.watch(m, newcomer, address) for m in members}
            if topology != "readdress":
                launched, ready = run.start("c")
            result: dict[str, Any] = {"topology": topology,
                                      "healthy_after_start_s": round(ready - launched, 2)}
            for member, proc in watchers.items():
                out, _ = proc.communicate(timeout=90)
                marks = dict(line.split() for line in out.splitlines() if line.strip())
                result[f"alive_at_{member}_s"] = (round(float(marks["alive"]) - ready, 2)
                                                  if "alive" in marks else None)
                result[f"used_by_{member}_s"] = (round(float(marks["used"]) - ready, 2)
                                                 if "used" in marks else None)
            alive = [v for k, v in result.items() if k.startswith("alive_at")]
            result["alive_everywhere_s"] = None if None in alive else max(alive)
            if topology in ("no-multicast", "no-multicast+firewall"):
                t0 = {n: process_cpu_s(run.procs[n].pid) for n in ("a", "c")}
                time.sleep(CPU_WINDOW_S)  # a measurement window, not a wait for a condition
                for n in ("a", "c"):
                    used = process_cpu_s(run.procs[n].pid) - t0[n]
                    result[f"cpu_ms_per_s_{n}"] = round(used / CPU_WINDOW_S * 1000, 2)
            return result
        finally:
            run.stop()


def heartbeat_bytes() -> int:
    card = NodeCard(node_id="0123456789abcdef", name="laptop", model_id="SmolLM2-135M-Instruct."
                    "Q4_1@" + "0" * 12, workers=1, rpc="tcp://192.168.1.23:17617",
                    pub="tcp://192.168.1.23:17616", http=17615, swarm="home",
                    hardware="8 cpu, 16 GiB", key="0123456789abcdef",
                    public="0123456789abcdef" * 4)
    return len(codec.encode(Heartbeat(card=card, seq=12345, load=Load(workers_ready=1,
                                                                     idle_workers=1))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    why = netns_available()
    if why:
        sys.exit(f"bench/join.py needs network namespaces: {why}")
    rounds = 1 if args.quick else args.rounds
    rows = []
    for topology in TOPOLOGIES:
        runs = [one(topology) for _ in range(rounds)]
        row: dict[str, Any] = {"topology": topology, "rounds": rounds}
        for key in runs[0]:
            if key == "topology":
                continue
            values = [r[key] for r in runs]
            row[key] = None if None in values else round(median(values), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    direct = next(r for r in rows if r["topology"] == "no-multicast")
    reverse = next(r for r in rows if r["topology"] == "no-multicast+firewall")
    summary = {
        "bench": "join", "rounds": rounds, "heartbeat_bytes": heartbeat_bytes(),
        "alive_everywhere_s": {r["topology"]: r["alive_everywhere_s"] for r in rows},
        "used_by_a_s": {r["topology"]: r["used_by_a_s"] for r in rows},
        "reverse_cpu_ms_per_s_a": [direct["cpu_ms_per_s_a"], reverse["cpu_ms_per_s_a"]],
        "reverse_cpu_ms_per_s_c": [direct["cpu_ms_per_s_c"], reverse["cpu_ms_per_s_c"]],
        "goal_alive_5s": all(r["alive_everywhere_s"] is not None and r["alive_everywhere_s"] <= 5
                             for r in rows if r["topology"] != "readdress"),
        "goal_readdress_10s": (lambda v: v is not None and v <= 10)(
            next(r for r in rows if r["topology"] == "readdress")["alive_everywhere_s"]),
    }
    table = [(f"{r['topology']}: ALIVE everywhere / used by a (s)",
              f"{r['alive_everywhere_s']} / {r['used_by_a_s']}") for r in rows]
    table.append(("heartbeat over a link (bytes)", str(summary["heartbeat_bytes"])))
    table.append(("CPU ms/s of a, c direct vs over its own link",
                  f"{direct['cpu_ms_per_s_a']} vs {reverse['cpu_ms_per_s_a']}"))
    table.append(("CPU ms/s of c, direct vs over its own link",
                  f"{direct['cpu_ms_per_s_c']} vs {reverse['cpu_ms_per_s_c']}"))
    write_results("join" + ("_quick" if args.quick else ""), {"rows": rows, "summary": summary},
                  table)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
