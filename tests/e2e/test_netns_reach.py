"""Membership on networks that are not a flat LAN (issue 26), in namespaces the test builds.

Three hosts a, b, c; b and c were joined by a's address (static peer, as `zswarm join`
writes), with mDNS on as by default. The topologies, each open and with a swarm key:
multicast dropped on every host; the same with c refusing inbound TCP (a laptop's
firewall); a flat LAN where mDNS works and c refuses inbound TCP; multicast dropped and b
restarting at another address. In each, every node sees every other ALIVE and an ask
with n=6 at each node gets candidates from all three. nftables comes from Debian's
package (installed here when missing); skipped, with the reason, where namespaces
cannot be built.
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

from tests.debian import need
from zswarm.testing.cluster import NodeProcess, address_of, node_config, wait_until

from .netns import Lan, netns_available, run_cli

_why = netns_available()
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""), pytest.mark.timeout(240)]

NAMES = ("a", "b", "c")
RPC, PUB = 17617, 17616


@pytest.fixture
def nft() -> str:
    return need(("nftables",), ("nft",))["nft"]


class Swarm:
    """Nodes a, b, c on hosts 0, 1, 2 of a fresh LAN; b and c know a's address only."""

    def __init__(self, lan: Lan, tmp: Path, *, keyed: bool, name: str) -> None:
        self.lan, self.tmp = lan, tmp
        self.hosts = dict(zip(NAMES, lan.names, strict=True))
        self.security: dict[str, Any] = {}
        if keyed:
            key = tmp / "swarm.key"
            subprocess.run([sys.executable, "-m", "zswarm", "keygen", "--out", str(key)], check=True,
                           capture_output=True)
            self.security = {"security": {"swarm_key_file": str(key)}}
        self.swarm = f"reach-{name[:40]}"
        self.configs: dict[str, Path] = {}
        self.procs: dict[str, NodeProcess] = {}

    def start(self, name: str) -> NodeProcess:
        host = self.hosts[name]
        first = address_of(self.tmp, "a", f"tcp://{self.lan.addresses[self.hosts['a']]}:{RPC}")
        self.configs[name] = node_config(
            self.tmp, name, swarm=self.swarm, bind=self.lan.addresses[host],
            answers=[f"from {name}"], ports={"rpc": RPC, "pub": PUB, "http": 0},
            # a's interval differs from the others' (a hand-written config beside joined
            # ones): a peer is judged by its own interval, whichever way it is reached
            federation={"heartbeat_interval_ms": 400 if name == "a" else 1000,
                        "peers": [] if name == "a" else [first]}, **self.security)
        proc = self.procs[name] = NodeProcess(self.configs[name], netns=host)
        proc.wait_ready(60)
        return proc

    def cli(self, name: str, *args: str) -> Any:
        out = run_cli(self.hosts[name], *args, "--json", "--config", str(self.configs[name]),
                      "--node", self.procs[name].rpc, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def peers(self, name: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.cli(name, "peers")}

    def wait_all_alive(self, timeout_s: float = 30) -> None:
        for name in NAMES:
            others = set(NAMES) - {name}
            wait_until(lambda n=name, o=others: all(
                self.peers(n).get(k, {}).get("state") == "alive" for k in o),
                timeout_s, what=f"{name} sees {sorted(others)} alive", interval_s=0.25)

    def ask_everywhere(self) -> None:
        for name in NAMES:  # (still alive everywhere: nobody flapped meanwhile)
            assert all(p["state"] == "alive" for p in self.peers(name).values()), name
            report = self.cli(name, "ask", "What is 6 * 7?", "--n", "6", "--strategy",
                              "best_of_n")
            assert {c["node"] for c in report["candidates"]} == set(NAMES), (name, report)
            assert len(report["candidates"]) == 6, report

    def start_all(self, *, multicast: bool, refusing: tuple[str, ...] = ()) -> None:
        """Apply the topology's rules, start a, b, c in turn, wait until all see all."""
        for host in () if multicast else self.lan.names:
            self.lan.drop_multicast(host)
        for name in refusing:
            self.lan.refuse_inbound(self.hosts[name])
        for name in NAMES:
            self.start(name)
        self.wait_all_alive()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture
def swarm(tmp_path, request):
    with Lan(3) as lan:
        made = Swarm(lan, tmp_path, keyed="keyed" in request.node.name,
                     name=request.node.name)
        try:
            yield made
        finally:
            made.stop()


KEYS = pytest.mark.parametrize("keys", ["open", "keyed"])


@KEYS
def test_multicast_dropped_everywhere(swarm, nft, keys):
    swarm.start_all(multicast=False)
    assert swarm.peers("a")["c"]["source"] == "contact"  # a never had c's address
    swarm.ask_everywhere()


@KEYS
def test_multicast_dropped_and_c_refuses_inbound(swarm, nft, keys):
    swarm.start_all(multicast=False, refusing=("c",))
    for name in ("a", "b"):
        seen = swarm.peers(name)["c"]
        assert seen["reach"] == "its link" and "own link" in seen["detail"], seen
    at_c = swarm.peers("c")
    assert {at_c[k]["reach"] for k in ("a", "b")} == {"our link"}
    swarm.ask_everywhere()
    # doctor on c says it accepts no inbound connections, what it costs, how to open it
    out = run_cli(swarm.hosts["c"], "doctor", "--config", str(swarm.configs["c"]),
                  "--no-model", "--browse", "0.5", "--json", timeout=60)
    findings = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
    inbound = findings["inbound"]
    assert inbound["status"] == "warn" and "accepts no inbound connections" in inbound["message"]
    assert f"ufw allow {PUB}:{RPC}/tcp" in inbound["fix"]
    # the status page of a says it too (its JSON: the page shows each peer's detail)
    if keys == "open":
        page = subprocess.run(["ip", "netns", "exec", swarm.hosts["a"], "curl", "-s",
                               f"http://{swarm.lan.addresses[swarm.hosts['a']]}:"
                               f"{swarm.procs['a'].info.http_port}/v1/status"],
                              capture_output=True, text=True, timeout=30, check=True)
        (c,) = [p for p in json.loads(page.stdout)["peers"] if p["name"] == "c"]
        assert "reached over its own link" in c["detail"]
    # ... and doctor on a, that c is reached over its own link
    out = run_cli(swarm.hosts["a"], "doctor", "--config", str(swarm.configs["a"]),
                  "--no-model", "--browse", "0.5", "--json", timeout=60)
    notes = [f["message"] for f in json.loads(out.stdout)["findings"]]
    assert any(m.startswith("c: reached over its own link") for m in notes), notes


@KEYS
def test_flat_lan_and_c_refuses_inbound(swarm, nft, keys):
    swarm.start_all(multicast=True, refusing=("c",))
    assert swarm.peers("b")["c"]["reach"] == "its link"
    swarm.ask_everywhere()


@KEYS
def test_multicast_dropped_and_b_comes_back_at_a_new_address(swarm, nft, keys):
    swarm.start_all(multicast=False)
    swarm.procs["b"].stop()
    old, new = swarm.lan.addresses[swarm.hosts["b"]], "10.77.0.77"
    swarm.lan.readdress(swarm.hosts["b"], new)
    # the same state dir (the same node id), bound to the new address
    swarm.configs["b"].write_text(swarm.configs["b"].read_text().replace(old, new))
    swarm.procs["b"] = NodeProcess(swarm.configs["b"], netns=swarm.hosts["b"],
                                   log_path=swarm.configs["b"].with_name("node2.log"))
    swarm.procs["b"].wait_ready(60)
    for name in ("a", "c"):
        wait_until(lambda n=name: (swarm.peers(n)["b"]["state"],
                                   swarm.peers(n)["b"]["address"]) == ("alive", new), 20,
                   what=f"{name} sees b alive at {new}", interval_s=0.25)
    swarm.ask_everywhere()


@KEYS
def test_after_a_power_cut_without_a_the_others_find_each_other_again(swarm, nft, keys):
    """b and c joined through a (the only address they were given); a power cut stops
    everyone, and a never comes back. b and c, restarted from their configs, probe the
    members they remember (state_dir/members.json, each pinned to its key)."""
    swarm.start_all(multicast=False)
    for name in NAMES:  # the power cut: nobody says goodbye
        swarm.procs[name].signal(signal.SIGKILL)
        swarm.procs[name].proc.wait()
        swarm.procs[name].stop()  # (its log closed)
    healthy: dict[str, float] = {}
    for name in ("b", "c"):
        swarm.procs[name] = NodeProcess(swarm.configs[name], netns=swarm.hosts[name],
                                        log_path=swarm.configs[name].with_name("node2.log"))
    for name in ("b", "c"):
        swarm.procs[name].wait_ready(60)
        healthy[name] = time.monotonic()
    t0 = max(healthy.values())
    for name, other in (("b", "c"), ("c", "b")):
        wait_until(lambda n=name, o=other: swarm.peers(n).get(o, {}).get("state") == "alive",
                   20, what=f"{name} sees {other} alive again", interval_s=0.25)
    took = time.monotonic() - t0
    sources = {swarm.peers("b")["c"]["source"], swarm.peers("c")["b"]["source"]}
    assert sources & {"remembered", "contact"}, sources
    print(json.dumps({"power_cut_rejoin_s": round(took, 2), "keys": keys}))
    for name in ("b", "c"):  # and they answer together
        report = swarm.cli(name, "ask", "What is 6 * 7?", "--n", "4", "--strategy",
                           "best_of_n")
        assert {c["node"] for c in report["candidates"]} == {"b", "c"}, report
