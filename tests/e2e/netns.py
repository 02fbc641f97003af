"""A private LAN of network namespaces for tests (root only; see ENVIRONMENT.md).

A bridge namespace holds br0 (multicast snooping off); each host namespace gets a
veth ``eth0`` into the bridge, an address from 10.77.0.0/24, ``lo`` up and a
multicast route for mDNS. Nothing is attached to the root namespace; everything is
deleted on exit. ``split(host)`` / ``heal(host)`` take a host's link down and up.
Networks that are not a flat LAN, with nftables inside a host's namespace (Debian's
``nftables``, installed by the test that needs it): ``drop_multicast(host)`` (no mDNS
in or out: Wi-Fi client isolation, VLANs, containers), ``refuse_inbound(host)`` (a
laptop firewall: new inbound TCP connections dropped, outbound ones work), and
``readdress(host, address)`` (DHCP gave the host another address).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from zswarm.testing.cluster import NodeProcess

SUBNET = "10.77.0"


def netns_available() -> str | None:
    """None if namespaces can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "building network namespaces needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"zsprobe{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` failed: {exc.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class Lan:
    hosts: int
    prefix: str = field(default_factory=lambda: f"zs{os.getpid() % 100000}")
    names: list[str] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def _veth(self, host: str) -> str:
        return f"v{host}"[-15:]

    def __enter__(self) -> Lan:
        try:
            _ip("netns", "add", self.bridge)
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
            for i in range(self.hosts):
                host = f"{self.prefix}h{i}"
                _ip("netns", "add", host)
                self.names.append(host)
                _ip("-n", self.bridge, "link", "add", self._veth(host), "type", "veth",
                    "peer", "name", "eth0", "netns", host)
                _ip("-n", self.bridge, "link", "set", self._veth(host), "master", "br0", "up")
                address = f"{SUBNET}.{i + 2}"
                self.addresses[host] = address
                _ip("-n", host, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", host, "link", "set", "eth0", "up")
                _ip("-n", host, "link", "set", "lo", "up")
                _ip("-n", host, "route", "add", "224.0.0.0/4", "dev", "eth0")
        except BaseException:
            self.__exit__()
            raise
        return self

    def split(self, host: str) -> None:
        _ip("-n", self.bridge, "link", "set", self._veth(host), "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.bridge, "link", "set", self._veth(host), "up")

    def _nft(self, host: str, ruleset: str) -> None:
        subprocess.run(["ip", "netns", "exec", host, "nft", "-f", "-"], input=ruleset.encode(),
                       check=True, capture_output=True, timeout=10)

    def drop_multicast(self, host: str) -> None:
        self._nft(host, "table inet zsnomcast {\n"
                  "chain input { type filter hook input priority 0; "
                  "ip daddr 224.0.0.0/4 drop; ip6 daddr ff00::/8 drop; }\n"
                  "chain output { type filter hook output priority 0; "
                  "ip daddr 224.0.0.0/4 drop; ip6 daddr ff00::/8 drop; }\n}\n")

    def refuse_inbound(self, host: str) -> None:
        self._nft(host, "table inet zsfirewall {\n"
                  "chain input { type filter hook input priority 0; "
                  "ct state established,related accept; iif lo accept; tcp flags syn drop; }\n}\n")

    def readdress(self, host: str, address: str) -> None:
        old = self.addresses[host]
        _ip("-n", host, "addr", "del", f"{old}/24", "dev", "eth0")
        _ip("-n", host, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", host, "route", "replace", "224.0.0.0/4", "dev", "eth0")
        self.addresses[host] = address

    def __exit__(self, *exc: object) -> None:
        for host in [*self.names, self.bridge]:
            subprocess.run(["ip", "netns", "del", host], capture_output=True, timeout=10)
        self.names.clear()


# --- the CLI inside a namespace ------------------------------------------------------


def run_cli(host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", host, sys.executable, "-m", "zswarm", *args],
                          capture_output=True, text=True, timeout=timeout)


def peers(host: str, node: NodeProcess) -> dict[str, dict[str, Any]]:
    out = run_cli(host, "peers", "--json", "--node", node.rpc, timeout=20)
    assert out.returncode == 0, out.stderr
    return {p["name"]: p for p in json.loads(out.stdout)}


def states(host: str, node: NodeProcess) -> dict[str, str]:
    return {name: p["state"] for name, p in peers(host, node).items()}
