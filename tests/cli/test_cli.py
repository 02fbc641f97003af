"""The CLI through typer's runner, and a real node + client in subprocesses."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from zswarm.cli import app
from zswarm.core.ids import unpinned
from zswarm.statedir import NodeInfo

pytestmark = pytest.mark.model
runner = CliRunner()


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "swarm.toml"
    path.write_text(
        f'[node]\nname = "cli-test"\nbind = "127.0.0.1"\nstate_dir = "{tmp_path / "state"}"\n'
        f"[ports]\nrpc = 0\npub = 0\nhttp = 0\n"
        f'[federation]\nswarm = "cli-{secrets.token_hex(6)}"\n{extra}')
    return path


def test_ask_local_plain(tmp_path):
    cfg = write_config(tmp_path)
    result = runner.invoke(app, ["ask", "What is the capital of France?", "--config", str(cfg),
                                 "--local", "--temperature", "0", "--max-tokens", "24"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output


def test_ask_json_report(tmp_path):
    cfg = write_config(tmp_path)
    result = runner.invoke(app, ["ask", "Name a primary colour.", "--n", "3", "--strategy",
                                 "weighted_vote", "--json", "--config", str(cfg), "--local",
                                 "--max-tokens", "24", "--seed", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # notes (a cut answer) go to stderr
    assert set(report) >= {"answer", "strategy", "winner", "agreement", "candidates", "timings"}
    assert report["strategy"] == "weighted_vote" and len(report["candidates"]) == 3
    assert report["answer"] == report["candidates"][report["winner"]]["text"]
    for c in report["candidates"]:
        assert set(c) == {"node", "node_id", "worker", "text", "score", "finish_reason",
                          "latency_ms", "prompt_tokens", "cached_tokens", "model_id"}
        assert c["node_id"]  # every candidate names its node by id (names may be shared)
        assert c["node"] == "cli-test" and c["worker"] == "w0"


def test_ask_explain_and_seed_determinism(tmp_path):
    cfg = write_config(tmp_path)
    args = ["ask", "What is 2 + 3?", "--n", "4", "--strategy", "majority", "--explain",
            "--config", str(cfg), "--local", "--max-tokens", "24", "--seed", "11",
            "--temperature", "0.9"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "strategy majority" in first.output and "cli-test/w0" in first.output
    second = runner.invoke(app, args)
    strip = [ln for ln in first.output.splitlines() if "timings" not in ln]
    assert [ln[:40] for ln in strip] == [
        ln[:40] for ln in second.output.splitlines() if "timings" not in ln]


def test_ask_with_a_budget_says_what_it_spent(tmp_path):
    cfg = write_config(tmp_path)
    args = ["ask", "What is the capital of France?", "--budget", "16", "--config", str(cfg),
            "--local", "--max-tokens", "12", "--temperature", "0.7"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["budget"] == 16 and report["used"] == len(report["candidates"]) <= 16
    assert report["stop"] in ("cannot change", "settled", "no agreement", "budget spent")
    assert report["waves"] >= 1
    explained = runner.invoke(app, [*args, "--explain"])
    assert explained.exit_code == 0, explained.output
    assert "of a budget of 16 candidates" in explained.output and "stopped: " in explained.output


def test_a_configured_budget_is_the_default_but_greedy_asks_once(tmp_path):
    cfg = write_config(tmp_path, "[consensus]\nbudget = 8\n")
    base = ["ask", "What is 2 + 2?", "--config", str(cfg), "--local", "--max-tokens", "8",
            "--json"]
    sampled = json.loads(runner.invoke(app, [*base, "--temperature", "0.7"]).stdout)
    assert sampled["budget"] == 8
    greedy = json.loads(runner.invoke(app, [*base, "--temperature", "0"]).stdout)
    assert greedy["budget"] is None and len(greedy["candidates"]) == 1  # all would agree


def test_bad_config_is_exit_2_with_the_key(tmp_path):
    cfg = write_config(tmp_path, "[scheduler]\nmax_qeue = 3\n")
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--local"])
    assert result.exit_code == 2
    assert "scheduler.max_qeue" in result.output


def test_bad_options_are_clear(tmp_path):
    cfg = write_config(tmp_path)
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--strategy", "best"])
    assert result.exit_code == 2 and "unknown strategy 'best'; choose one of" in result.output
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--n", "0", "--local"])
    assert result.exit_code == 2 and "--n must be 1 to 16" in result.output
    # one set of limits: the node's (the config's), whatever the protocol would carry
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--n", "17", "--local"])
    assert result.exit_code == 2 and "--n must be 1 to 16 ([generation] max_n)" in result.output
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--temperature", "9",
                                 "--local"])
    assert result.exit_code == 2 and "--temperature" in result.output
    assert "$." not in result.output  # no msgspec paths
    result = runner.invoke(app, ["ask", "--config", str(cfg), "--local"])
    assert result.exit_code == 2 and "give the question" in result.output
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--budget", "17", "--local"])
    assert result.exit_code == 2 and "--budget must be 1 to 16 ([generation] max_n)" \
        in result.output
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--budget", "4", "--n", "4"])
    assert result.exit_code == 2 and "invalid option: --budget: give n (exactly that many " \
        "candidates) or budget" in result.output
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--budget", "4",
                                 "--strategy", "first_valid"])
    assert result.exit_code == 2 and "invalid option: --budget: a budget needs the strategy " \
        "confidence, majority, best_of_n; first_valid takes n" in result.output


def test_unknown_model_file(tmp_path):
    cfg = write_config(tmp_path, f'[model]\npath = "{tmp_path / "nope.gguf"}"\n')
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg), "--local"])
    assert result.exit_code == 2 and "nope.gguf" in result.output  # configuration: exit 2


def _wait_for_file(path: Path, proc: subprocess.Popen, timeout_s: float = 60) -> NodeInfo:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "node exited"
        try:
            return msgspec.json.decode(path.read_bytes(), type=NodeInfo)
        except (OSError, msgspec.DecodeError):
            time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


def test_node_subprocess_and_ask_through_it(tmp_path):
    cfg = write_config(tmp_path, "[generation]\nmax_tokens = 32\nmax_tokens_limit = 64\n")
    cfg.write_text(cfg.read_text().replace('[node]\n', '[node]\nworkers = 2\n'))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    node = subprocess.Popen([sys.executable, "-m", "zswarm", "node", "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        info = _wait_for_file(tmp_path / "state" / "node.json", node)
        assert info.rpc_endpoint.startswith("tcp://127.0.0.1:")
        out = subprocess.run(
            [sys.executable, "-m", "zswarm", "ask", "What is 2 + 3?", "--config", str(cfg),
             "--n", "2", "--strategy", "best_of_n", "--json", "--max-tokens", "24"],
            capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert {c["worker"] for c in report["candidates"]} == {"w0", "w1"}
        assert report["answered_by"] == f"the node at {info.rpc_endpoint}"
        # the client's defaults allow 100 tokens, this node's limit does not: refused by
        # the node, a bad option (exit 2)
        out = subprocess.run(
            [sys.executable, "-m", "zswarm", "ask", "hi", "--node", info.rpc_endpoint,
             "--max-tokens", "100"], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 2 and "max_tokens must be 1 to 64" in out.stderr
        assert node.poll() is None  # bad input did not hurt the node
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=20)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
            if node.stderr:
                node.stderr.close()
    assert not (tmp_path / "state" / "node.json").exists()


def test_peers_without_a_running_node_says_what_to_do(tmp_path):
    cfg = write_config(tmp_path)
    result = runner.invoke(app, ["peers", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "no node is running" in result.output and "--browse" in result.output


def test_node_flags_win_over_the_file(tmp_path):
    from zswarm.testing.cluster import NodeProcess, node_config

    cfg = node_config(tmp_path, "x", swarm="flags-" + secrets.token_hex(3), answers=["42"])
    with NodeProcess(cfg, args=("--no-federation", "--name", "flagged", "--http-port", "0",
                                "--peer", f"tcp://127.0.0.1:9?key={'ab' * 32}")) as node:
        info = node.wait_ready()
        assert info.name == "flagged" and info.federation is False
        assert info.pub_endpoint == "" and info.http_port > 0
    assert "federation off" in node.log()
    bad = subprocess.run([sys.executable, "-m", "zswarm", "node", "--config", str(cfg),
                          "--http-port", "70000"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "+ command line: ports.http: expected 0 to 65535" in bad.stderr, bad.stderr
    keyless = subprocess.run([sys.executable, "-m", "zswarm", "node", "--config", str(cfg),
                              "--peer", "tcp://127.0.0.1:9"], capture_output=True, text=True,
                             timeout=60)  # nobody may pose as a member: an address has a key
    assert keyless.returncode == 2 and "federation.peers[0]: expected tcp://host:port?key=KEY" \
        in keyless.stderr, keyless.stderr
    from zswarm.testing.cluster import free_port

    rpc = free_port()
    with NodeProcess(cfg, args=("--rpc-port", str(rpc), "--pub-port", "0")) as node:
        info = node.wait_ready()
        assert info.rpc_endpoint.split("?")[0].endswith(f":{rpc}") and info.pub_endpoint


def test_a_second_node_on_a_state_dir_in_use_is_refused_and_join_picks_its_own(
        tmp_path, monkeypatch):
    from zswarm.testing.cluster import NodeProcess, node_config

    swarm = "state-" + secrets.token_hex(4)
    first_cfg = node_config(tmp_path, "first", swarm=swarm, answers=["42"],
                            federation={"enabled": False})
    shared = str(tmp_path / "first" / "state")
    second_cfg = node_config(tmp_path, "second", swarm=swarm, answers=["42"],
                             federation={"enabled": False}, node={"state_dir": shared})
    with NodeProcess(first_cfg) as first:
        info = first.wait_ready()
        second = subprocess.run([sys.executable, "-m", "zswarm", "node", "--config",
                                 str(second_cfg)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert (f"node.state_dir {shared} is in use by node first (pid {first.pid}, "
                f"{info.rpc_endpoint})") in second.stderr
        # the first node is untouched: its node.json still names it
        assert msgspec.json.decode((tmp_path / "first" / "state" / "node.json").read_bytes(),
                                   type=NodeInfo) == info
        # join on a machine whose default state dir a node holds: a state dir of its own
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        from zswarm import statedir
        from zswarm.config import parse_config

        default = parse_config({})
        held = statedir.lock(default)
        try:
            out = tmp_path / "joined" / "swarm.toml"
            out.parent.mkdir()
            result = runner.invoke(app, ["join", info.rpc_endpoint, "--no-start",
                                         "--config", str(out), "--bind", "127.0.0.1",
                                         "--rpc-port", "0", "--pub-port", "0",
                                         "--http-port", "0", "--threads", "1"])
        finally:
            held.close()
        assert result.exit_code == 0, result.output
        assert f"this one keeps its id and models in {out.parent / 'state'}" in result.output
        assert f'state_dir = "{out.parent / "state"}"' in out.read_text()


def test_join_halves_the_threads_when_another_node_holds_this_machines_ports():
    from zswarm.cli.swarm import _another_node_here

    held = []
    try:
        for port in (17615, 17616, 17617):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
                held.append(s)
            except OSError:  # something of this machine holds it already: still "taken"
                s.close()
        assert _another_node_here("127.0.0.1")
    finally:
        for s in held:
            s.close()
    if len(held) == 3:  # all three were free before: free again now
        assert not _another_node_here("127.0.0.1")


def test_override_checks_like_the_file():
    from zswarm.config import override, parse_config
    from zswarm.errors import ConfigError

    cfg = parse_config({"federation": {"discovery": "mdns"}}, source="swarm.toml")
    peer = f"tcp://10.0.0.2:7?key={'ab' * 32}"
    changed = override(cfg, {"federation": {"enabled": False, "peers": [peer]}})
    assert changed.federation.enabled is False and changed.federation.discovery == "mdns"
    assert changed.source == "swarm.toml + command line" and changed.node == cfg.node
    assert override(cfg, {"node": {}, "ports": {}}) is cfg
    with pytest.raises(ConfigError, match=r"federation.peers\[0\]: expected tcp://host:port"):
        override(cfg, {"federation": {"peers": ["10.0.0.2"]}})


def test_a_port_nobody_listens_on_fails_fast_and_says_so(tmp_path):
    from zswarm.testing.cluster import free_port

    result = runner.invoke(app, ["ask", "hi", "--node",
                                 f"tcp://127.0.0.1:{free_port()}?key={'ab' * 32}"])
    # said by the 3 s status exchange (the ask would wait out its 300 s deadline)
    assert result.exit_code == 1 and "within 3 s: nothing listens there" in result.output
    for wrong in ("127.0.0.1:17617", "tcp://127.0.0.1:17617"):  # no key: anyone could answer
        malformed = runner.invoke(app, ["ask", "hi", "--node", wrong])
        assert malformed.exit_code == 2 and "tcp://host:port?key=KEY" in malformed.output


def test_a_listener_that_does_not_answer_is_named_with_the_key_hint(tmp_path):
    import socket

    with socket.socket() as listener:  # what a keyed node looks like to a client without the key
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = runner.invoke(app, ["ask", "hi", "--node",
                                     f"tcp://127.0.0.1:{port}?key={'ab' * 32}"])
    assert result.exit_code == 1 and "swarm_key_file" in result.output


def test_a_node_of_this_config_that_died_is_an_error_not_a_silent_local_answer(tmp_path):
    from zswarm.testing.cluster import free_port

    cfg = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "node.json").write_text(json.dumps(  # what kill -9 leaves behind
        {"node_id": "0123456789abcdef", "name": "gone", "host": "127.0.0.1",
         "rpc_endpoint": f"tcp://127.0.0.1:{free_port()}?key={'ab' * 32}", "pub_endpoint": "",
         "http_port": 0, "model_id": "m", "workers": 1, "federation": False,
         "swarm_key": "", "pid": 999_999}))
    result = runner.invoke(app, ["ask", "hi", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "pid 999999" in result.output and "--local" in result.output


def test_with_no_node_the_answer_says_it_came_from_this_process(tmp_path):
    cfg = write_config(tmp_path)
    result = runner.invoke(app, ["ask", "-", "--config", str(cfg), "--json",
                                 "--max-tokens", "8", "--temperature", "0"],
                           input="What is the capital of France?")
    assert result.exit_code == 0, result.output
    assert "answering in-process" in result.output  # said on stderr (mixed in by the runner)
    report = json.loads(result.output.splitlines()[-1])
    assert report["answered_by"].startswith("in-process") and "Paris" in report["answer"]


def test_a_question_from_a_file_help_and_version(tmp_path):
    cfg = write_config(tmp_path)
    question = tmp_path / "q.txt"
    question.write_text("What is the capital of France?")
    result = runner.invoke(app, ["ask", "--file", str(question), "--config", str(cfg),
                                 "--local", "--max-tokens", "8", "--temperature", "0",
                                 "--explain"])
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output and "answered by in-process (--local)" in result.output
    result = runner.invoke(app, ["ask", "Count from one to twenty in words.", "--config",
                                 str(cfg), "--local", "--max-tokens", "3"])
    assert result.exit_code == 0 and "cut at 3 tokens" in result.output  # marked as cut
    result = runner.invoke(app, ["ask", "-h"])
    assert result.exit_code == 0 and "--max-tokens" in result.output
    assert "<bool>" not in result.output and "[generation]" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("zswarm ")


def _slow_node(tmp_path: Path):
    """A node whose (scripted) answers take a minute: an ask stays in flight."""
    from zswarm.testing.cluster import NodeProcess, node_config

    proc = NodeProcess(node_config(tmp_path, "slow", swarm="slow-" + secrets.token_hex(4),
                                   answers=["42"], delay_ms=60_000,
                                   federation={"enabled": False}))
    proc.wait_ready(60)
    return proc


def _busy(rpc: str) -> bool:
    from zswarm.client import NodeClient

    with NodeClient(rpc) as node:
        return node.status().load.idle_workers == 0


def test_ask_returns_within_seconds_when_its_node_is_killed_mid_answer(tmp_path):
    from zswarm.testing.cluster import wait_until

    proc = _slow_node(tmp_path)
    ask = subprocess.Popen([sys.executable, "-m", "zswarm", "ask", "hi", "--config",
                            str(proc.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_until(lambda: _busy(proc.rpc), 30, what="the ask in flight")
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = ask.communicate(timeout=30)
        took = time.monotonic() - killed
        # its worker, mid-request (a minute of scripted work), notices and exits too
        wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 10,
                   what="the dead node's worker gone")
    finally:
        if ask.poll() is None:  # it waited out the kill: stop it, the assertions say why
            ask.kill()
            ask.communicate()
        proc.stop()
    assert ask.returncode == 1, err
    assert f"the node at {unpinned(proc.rpc)[0]} closed the connection while answering" in err
    assert "start it again with `zswarm node --config" in err
    assert took < 10, took  # the deadline is 300 s: seconds, not the deadline


def test_a_frozen_node_is_given_up_when_it_answers_nothing_not_even_status(tmp_path,
                                                                          monkeypatch):
    from tests.helpers import question
    from zswarm import client
    from zswarm.testing.cluster import wait_until

    monkeypatch.setattr(client, "SILENT_FOR_S", 3.0)
    monkeypatch.setattr(client, "PING_EVERY_S", 0.5)
    proc = _slow_node(tmp_path)
    try:
        with client.NodeClient(proc.rpc) as node:
            node.reach()
            stopped_at: list[float] = []

            def freeze() -> None:
                wait_until(lambda: _busy(proc.rpc), 30, what="the ask in flight")
                proc.signal(signal.SIGSTOP)  # alive, connections open, answering nothing
                stopped_at.append(time.monotonic())

            import threading
            freezer = threading.Thread(target=freeze)
            freezer.start()
            with pytest.raises(client.NodeGone, match="stopped answering: nothing for 3 s"):
                node.ask(question(), strategy="first_valid", deadline_ms=120_000)
            freezer.join()
            assert time.monotonic() - stopped_at[0] < 10
    finally:
        proc.stop()  # SIGCONT, then SIGTERM


def test_an_empty_question_and_a_node_without_its_model_are_exit_2(tmp_path):
    cfg = write_config(tmp_path)
    empty = runner.invoke(app, ["ask", "   ", "--config", str(cfg), "--local"])
    assert empty.exit_code == 2 and "the question is empty" in empty.output
    # admitted by its characters, over the model's context in tokens: a limit too, exit 2
    long = runner.invoke(app, ["ask", "word " * 6000, "--config", str(cfg), "--local",
                               "--max-tokens", "4"])
    assert long.exit_code == 2, long.output
    assert "does not fit the model's context of 4096 tokens" in long.output
    missing = write_config(tmp_path, f'[model]\npath = "{tmp_path / "nope.gguf"}"\n')
    node = subprocess.run([sys.executable, "-m", "zswarm", "node", "--config", str(missing)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert node.returncode == 2 and "nope.gguf" in node.stderr  # as `zswarm ask` says it


def test_a_node_that_drains_mid_answer_still_answers_before_it_closes(tmp_path):
    from zswarm.testing.cluster import NodeProcess, node_config, wait_until

    proc = NodeProcess(node_config(tmp_path, "draining", swarm="d-" + secrets.token_hex(4),
                                   answers=["42"], delay_ms=2000,
                                   federation={"enabled": False}))
    proc.wait_ready(60)
    ask = subprocess.Popen([sys.executable, "-m", "zswarm", "ask", "hi", "--config",
                            str(proc.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        wait_until(lambda: _busy(proc.rpc), 30, what="the ask in flight")
        proc.signal(signal.SIGTERM)  # drain: the answer in flight is finished, then it exits
        out, err = ask.communicate(timeout=60)
    finally:
        if ask.poll() is None:
            ask.kill()
            ask.communicate()
        proc.stop()
    assert ask.returncode == 0 and out.strip() == "42", err
