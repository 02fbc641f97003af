"""The state dir: one running node per directory, node.json read back typed."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from zswarm import statedir
from zswarm.config import parse_config
from zswarm.errors import ConfigError
from zswarm.statedir import NodeInfo

INFO = NodeInfo(node_id="abcdef0123456789", name="a", host="127.0.0.1",
                rpc_endpoint="tcp://127.0.0.1:7", pub_endpoint="", http_port=0,
                model_id="m", workers=1, federation=False)


def test_a_second_holder_of_a_state_dir_is_refused_naming_the_first(tmp_path):
    cfg = parse_config({"node": {"state_dir": str(tmp_path / "state")}}, source="b.toml")
    assert not statedir.in_use(cfg)
    held = statedir.lock(cfg)
    try:
        statedir.write(cfg, INFO)
        assert statedir.in_use(cfg)
        with pytest.raises(ConfigError) as refused:
            statedir.lock(cfg)
        said = str(refused.value)
        assert said.startswith(f"b.toml: node.state_dir {tmp_path / 'state'} is in use by "
                               f"node a (pid {os.getpid()}, tcp://127.0.0.1:7)")
        assert "[node] state_dir" in said and "--state-dir" in said
    finally:
        held.close()
    assert not statedir.in_use(cfg)  # let go: the next node may start
    statedir.lock(cfg).close()


def test_node_json_round_trips_and_a_damaged_one_reads_as_none(tmp_path):
    cfg = parse_config({"node": {"state_dir": str(tmp_path)}})
    assert statedir.read(cfg) is None
    statedir.write(cfg, INFO)
    assert statedir.read(cfg) == dataclasses.replace(INFO, pid=os.getpid())
    for bad in (b"{", b"[]", json.dumps({**dataclasses.asdict(INFO), "pid": "x"}).encode(),
                b"\xff\xfe"):
        (tmp_path / "node.json").write_bytes(bad)
        assert statedir.read(cfg) is None
    statedir.write(cfg, INFO)
    statedir.remove(cfg)
    assert not (tmp_path / "node.json").exists()
    (tmp_path / "node.json").write_text(json.dumps({**dataclasses.asdict(INFO), "pid": 1}))
    statedir.remove(cfg)  # another process's: kept
    assert (tmp_path / "node.json").exists()
