"""Faults a node must survive: restarts with the same id, its own stalls, a bad state dir,
a worker killed in the middle of a stream. `zswarm node` processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from zswarm import client
from zswarm.core.ids import unpinned
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

pytestmark = pytest.mark.timeout(180)


def peers(proc: NodeProcess) -> dict[str, object]:
    return {p.name: p for p in client.peers(proc.rpc, timeout_s=5).peers}


def state_of(proc: NodeProcess, name: str) -> str | None:
    peer = peers(proc).get(name)
    return None if peer is None else peer.state  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_node_restarted_with_the_same_id_is_accepted_again_at_once(tmp_path, how):
    swarm = f"restart-{how.name}-{os.getpid()}"
    a = NodeProcess(node_config(tmp_path, "a", swarm=swarm, answers=["42"]))
    b_cfg = node_config(tmp_path, "b", swarm=swarm, answers=["41"])
    b = NodeProcess(b_cfg)
    try:
        a.wait_ready()
        b_id = b.wait_ready().node_id
        wait_until(lambda: state_of(a, "b") == "alive", 10, what="b alive")
        old_rpc = b.rpc
        if how is signal.SIGTERM:
            b.stop()
            wait_until(lambda: state_of(a, "b") == "left", 10, what="b left")
        else:
            b.signal(signal.SIGKILL)
            b.proc.wait()
            b.stop()
        b = NodeProcess(b_cfg)  # same state dir: same node id, new ephemeral ports
        info = b.wait_ready()
        assert info.node_id == b_id and info.rpc_endpoint != old_rpc
        # mDNS announces the new endpoints; a crashed node's old entry is still ALIVE or
        # SUSPECT, so the claim is probed (one status round trip). Without that, the old
        # entry would hold the id until forgotten (forget_after_ms: 300 s), far past the wait
        wait_until(lambda: (p := peers(a).get("b")) is not None and p.state == "alive"
                   and p.rpc == unpinned(info.rpc_endpoint)[0], 10,
                   what="b alive at its new endpoint")
        reply = client.ask(a.rpc, _request(2), strategy="best_of_n", deadline_ms=10_000)
        assert {c.node for c in reply.report.candidates} == {"a", "b"}
    finally:
        b.stop()
        a.stop()


def _request(n: int):
    from zswarm.core.messages import ChatMessage, GenerateRequest

    return GenerateRequest(messages=(ChatMessage(role="user", content="6 * 7?"),), n=n)


def test_a_stalled_node_does_not_declare_its_live_peers_dead(tmp_path):
    swarm = f"stall-{os.getpid()}"
    a = NodeProcess(node_config(tmp_path, "a", swarm=swarm, answers=["42"]))
    b = NodeProcess(node_config(tmp_path, "b", swarm=swarm, answers=["41"]))
    try:
        a.wait_ready()
        b.wait_ready()
        wait_until(lambda: state_of(a, "b") == "alive", 10, what="b alive")
        a.signal(signal.SIGSTOP)  # a's loop stops; b's heartbeats pile up in its socket
        time.sleep(2.0)  # the fault being simulated is this stall, not a synchronisation
        a.signal(signal.SIGCONT)
        wait_until(lambda: state_of(a, "b") == "alive", 10, what="b still alive")
        assert "is dead" not in a.log()
    finally:
        b.stop()
        a.stop()


def _node_exit(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zswarm", "node", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_state_dir_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = node_config(tmp_path, "x", swarm="s", answers=["42"],
                      node={"state_dir": str(blocker / "state")})
    run = _node_exit(cfg)
    assert run.returncode == 2, run.stderr
    assert "node.state_dir" in run.stderr and str(blocker / "state") in run.stderr
    assert "Traceback" not in run.stderr


def test_a_full_disk_or_a_damaged_state_dir_at_start_up_is_a_clear_error(tmp_path):
    state = tmp_path / "x" / "state"
    state.mkdir(parents=True)
    (state / "node.key").symlink_to("/dev/full")  # reads endless NULs
    run = _node_exit(node_config(tmp_path, "x", swarm="s", answers=["42"]))
    assert run.returncode == 2, run.stderr
    assert "is not a node key" in run.stderr and "node.key" in run.stderr
    (state / "node.key").unlink()  # (a new key is made at the next start)
    (state / "node.tmp").symlink_to("/dev/full")  # node.json is written through node.tmp
    run = _node_exit(node_config(tmp_path, "x", swarm="s", answers=["42"]))
    assert run.returncode == 2, run.stderr
    assert "No space left on device" in run.stderr and "node.tmp" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("port", ["http", "rpc", "pub"])
def test_a_port_in_use_is_a_clear_error_naming_it(tmp_path, port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = taken.getsockname()[1]
        run = _node_exit(node_config(tmp_path, "x", swarm="s", answers=["42"],
                                     ports={port: number}))
    assert run.returncode == 2, run.stderr
    assert f"ports.{port}: cannot listen on 127.0.0.1:{number}" in run.stderr
    assert "Address already in use" in run.stderr and "Traceback" not in run.stderr


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                continue
    return out


@pytest.mark.model
def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error_event(tmp_path):
    node = NodeProcess(node_config(tmp_path, "m", swarm=f"kill-{os.getpid()}",
                                   federation={"enabled": False}))
    try:
        info = node.wait_ready(120)
        (worker,) = _children(node.pid)
        body = {"model": "default", "stream": True, "max_tokens": 2000,
                "messages": [{"role": "user", "content": "Write a very long story about a "
                              "lighthouse keeper, in many chapters."}]}
        events = []
        url = f"http://127.0.0.1:{info.http_port}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 5:
                    os.kill(worker, signal.SIGKILL)  # a worker the node started: by PID
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])
        assert error["error"]["code"] == "worker_crashed" and "died" in error["error"]["message"]
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{info.http_port}/health"
                                     ).status_code == 200, 60, what="the worker restarted")
    finally:
        node.stop()
