from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zswarm.config import Config, load_config, parse_config
from zswarm.errors import ConfigError
from zswarm.net.security import swarm_key

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
    ("[consensus]\nstrategy = \"best\"\n", r"consensus.strategy: expected 'first_valid' or"),
    ("[model]\nbackend = 3\n", r"model.backend: expected str, got int"),
    ("[ports]\nrpc = 70000\n", r"ports.rpc"),
    ("[node\n", r"not valid TOML"),
    ("node = 3\n", r"node: expected a table"),
    ("[generation]\ntemperature = true\n", r"generation.temperature: expected float"),
    ("[federation]\ndiscovery = \"dns\"\n", r"federation.discovery: expected 'mdns'"),
    ("[federation]\npeers = [\"10.0.0.2\"]\n", r"federation.peers\[0\]: expected tcp://host:port"),
    ("[federation]\nliveness = 1\n", r"federation.liveness: expected 2 to 100"),
    ("[federation]\nheartbeat_interval_ms = 5\n", r"federation.heartbeat_interval_ms"),
    ("[federation]\nswarm = \"\"\n", r"federation.swarm"),
    ("[federation]\nliveness = 200\n", r"federation.liveness: expected 2 to 100, got 200"),
    ("[consensus]\nweights = { a = \"x\" }\n", r"consensus.weights values: expected float"),
    ("[consensus]\nweights = { a = 0 }\n", r"consensus.weights values: expected more than 0"),
    ("[consensus]\nn = 20\n", r"consensus.n: expected 1 to generation.max_n \(16\), got 20"),
    ("[consensus.weights]\ndesk = 2.0\n", r"consensus.weights: 'desk' is not a node id: "
     r"weights are by node id, its 16 hex characters or the first 8 or more"),
    ("[consensus.weights]\nab12 = 2.0\n", r"consensus.weights: 'ab12' is not a node id"),
    ("[consensus]\nbudget = 0\n", r"consensus.budget: expected 1 to generation.max_n"),
    ("[consensus]\nbudget = 8\nn = 2\n", r"consensus.budget: give n .* or budget .* not both"),
    ("[consensus]\nbudget = 8\nstrategy = \"first_valid\"\n",
     r"consensus.budget: a budget needs the strategy confidence, majority, best_of_n; "
     r"first_valid takes n"),
    ("[generation]\nmax_n = 1000\n", r"generation.max_n: expected 1 to 32 \(the protocol's"),
    ("[model]\nn_ctx = 3\n", r"model.n_ctx: expected at least 64, got 3"),
    ("source = \"x\"\n", r"unknown key 'source'"),
    ("[node]\nbind = \"localhost\"\n", r"node.bind: expected \"auto\" or an IPv4 address"),
    ("[node]\nbind = \"::1\"\n", r"node.bind: expected \"auto\" or an IPv4 address .* '::1'"),
    ("[nodes]\n", r"unknown key 'nodes' \(known here: consensus, federation"),
])
def test_bad_config_names_file_key_and_type(tmp_path, text, match):
    path = tmp_path / "swarm.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such config file .leave out --config"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a directory


def test_int_accepted_for_float():
    assert parse_config({"generation": {"temperature": 1}}).generation.temperature == 1.0


toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=3),
    max_leaves=8)
keys = st.sampled_from(["node", "model", "generation", "scheduler", "consensus", "federation",
                        "http", "security", "ports", "workers", "peers", "weights", "n"])


@given(st.dictionaries(keys, st.dictionaries(keys | st.text(max_size=8), toml_values,
                                             max_size=4) | toml_values, max_size=4))
def test_any_data_gives_a_config_or_a_config_error(data):
    outcome: Config | ConfigError
    try:
        outcome = parse_config(data, source="swarm.toml")
    except ConfigError as exc:  # anything else escapes and fails the test
        outcome = exc
    if isinstance(outcome, ConfigError):
        assert str(outcome).startswith("swarm.toml: ")
    else:
        assert outcome.source == "swarm.toml"


def test_a_backend_nobody_installed_is_named_when_the_node_starts():
    from zswarm.engines.loader import model_id

    cfg = parse_config({"model": {"backend": "vllm"}})  # a plugin's name may be any
    with pytest.raises(ConfigError, match=r"model.backend: no engine backend 'vllm' is "
                       r"installed \(built in: llamacpp, ctransformers;"):
        model_id(cfg.model)


def test_relative_paths_are_relative_to_the_config_file(tmp_path, monkeypatch):
    home = tmp_path / "machine"
    home.mkdir()
    (home / "swarm.toml").write_text(
        '[node]\nstate_dir = "state"\n[model]\npath = "models/m.gguf"\n'
        '[security]\nswarm_key_file = "keys/swarm.key"\n[http]\napi_key_file = "../api.keys"\n')
    monkeypatch.chdir(tmp_path)  # the shell is elsewhere
    cfg = load_config("machine/swarm.toml")
    assert cfg.state_path == home / "state"
    assert cfg.model.path == str(home / "models/m.gguf")
    assert cfg.security.swarm_key_file == str(home / "keys/swarm.key")
    assert cfg.http.api_key_file == str(home / "../api.keys")
    with pytest.raises(ConfigError, match=str(home / "keys/swarm.key")):  # the path tried
        swarm_key(cfg.security.swarm_key_file, source=cfg.source)
    kept = tmp_path / "kept.toml"
    kept.write_text('[node]\nstate_dir = "~/zs"\n[model]\npath = "swarm:m.gguf@0011223344556677"\n')
    cfg = load_config(kept)
    assert cfg.node.state_dir == "~/zs" and cfg.model.path.startswith("swarm:")


# --- several models ---------------------------------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    ({"model": {}, "models": [{"name": "a"}]}, r"\[model\] and \[\[models\]\]: give one"),
    ({"models": [{"name": "a"}, {"name": "a"}]}, "two models are named 'a'"),
    ({"models": [{"name": "a", "foo": 1}]}, r"unknown key 'models\[0\].foo'"),
    ({"models": [{"name": "a", "workers": 100}]}, r"models\[0\].workers: expected 0 to 64"),
    ({"models": [{"name": str(i)} for i in range(17)]}, "at most 16 models per node"),
])
def test_several_models_are_checked_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_one_model_is_one_pinned_entry_and_several_keep_their_own_settings():
    (one,) = parse_config({"model": {"n_ctx": 2048}}).entries()
    assert one.pinned and one.preload and one.keep_alive_s == 0 and one.n_ctx == 2048
    cfg = parse_config({"node": {"workers": 2}, "models": [
        {"name": "a", "path": "default"}, {"name": "b", "path": "/m/b.gguf", "workers": 1,
                                           "keep_alive_s": 60}]})
    a, b = cfg.entries()
    assert cfg.model.path == "default"  # what reads one model reads the default one
    assert cfg.for_model(a).node.workers == 2 and cfg.for_model(b).node.workers == 1
    assert cfg.for_model(b).model.path == "/m/b.gguf" and not b.pinned and b.keep_alive_s == 60


def test_a_relative_model_path_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "swarm.toml").write_text(
        '[node]\nmodels_dir = "gguf"\n[[models]]\nname = "a"\npath = "m/a.gguf"\n'
        '[[models]]\nname = "b"\npath = "swarm:b.gguf"\n')
    cfg = load_config(tmp_path / "swarm.toml")
    assert [m.path for m in cfg.models] == [str(tmp_path / "m/a.gguf"), "swarm:b.gguf"]
    assert cfg.node.models_dir == str(tmp_path / "gguf")
