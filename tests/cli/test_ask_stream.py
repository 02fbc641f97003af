"""`zswarm ask` as a user meets it: a real node, a real `zswarm ask` process; the answer
streams as it is generated, and Ctrl-C (or SIGTERM) stops the work on the node."""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from zswarm.client import NodeClient
from zswarm.testing.cluster import NodeProcess, node_config, wait_until

pytestmark = [pytest.mark.model, pytest.mark.timeout(180)]

STORY = "Write a very long story about a ship."


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[str]:
    proc = NodeProcess(node_config(tmp_path_factory.mktemp("ask"), "s",
                                   swarm="ask-" + secrets.token_hex(4),
                                   federation={"enabled": False}))
    try:
        yield str(proc.wait_ready(60).rpc_endpoint)
    finally:
        proc.stop()


def ask(endpoint: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "zswarm", "ask", "--node", endpoint, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)


def idle(endpoint: str) -> bool:
    with NodeClient(endpoint) as client:
        load = client.status().load
    return load.idle_workers == load.workers_ready


def test_the_answer_streams_as_it_is_generated(node):
    proc = ask(node, STORY, "--max-tokens", "300", "--temperature", "0")
    assert proc.stdout is not None
    first = proc.stdout.read(8)  # the first piece, while the rest is still being made
    first_at = time.monotonic()
    rest, err = proc.communicate(timeout=120)
    ended_at = time.monotonic()
    assert proc.returncode == 0, err
    assert len(first) == 8 and ended_at - first_at > 1.0  # 300 tokens take seconds more
    whole = ask(node, STORY, "--max-tokens", "300", "--temperature", "0", "--no-stream")
    out, _ = whole.communicate(timeout=120)
    assert (first + rest).decode().strip() == out.decode().strip()  # the same answer


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_work_on_the_node(node, sig):
    proc = ask(node, STORY, "--max-tokens", "1500", "--temperature", "1.0")
    assert proc.stdout is not None
    proc.stdout.read(4)  # generating
    assert not idle(node)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert b"Traceback" not in err and b"cancelled" in err
    wait_until(lambda: idle(node), 5, what="the node's worker free again")  # not 1,500 tokens


@pytest.mark.parametrize("after_s", [0.05, 0.3, 0.8])
@pytest.mark.parametrize("command", [["doctor"], ["ask", "--local", "hi"]])
def test_ctrl_c_at_any_moment_of_a_command_is_no_traceback(tmp_path, command, after_s):
    """While Python loads the commands, or while a command loads a model: exit 130 (or the
    command's own end, if it was quicker) and one line, never a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "zswarm", *command], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    time.sleep(after_s)  # a user's finger, not synchronisation: any moment must be fine
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode()[-2000:]
    # 1: doctor's own verdict, if it finished; -SIGINT: the signal came before the
    # interpreter had set up its handler (a loaded machine), which prints nothing either
    assert proc.returncode in (130, 0, 1, -signal.SIGINT), err


def test_several_candidates_show_their_progress_on_a_terminal(node):
    import os
    import pty

    leader, follower = pty.openpty()  # stderr a terminal, as a user's is
    proc = subprocess.Popen([sys.executable, "-m", "zswarm", "ask", "--node", node,
                             "What is 2 + 2?", "--n", "4", "--strategy", "majority",
                             "--max-tokens", "8"],
                            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0 and out.strip(), seen
    assert b"1 of 4 candidates: s 1" in seen  # majority may stop early: 3 or 4 come
    last = seen.rsplit(b"candidates: ", 1)[1]
    assert re.match(rb"s [34]\r\x1b\[K", last)  # cleared before the answer is shown
    # not a terminal (a script, a pipe): nothing but the answer
    piped = ask(node, "What is 2 + 2?", "--n", "4", "--strategy", "majority",
                "--max-tokens", "8")
    _, err = piped.communicate(timeout=120)
    assert b"candidates:" not in err
