from pathlib import Path

import pytest

from zswarm.config import load_config, parse_config
from zswarm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_example_swarm_toml_is_valid_and_matches_defaults():
    cfg = load_config(ROOT / "swarm.toml")
    defaults = parse_config({})
    assert cfg.model == defaults.model and cfg.scheduler == defaults.scheduler
    assert cfg.generation == defaults.generation and cfg.ports == defaults.ports
    assert cfg.federation == defaults.federation and cfg.consensus == defaults.consensus


@pytest.mark.parametrize(("text", "match"), [
    ("[node]\nworkerz = 2\n", r"swarm.toml: unknown key 'node.workerz'"),
    ("[node]\nworkers = \"2\"\n", r"node.workers: expected int, got str"),
    ("[consensus]\nstrategy = \"best\"\n", r"consensus.strategy: expected one of"),
    ("[model]\nbackend = \"vllm\"\n", r"model.backend: expected 'llamacpp' or 'ctransformers'"),
    ("[ports]\nrpc = 70000\n", r"ports.rpc"),
    ("[node\n", r"not valid TOML"),
    ("node = 3\n", r"node: expected a table"),
    ("[generation]\ntemperature = true\n", r"generation.temperature: expected float"),
    ("[federation]\ndiscovery = \"dns\"\n", r"federation.discovery: expected 'mdns'"),
    ("[federation]\npeers = [\"10.0.0.2\"]\n", r"federation.peers\[0\]: expected tcp://host:port"),
    ("[federation]\nliveness = 1\n", r"federation.liveness: expected 2 to 100"),
    ("[federation]\nheartbeat_interval_ms = 5\n", r"federation.heartbeat_interval_ms"),
    ("[federation]\nswarm = \"\"\n", r"federation.swarm"),
])
def test_bad_config_names_file_key_and_type(tmp_path, text, match):
    path = tmp_path / "swarm.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_int_accepted_for_float():
    assert parse_config({"generation": {"temperature": 1}}).generation.temperature == 1.0
