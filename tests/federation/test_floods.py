"""Floods a LAN host can send, against a real node process with a desktop's 1,024 open files.

Each test drives one resource well past its bound (peer table entries and probe
sockets from mDNS records, file descriptors from idle connections) and shows that
the node keeps answering, open and keyed. Real processes, real mDNS on loopback,
real ZeroMQ; scripted engines.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from zswarm import client
from zswarm.core.ids import unpinned
from zswarm.core.messages import ChatMessage, ClientReply, GenerateRequest
from zswarm.core.peers import MAX_UNHEARD
from zswarm.net.security import SwarmKey, write_key_file
from zswarm.runtime.backlinks import MAX_BACKLINKS
from zswarm.testing.cluster import NodeProcess, free_port, node_config, wait_until
from zswarm.testing.floods import contact_flood, idle_connections, mdns_flood, open_fds

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

#: a desktop session's default soft limit (set as the hard limit too: it cannot be raised)
DESKTOP_FDS = 1024


def _question(n: int = 1) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage(role="user", content="What is 6 * 7?"),), n=n)


def _ask(node: NodeProcess, key: SwarmKey | None, n: int = 1) -> ClientReply:
    return client.ask(node.rpc, _question(n), strategy="best_of_n", deadline_ms=10_000, key=key)


def _keyed(tmp_path: Path, keyed: bool) -> tuple[SwarmKey | None, dict[str, dict[str, str]]]:
    if not keyed:
        return None, {}
    key = write_key_file(tmp_path / "swarm.key")
    return key, {"security": {"swarm_key_file": str(tmp_path / "swarm.key")}}


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_an_mdns_record_flood_costs_records_not_the_node(tmp_path, keyed):
    swarm = "flood-" + secrets.token_hex(6)
    key, security = _keyed(tmp_path, keyed)
    fed = {"discovery": "mdns"}
    with NodeProcess(node_config(tmp_path, "a", swarm=swarm, answers=["42"], federation=fed,
                                 **security), max_fds=DESKTOP_FDS) as a, \
            NodeProcess(node_config(tmp_path, "b", swarm=swarm, answers=["42"], federation=fed,
                                    **security)) as b:
        a.wait_ready(30)
        b.wait_ready(30)
        wait_until(lambda: any(p.name == "b" and p.state == "alive"
                               for p in client.peers(a.rpc, key=key).peers), 15, what="b alive")
        # 1,200 records of this swarm (and key), none of which answers: libzmq's socket
        # limit and the 1,024 descriptors were both passed by this flood before
        with mdns_flood(1200, swarm=swarm, key=key.fingerprint if key else ""):
            wait_until(lambda: sum(p.name.startswith("flood")
                                   for p in client.peers(a.rpc, key=key).peers) >= 20,
                       30, what="the flood reaching a")
            for _ in range(3):  # while the flood is being worked through
                reply = _ask(a, key, n=2)
                assert reply.answer == "42"
                assert {c.node for c in reply.report.candidates} == {"a", "b"}
            listed = client.peers(a.rpc, key=key).peers
            assert sum(p.name.startswith("flood") for p in listed) <= MAX_UNHEARD
            assert open_fds(a.pid) < DESKTOP_FDS
        assert a.proc.poll() is None, a.log()
        assert "Too many open files" not in a.log() and "Traceback" not in a.log()


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_idle_connections_hold_descriptors_for_a_moment_not_the_node(tmp_path, keyed):
    swarm = "idle-" + secrets.token_hex(6)
    key, security = _keyed(tmp_path, keyed)
    # an unreachable static peer: the node opens a probe socket every heartbeat, which is
    # where running out of descriptors ended the node before
    fed = {"discovery": "static", "peers": [f"tcp://127.0.0.1:9?key={'ab' * 32}"]}
    with NodeProcess(node_config(tmp_path, "a", swarm=swarm, answers=["42"], federation=fed,
                                 **security), max_fds=DESKTOP_FDS) as a:
        a.wait_ready(30)
        port = int(unpinned(a.rpc)[0].rsplit(":", 1)[1])
        http_port = int(a.info.http_port)
        with idle_connections(port, 1100) as conns, \
                idle_connections(http_port, 1100) as http_conns:
            assert len(conns) >= DESKTOP_FDS - 100  # more than the node could hold
            assert len(http_conns) >= 256  # [http] max_connections, then the backlog
            # still held by us: the node drops what does not finish a handshake in time,
            # and serves at most max_connections HTTP connections at once
            assert _ask(a, key).answer == "42"
            assert open_fds(a.pid) < DESKTOP_FDS
        assert _ask(a, key).answer == "42"
        assert httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=30).status_code == 200
        assert a.proc.poll() is None, a.log()
        assert "Traceback" not in a.log()


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_a_flood_of_contacting_nodes_costs_bounded_entries_not_the_node(tmp_path, keyed):
    swarm = "contact-" + secrets.token_hex(6)
    key, security = _keyed(tmp_path, keyed)
    fed = {"discovery": "static"}
    with NodeProcess(node_config(tmp_path, "a", swarm=swarm, answers=["42"], federation=fed,
                                 **security), max_fds=DESKTOP_FDS) as a:
        a.wait_ready(30)
        count = MAX_BACKLINKS + MAX_UNHEARD + 20  # past every bound a contact could fill
        asked = contact_flood(a.rpc, count, swarm=swarm, key=key, seconds=8)
        assert asked >= MAX_BACKLINKS  # it did probe them back over their links
        peers = client.peers(a.rpc, key=key).peers
        assert sum(p.reach == "its link" for p in peers) <= MAX_BACKLINKS
        assert _ask(a, key).answer == "42"
        assert open_fds(a.pid) < DESKTOP_FDS
        if keyed:  # without the key no link gets through, old path or new
            assert contact_flood(a.rpc, 8, swarm=swarm, key=None, seconds=2) == 0
        assert a.proc.poll() is None, a.log()
        assert "Traceback" not in a.log()


def test_a_peer_killed_and_restarted_on_its_ports_is_back_within_a_probe(tmp_path):
    """kill -9, then the same node (id, ports) again: its start-up status requests name it,
    so the peer that saw it die probes it at once instead of at its backed-off schedule."""
    swarm = "restart-" + secrets.token_hex(6)
    fed = {"discovery": "mdns", "heartbeat_interval_ms": 1000}
    b_config = node_config(tmp_path, "b", swarm=swarm, answers=["42"], federation=fed,
                           ports={"rpc": free_port(), "pub": free_port(), "http": free_port()})

    def b_state() -> str:
        return next((p.state for p in client.peers(a.rpc).peers if p.name == "b"), "")

    with NodeProcess(node_config(tmp_path, "a", swarm=swarm, answers=["42"],
                                 federation=fed)) as a:
        a.wait_ready(30)
        b = NodeProcess(b_config)
        b.wait_ready(30)
        wait_until(lambda: b_state() == "alive", 15, what="b alive")
        b.signal(signal.SIGKILL)
        b.stop()
        wait_until(lambda: b_state() == "dead", 15, what="b dead")
        with NodeProcess(b_config) as again:
            again.wait_ready(30)
            # that the hello brings the probe forward (instead of the backed-off schedule)
            # is shown on a fake clock: test_federation_state.py and test_peers.py
            wait_until(lambda: b_state() == "alive", 15, what="b alive again")


def test_the_node_raises_its_open_file_limit_to_the_hard_limit():
    """A desktop session starts processes at a soft limit of 1,024 with a far higher hard
    limit: the node takes what it may."""
    code = ("import resource; from zswarm.node import raise_fd_limit; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096)); raise_fd_limit(); "
            "print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["4096", "4096"]
