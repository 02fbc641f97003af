"""What a user sees of the swarm from a terminal: the start-up peer report, the peer
count of `zswarm peers`, and `zswarm peers --watch` (a live table, run on a pty)."""

from __future__ import annotations

import os
import pty
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import zswarm
from zswarm.testing.cluster import NodeProcess, node_config, wait_until


@contextmanager
def two_nodes(directory: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """Nodes a and b of a private swarm, both ready."""
    swarm = "view-" + secrets.token_hex(6)
    with NodeProcess(node_config(directory, "a", swarm=swarm, answers=["42"])) as a, \
            NodeProcess(node_config(directory, "b", swarm=swarm, answers=["42"])) as b:
        a.wait_ready(30)
        b.wait_ready(30)
        yield a, b


def test_the_banner_reports_the_peers_found(tmp_path):
    with two_nodes(tmp_path) as (a, _):
        assert "status  http://127.0.0.1:" in a.log()
        line = wait_until(lambda: next((x for x in a.log().splitlines() if "peers: " in x), None),
                          15, what="a's peer report")
        assert "1 alive (alive: b)" in line
        listed = zswarm("peers", "--config", str(a.config))
        assert listed.returncode == 0 and "peers: 1 alive" in listed.stdout
        row = next(x for x in listed.stdout.splitlines() if " b " in f" {x} ")
        assert "alive" in row and "scripted" in row


def test_the_banner_says_what_to_check_when_no_peer_answers(tmp_path):
    lonely = node_config(tmp_path, "lonely", swarm="view-" + secrets.token_hex(6),
                         answers=["42"], federation={"discovery": "both",
                                                     "peers": [f"tcp://127.0.0.1:9?key={'ab' * 32}"]})
    with NodeProcess(lonely) as node:
        node.wait_ready(30)
        def report() -> list[str] | None:
            lines = node.log().splitlines()
            first = next((i for i, x in enumerate(lines) if "no peers yet" in x), None)
            return None if first is None or not any(
                "zswarm doctor" in x for x in lines[first:]) else lines[first:]

        lines = wait_until(report, 15, what="report")
        said = "\n".join(lines)
        assert "tcp://127.0.0.1:9: unreachable" in said
        assert "loopback" in said and "--bind auto" in said and "zswarm doctor" in said
        assert max(len(x) for x in lines) < 260  # a line each, readable in a terminal


def _drain_until_exit(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                os.read(fd, 65536)
            except OSError:
                return


def _read_until(fd: int, needle: bytes, timeout_s: float) -> bytes:
    out = b""
    end = time.monotonic() + timeout_s
    while needle not in out:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{needle!r} not seen in {out[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:  # the child closed the pty
                break
    return out


def test_peers_watch_refreshes_a_live_table(tmp_path):
    with two_nodes(tmp_path) as (a, b):
        main, child = pty.openpty()
        watch = subprocess.Popen([sys.executable, "-m", "zswarm", "peers", "--watch",
                                  "--config", str(a.config)], stdin=child, stdout=child,
                                 stderr=child, env={**os.environ, "COLUMNS": "200"},
                                 # a test run started in the background ignores SIGINT, and
                                 # children inherit that: give the watch a terminal's handler
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(child)
        try:
            seen = _read_until(main, b"1 alive", 20)
            seen += _read_until(main, b"scripted", 5)  # the model, in full
            assert b"alive" in seen
            b.stop()  # b leaves: the live table shows it without a restart
            _read_until(main, b"1 left", 20)
            watch.send_signal(signal.SIGINT)
            # keep reading: a full pty would block the watch's last write forever
            _drain_until_exit(main, watch, 10)
            assert watch.wait(timeout=1) == 0
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
            os.close(main)
