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


def test_the_node_key_is_made_once_private_and_its_id_derives_from_it(tmp_path, caplog):
    from zswarm.core.ids import is_public, node_id_of

    cfg = parse_config({"node": {"state_dir": str(tmp_path / "state")}})
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "node_id").write_text("a2a2a2a2a2a2a2a2\n")  # before ids were keys
    with caplog.at_level("WARNING", logger="zswarm.statedir"):
        key = statedir.load_node_key(cfg)
    assert is_public(key.public) and key.node_id == node_id_of(key.public)
    assert (tmp_path / "state" / "node.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "state" / "node_id").exists()
    said = caplog.text  # the new id said once, with the old one
    assert key.node_id in said and "a2a2a2a2a2a2a2a2" in said and "weights" in said
    assert statedir.load_node_key(cfg) == key and statedir.node_id(cfg) == key.node_id
    assert key.secret not in repr(key)
