"""Two nodes on one machine share its cores: the second takes what the first leaves, and
both the node and doctor say what to change when the threads exceed the cores."""

from __future__ import annotations

import secrets

import pytest

from tests.helpers import zswarm
from zswarm import cores
from zswarm.config import parse_config
from zswarm.cores import NodeHere
from zswarm.testing.cluster import NodeProcess, node_config, wait_until


@pytest.mark.parametrize(("cmdline", "found"), [
    (["/v/bin/python", "/v/bin/zswarm", "node", "--config", "a.toml"], True),
    (["/usr/bin/python3", "-m", "zswarm", "node"], True),
    (["/v/bin/python", "/v/bin/zswarm", "ask", "node"], False),
    (["/usr/bin/python3", "-m", "zswarm.runtime.worker_process"], False),
    (["vim", "zswarm", "node"], False),
])
def test_node_processes_are_told_by_their_command_line(cmdline, found):
    assert (cores._is_node(cmdline) is not None) == found


def test_auto_threads_take_what_the_others_leave(monkeypatch):
    monkeypatch.setattr(cores, "cores", lambda: 8)
    assert cores.share([]) == 8
    assert cores.share([NodeHere(1, 2)]) == 6
    assert cores.share([NodeHere(1, 2)], workers=2) == 3
    assert cores.share([NodeHere(1, 8)]) == 4  # nothing left: an equal share
    cfg = parse_config({"model": {"threads": 4}})
    assert cores.advice(cfg, [NodeHere(1, 4)]) == ""
    said = cores.advice(cfg, [NodeHere(1, 8)])
    assert "pid 1 and this one" in said and "12 threads on 8 cores" in said
    assert "[model] threads = 4" in said


def test_a_second_node_shares_the_cores_and_says_what_to_change(tmp_path):
    if cores.cores() < 2:
        pytest.skip("one core: nothing to share")
    swarm = "cores-" + secrets.token_hex(4)
    first = NodeProcess(node_config(tmp_path, "first", swarm=swarm, answers=["42"],
                                    federation={"enabled": False}))
    second = NodeProcess(node_config(tmp_path, "second", swarm=swarm, answers=["41"],
                                     federation={"enabled": False}),
                         log_path=tmp_path / "second.log")
    try:
        first.wait_ready(60)
        second.wait_ready(60)
        log = wait_until(lambda: (tmp_path / "second.log").read_text(), 10)
        share = max(1, cores.cores() // 2)
        assert f"each worker of this one takes {share} of its {cores.cores()} cores" in log
        # the first took every core before the second came: said, with the fix
        assert f"give each [model] threads = {share}" in log
        doctor = zswarm("doctor", "--config", str(tmp_path / "first" / "swarm.toml"))
        assert "cores" in doctor.stdout and f"threads = {share}" in doctor.stdout
    finally:
        second.stop()
        first.stop()
