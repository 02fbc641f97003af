"""DNS-SD interop with an independent mDNS implementation (avahi) across network namespaces.

Host 0 runs a zswarm node; host 1 runs avahi-daemon (on a private D-Bus of this
test, so nothing of the machine's own bus is touched). Shown:
- ``avahi-browse -rpt _zswarm._tcp`` on host 1 lists the node of host 0 with its
  TXT record: zswarm's advertisement is standard DNS-SD;
- services published with ``avahi-publish`` under ``_zswarm._tcp`` with broken or
  foreign TXT records cost the node those records only: it stays up and serving,
  never lists them as peers, counts the broken ones as dropped, and zswarm's own
  browser classifies the foreign one as "not a peer".
Skipped, with the reason, where namespaces cannot be built or avahi cannot be installed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.debian import need
from zswarm.core.ids import unpinned
from zswarm.core.messages import PROTOCOL_VERSION
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

from .netns import Lan, netns_available

_why = netns_available()
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""), pytest.mark.timeout(180)]

PACKAGES = ("avahi-daemon", "avahi-utils", "dbus")
BINARIES = ("avahi-daemon", "avahi-browse", "avahi-publish", "dbus-daemon")


class Avahi:
    """A D-Bus system bus of our own and avahi-daemon in one namespace; stopped by PID."""

    def __init__(self, host: str, directory: Path) -> None:
        self.host = host
        self.bus = f"unix:path={directory / 'bus'}"
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = directory / "avahi.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in close()

    def start(self) -> Avahi:
        self._spawn(["dbus-daemon", "--system", "--nofork", "--nopidfile",
                     f"--address={self.bus}"], netns=False)
        wait_until(lambda: Path(self.bus.removeprefix("unix:path=")).exists(), 10,
                   what="D-Bus socket")
        self._spawn(["avahi-daemon", "--no-drop-root", "--no-chroot", "--no-rlimits"])
        wait_until(lambda: b"Server startup complete" in self.log.read_bytes(), 15,
                   what="avahi-daemon started")
        return self

    def _spawn(self, cmd: list[str], *, netns: bool = True) -> subprocess.Popen[bytes]:
        if netns:
            cmd = ["ip", "netns", "exec", self.host, *cmd]
        proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def publish(self, name: str, txt: list[str], port: int = 17617) -> None:
        """``avahi-publish -s`` runs until stopped (in close())."""
        self._spawn(["avahi-publish", "-s", name, "_zswarm._tcp", str(port), *txt])

    def browse(self) -> str:
        run = subprocess.run(["ip", "netns", "exec", self.host, "avahi-browse", "-rpt",
                              "_zswarm._tcp"], env=self.env, capture_output=True, text=True,
                             timeout=30)
        return run.stdout

    def close(self) -> None:
        for proc in reversed(self.procs):  # publishers, the daemon, then the bus
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._log.close()


@pytest.fixture
def lan_with_avahi(tmp_path) -> Iterator[tuple[Lan, Avahi]]:
    need(PACKAGES, BINARIES)
    with Lan(2) as lan:
        avahi = Avahi(lan.names[1], tmp_path)
        try:
            yield lan, avahi.start()
        finally:
            avahi.close()


def zswarm_in(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", host, sys.executable, "-m", "zswarm", *args],
                          capture_output=True, text=True, timeout=60)


def test_avahi_sees_the_node_and_the_node_survives_avahi_records(lan_with_avahi, tmp_path):
    lan, avahi = lan_with_avahi
    zs_host = lan.names[0]
    swarm = "avahi-" + secrets.token_hex(4)
    cfg = node_config(tmp_path, "zs", swarm=swarm, answers=["42"], bind=lan.addresses[zs_host])
    with NodeProcess(cfg, netns=zs_host) as node:
        info = node.wait_ready(60)
        # 1. avahi lists the zswarm node of the other host, TXT record included
        line = wait_until(lambda: next((x for x in avahi.browse().splitlines()
                                        if x.startswith("=") and info.node_id in x), None),
                          20, what="avahi-browse lists the node")
        fields = line.split(";")
        assert fields[2] == "IPv4" and fields[4] == "_zswarm._tcp"
        endpoint, public = unpinned(info.rpc_endpoint)
        assert fields[7] == lan.addresses[zs_host] and fields[8] == endpoint.rsplit(":", 1)[1]
        for txt in (f'"id={info.node_id}"', f'"swarm={swarm}"', '"name=zs"',
                    f'"proto={PROTOCOL_VERSION}"', '"model=scripted"', f'"pk={public}"'):
            assert txt in fields[9], (txt, fields[9])

        # 2. broken and foreign _zswarm._tcp services published by avahi
        avahi.publish("broken-no-rpc", [f"swarm={swarm}", "id=aaaaaaaaaaaaaaaa", "proto=1"])
        avahi.publish("broken-port", [f"swarm={swarm}", "id=bbbbbbbbbbbbbbbb", "proto=1",
                                      "rpc=99999999", "pub=1"])
        avahi.publish("foreign", ["swarm=elsewhere", "id=cccccccccccccccc", "proto=1",
                                  "rpc=17617", "pub=17616", "name=foreign", "model=m"])
        seen = wait_until(lambda: _browse_json(zs_host, cfg), 30,
                          what="zswarm's browser sees avahi's foreign record")
        assert "not a peer: it is in swarm 'elsewhere'" in seen["foreign"]["detail"]
        status = wait_until(lambda: _dropped(zs_host, info), 20, what="broken records dropped")
        assert status["totals"]["frames_dropped"] >= 2
        by = status["totals"]["frames_dropped_by"]  # the page says what was dropped, where
        assert sum(d["count"] for d in by if d["where"] == "mdns") >= 2
        assert status["node"]["state"] == "ready" and status["peers"] == []
        asked = zswarm_in(zs_host, "ask", "What is 6 x 7?", "--node", info.rpc_endpoint)
        assert asked.returncode == 0 and asked.stdout.strip() == "42"
        assert "Traceback" not in node.log()


def _browse_json(host: str, cfg: Path) -> dict[str, dict[str, str]] | None:
    run = zswarm_in(host, "peers", "--config", str(cfg), "--browse", "2", "--json")
    found = {p["name"]: p for p in json.loads(run.stdout or "[]")}
    return found if "foreign" in found else None


def _dropped(host: str, info: dict[str, object]) -> dict[str, object] | None:
    url = f"http://{info.host}:{info.http_port}/v1/status"
    run = subprocess.run(["ip", "netns", "exec", host, "curl", "-s", url], capture_output=True,
                         text=True, timeout=20)
    status = json.loads(run.stdout)
    return status if status["totals"]["frames_dropped"] >= 2 else None
