"""Joining a swarm in one step, across network namespaces the test builds (issue 18).

Four members run the default model with discovery "static" (no multicast used), each
listing the others; a newcomer given one member's address sees all four ALIVE (peer
exchange); a host with no model pulls it from the members and `zswarm join` brings it
from an empty state dir to an answer. Skipped, with the reason, where namespaces
cannot be built.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zswarm.testing.cluster import NodeProcess, address_of, node_config, wait_until

from .netns import Lan, netns_available, run_cli, states

_why = netns_available()
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""), pytest.mark.timeout(300),
              pytest.mark.model]

MEMBERS = 4
REAL = {"model": {"path": "default", "n_ctx": 512},
        "scheduler": {"worker_start_timeout_ms": 120_000}}


@pytest.fixture(scope="module")
def lan():
    with Lan(MEMBERS + 2) as lan:
        yield lan


@pytest.fixture(scope="module")
def members(lan, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("members")
    hosts = lan.names[:MEMBERS]
    endpoints = [address_of(tmp, f"m{i}", f"tcp://{lan.addresses[h]}:17617")
                 for i, h in enumerate(hosts)]
    procs = {}
    try:
        for i, host in enumerate(hosts):
            cfg = node_config(tmp, f"m{i}", swarm="ns-join", bind=lan.addresses[host],
                              ports={"rpc": 17617, "pub": 17616},
                              federation={"discovery": "static", "peers": endpoints}, **REAL)
            procs[f"m{i}"] = NodeProcess(cfg, netns=host)
        for proc in procs.values():
            proc.wait_ready(120)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def test_a_newcomer_given_one_address_sees_every_member(lan, members, tmp_path):
    host = lan.names[MEMBERS]
    cfg = node_config(tmp_path, "newcomer", swarm="ns-join", bind=lan.addresses[host],
                      answers=["hi"], federation={"discovery": "static",
                                                  "peers": [members["m0"].rpc]})
    with NodeProcess(cfg, netns=host) as node:
        node.wait_ready(60)
        want = {f"m{i}": "alive" for i in range(MEMBERS)}
        wait_until(lambda: all(states(host, node).get(k) == v for k, v in want.items()), 20,
                   what="the newcomer sees every member", interval_s=0.2)
        out = run_cli(host, "peers", "--json", "--node", node.rpc)
        sources = {p["name"]: p["source"] for p in json.loads(out.stdout)}
        assert sources["m0"] == "static"
        assert all(sources[f"m{i}"] == "exchange" for i in range(1, MEMBERS)), sources


def test_a_host_without_the_model_pulls_it_and_joins_in_one_step(lan, members,
                                                                  tmp_path: Path):
    host = lan.names[MEMBERS + 1]
    pulled = run_cli(host, "pull", "SmolLM2", "--node", members["m0"].rpc, "--dir",
                     str(tmp_path / "pulled"), "--json", timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    result = json.loads(pulled.stdout)
    assert len(result["holders"]) >= 2 and result["bad_pieces"] == 0, result
    config = tmp_path / "swarm.toml"
    joined = run_cli(host, "join", members["m1"].rpc, "--no-start", "--name", "joiner",
                     "--state-dir", str(tmp_path / "state"), "--config", str(config))
    assert joined.returncode == 0, joined.stderr
    config.write_text(config.read_text().replace(
        'bind = "auto"', f'bind = "{lan.addresses[host]}"'))
    with NodeProcess(config, netns=host) as node:  # pulls the model, then serves it
        info = node.wait_ready(180)
        assert info.model_id == result["model_id"]
        asked = run_cli(host, "ask", "What is 2 + 2?", "--json", "--max-tokens", "8",
                        "--node", node.rpc, timeout=120)
        assert asked.returncode == 0, asked.stderr
        assert json.loads(asked.stdout)["answer"]
        assert "pulling the model" in node.log()
