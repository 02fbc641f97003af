"""Three hosts in network namespaces built by the test itself: real mDNS, ZeroMQ and processes.

Every node is a `zswarm node` process inside its own namespace; the CLI runs
inside the namespaces too. Skipped, with the reason, where namespaces cannot be built.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from zswarm.testing.cluster import NodeProcess, address_of, node_config, wait_until

from .netns import Lan, netns_available, peers, run_cli, states

_why = netns_available()
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""), pytest.mark.timeout(180)]

INTERVAL_S = 0.2
LIVENESS = 3


@pytest.fixture(scope="module")
def lan():
    with Lan(3) as lan:
        yield lan


def ask(host: str, node: NodeProcess, n: int, strategy: str) -> dict[str, Any]:
    out = run_cli(host, "ask", "What is 6 * 7?", "--n", str(n), "--strategy", strategy,
                  "--json", "--node", node.rpc)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class Nodes:
    def __init__(self, lan: Lan, tmp: Path, specs: dict[str, dict[str, Any]], swarm: str) -> None:
        self.lan = lan
        self.hosts: dict[str, str] = {}
        self.procs: dict[str, NodeProcess] = {}
        for (name, spec), host in zip(specs.items(), lan.names, strict=False):
            cfg = node_config(tmp, name, swarm=swarm, bind=lan.addresses[host], **spec)
            self.hosts[name] = host
            self.procs[name] = NodeProcess(cfg, netns=host)
        for proc in self.procs.values():
            proc.wait_ready(60)

    def __getitem__(self, name: str) -> NodeProcess:
        return self.procs[name]

    def wait_states(self, name: str, want: dict[str, str], timeout_s: float = 10) -> float:
        """Wait until node ``name`` sees ``want``; return how long it took."""
        t0 = time.monotonic()
        wait_until(lambda: all(states(self.hosts[name], self[name]).get(k) == v
                               for k, v in want.items()),
                   timeout_s, what=f"{name} sees {want}", interval_s=0.05)
        return time.monotonic() - t0

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture
def nodes(lan, tmp_path, request):
    made: list[Nodes] = []

    def make(specs: dict[str, dict[str, Any]]) -> Nodes:
        made.append(Nodes(lan, tmp_path, specs, f"ns-{request.node.name[:40]}"))
        return made[-1]

    yield make
    for group in made:
        group.stop()


def test_discovery_and_a_federated_ask_with_each_strategy(nodes, lan):
    # one "model" on every host (the same script: candidate i answers the i-th text with
    # its score), so a node that checks a peer's score finds the peer's own figure
    same = {"answers": ["42", "The answer is 42", "41"],
            "script": {"mean_logprob": [-1.0, -0.5, -0.1]}}
    swarm = nodes({"a": same, "b": same, "c": same})
    swarm.wait_states("a", {"b": "alive", "c": "alive"})
    assert "OPEN HTTP" in swarm["a"].log()  # a LAN address, no key: it says so
    table = peers(swarm.hosts["a"], swarm["a"])
    assert table["c"]["address"] == lan.addresses[swarm.hosts["c"]]
    assert table["c"]["rtt_ms"] is not None and table["c"]["model"] == "scripted"
    majority = ask(swarm.hosts["a"], swarm["a"], 3, "majority")
    assert "42" in majority["answer"]
    best = ask(swarm.hosts["a"], swarm["a"], 3, "best_of_n")
    assert best["answer"] == "41" and best["candidates"][best["winner"]]["node"] in ("b", "c")
    assert sorted(c["node"] for c in best["candidates"]) == ["a", "b", "c"]
    vote = ask(swarm.hosts["a"], swarm["a"], 3, "weighted_vote")
    assert vote["answer"] in ("42", "The answer is 42")
    first = ask(swarm.hosts["a"], swarm["a"], 3, "first_valid")
    assert first["answer"] in ("42", "The answer is 42", "41")
    routed = ask(swarm.hosts["b"], swarm["b"], 1, "route")
    assert routed["strategy"] == "route" and len(routed["candidates"]) == 1
    browse = run_cli(swarm.hosts["c"], "peers", "--browse", "2", "--json")
    assert browse.returncode == 0, browse.stderr
    assert {"a", "b", "c"} <= {p["name"] for p in json.loads(browse.stdout)}


def test_sigkill_mid_vote_is_answered_by_the_others_and_the_node_is_dead_in_time(nodes):
    swarm = nodes({"a": {"answers": ["42"]}, "b": {"answers": ["42"]},
                   "c": {"answers": ["41"], "delay_ms": 5000}})
    swarm.wait_states("a", {"b": "alive", "c": "alive"})
    asking = subprocess.Popen(
        ["ip", "netns", "exec", swarm.hosts["a"], sys.executable, "-m", "zswarm", "ask", "q",
         "--n", "3", "--strategy", "best_of_n", "--json", "--node", swarm["a"].rpc],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: peers(swarm.hosts["a"], swarm["a"])["c"]["load"]["idle_workers"] == 0,
                   20, what="c busy with the vote")
        swarm["c"].signal(signal.SIGKILL)
        out, err = asking.communicate(timeout=30)
    finally:
        if asking.poll() is None:
            asking.kill()
            asking.wait()
    assert asking.returncode == 0, err
    report = json.loads(out)
    assert sorted(c["node"] for c in report["candidates"]) == ["a", "b"]
    (c,) = [p for p in report["participants"] if p["node"] == "c"]
    # failed as its link went down: not waited for (its answer was 5 s away)
    assert c["outcome"] == "failed" and "died" in c["detail"]
    swarm.wait_states("a", {"c": "dead"})


def test_sigstop_of_a_peer_respects_the_deadline(nodes):
    swarm = nodes({"a": {"answers": ["42"], "federation": {"deadline_ms": 1500}},
                   "b": {"answers": ["42"]}, "c": {"answers": ["42"]}})
    swarm.wait_states("a", {"b": "alive", "c": "alive"})
    swarm["c"].signal(signal.SIGSTOP)
    try:
        report = ask(swarm.hosts["a"], swarm["a"], 3, "best_of_n")
        # c is either already DEAD when the request is planned (a and b share its share)
        # or asked and never answers (timeout, or failed once it is declared DEAD)
        assert {c["node"] for c in report["candidates"]} == {"a", "b"}
        (c,) = [p for p in report["participants"] if p["node"] == "c"] or [None]
        assert c is None or c["outcome"] in ("timeout", "failed")
        assert c is None or c["outcome"] == "failed" or c["detail"] == "no vote within 1.5 s"
        swarm.wait_states("a", {"c": "dead"})
    finally:
        swarm["c"].signal(signal.SIGCONT)
    swarm.wait_states("a", {"c": "alive"})


def test_split_brain_both_sides_serve_and_heal(nodes, lan):
    swarm = nodes({"a": {"answers": ["42"]}, "b": {"answers": ["42"]}, "c": {"answers": ["41"]}})
    swarm.wait_states("a", {"b": "alive", "c": "alive"})
    swarm.wait_states("c", {"a": "alive", "b": "alive"})
    lan.split(swarm.hosts["c"])
    split_at = time.monotonic()
    try:
        swarm.wait_states("a", {"c": "dead", "b": "alive"})
        swarm.wait_states("c", {"a": "dead", "b": "dead"})
        big = ask(swarm.hosts["a"], swarm["a"], 3, "majority")
        assert big["answer"] == "42" and {c["node"] for c in big["candidates"]} <= {"a", "b"}
        small = ask(swarm.hosts["c"], swarm["c"], 2, "majority")
        assert small["answer"] == "41" and {c["node"] for c in small["candidates"]} == {"c"}
    finally:
        lan.heal(swarm.hosts["c"])
        split_s = time.monotonic() - split_at
    # DEAD peers are not listened to but probed with a doubling back-off, so the next
    # probe comes at most about as long after the heal as the peer had been dead
    bound = split_s + INTERVAL_S * LIVENESS + 10
    took = max(swarm.wait_states("a", {"c": "alive"}, timeout_s=bound),
               swarm.wait_states("c", {"a": "alive"}, timeout_s=bound))
    print(f"split for {split_s:.2f} s, healed in {took:.2f} s")


def test_static_peers_without_mdns(nodes, lan, tmp_path):
    hosts = lan.names
    fixed = {"ports": {"rpc": 17617, "pub": 17616}}
    endpoints = [address_of(tmp_path, n, f"tcp://{lan.addresses[h]}:17617")
                 for n, h in zip(("a", "b", "c"), hosts, strict=False)]
    swarm = nodes({name: {"answers": [f"from {name}"], **fixed,
                          "federation": {"discovery": "static", "peers": endpoints}}
                   for name in ("a", "b", "c")})
    swarm.wait_states("a", {"b": "alive", "c": "alive"})
    assert "OPEN HTTP" in swarm["a"].log()  # a LAN address, no key: it says so
    table = peers(swarm.hosts["a"], swarm["a"])
    assert {p["source"] for p in table.values()} <= {"static", "heartbeat", "contact"}
    report = ask(swarm.hosts["a"], swarm["a"], 3, "best_of_n")
    assert sorted(c["node"] for c in report["candidates"]) == ["a", "b", "c"]
