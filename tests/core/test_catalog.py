"""The swarm's models: each once with its holders; a request's model name resolved."""

from __future__ import annotations

import pytest

from tests.helpers import card
from zswarm.core.catalog import Holder, catalog, held_by, resolve
from zswarm.core.messages import HeldModel, Load
from zswarm.errors import ModelNotFound, RequestRefused

OWN = "SmolLM2.Q4_1.gguf@aaaa"
PEERS = {"SmolLM2.Q8_0.gguf@bbbb": [Holder("b1", "b"), Holder("c1", "c")],
         OWN: [Holder("d1", "d")], "same.gguf@1111": [Holder("e1", "e")],
         "same.gguf@2222": [Holder("f1", "f")]}


def test_each_model_once_with_this_node_first():
    found = catalog({OWN: Holder("a1", "a"), "coder.gguf@cccc": Holder("a1", "a", "unloaded")},
                    PEERS)
    assert list(found)[:2] == [OWN, "coder.gguf@cccc"]
    assert [h.name for h in found[OWN]] == ["a", "d"]
    assert [h.name for h in found["SmolLM2.Q8_0.gguf@bbbb"]] == ["b", "c"]


def test_a_model_is_named_by_the_name_a_holder_gives_it():
    models = {**PEERS, "x.gguf@3333": [Holder("g1", "g", model_name="coder")]}
    assert resolve("coder", OWN, models) == "x.gguf@3333"


def test_a_card_lists_its_models_with_the_states_its_heartbeat_says():
    one = card("a")
    assert held_by(one, Load()) == [(HeldModel(model_id=one.model_id), "loaded")]
    two = card("b", models=[HeldModel(model_id="p@1", name="p"), HeldModel(model_id="q@2")])
    assert [st for _, st in held_by(two, Load(models=["loaded", "unloaded"]))] == [
        "loaded", "unloaded"]
    # states that do not match the list (an old heartbeat) say nothing is loaded
    assert [st for _, st in held_by(two, Load(models=["loaded"]))] == ["unloaded"] * 2


@pytest.mark.parametrize(("name", "model_id"), [
    ("", OWN), ("default", OWN), (OWN, OWN), ("SmolLM2.Q4_1.gguf", OWN),
    ("SmolLM2.Q8_0.gguf", "SmolLM2.Q8_0.gguf@bbbb"), ("SmolLM2.Q8_0", "SmolLM2.Q8_0.gguf@bbbb"),
    ("same.gguf@2222", "same.gguf@2222"),  # an id wins where a name is shared
])
def test_a_model_is_named_by_id_or_file_name(name, model_id):
    assert resolve(name, OWN, PEERS) == model_id


def test_a_shared_name_is_refused_naming_the_ids():
    with pytest.raises(RequestRefused, match="same.gguf@1111, same.gguf@2222") as caught:
        resolve("same.gguf", OWN, PEERS)
    assert caught.value.field == "model"


def test_an_unknown_model_lists_the_models_there_are():
    with pytest.raises(ModelNotFound, match=r"it serves: SmolLM2.Q4_1.gguf@aaaa, SmolLM2.Q8_0"):
        resolve("gpt-17", OWN, PEERS)
    many = {f"m{i}.gguf@{i}": [Holder(str(i), str(i))] for i in range(40)}
    with pytest.raises(ModelNotFound, match="and 21 more"):
        resolve("gpt-17", OWN, many)


def test_a_name_this_nodes_config_gives_wins_over_the_same_name_a_peer_claims():
    models = {**PEERS, "x.gguf@3333": [Holder("g1", "g", model_name="small")],
              OWN: [Holder("a1", "a", model_name="small")]}
    with pytest.raises(RequestRefused):  # without knowing which names are its own
        resolve("small", OWN, models)
    assert resolve("small", OWN, models, own={"small": OWN}) == OWN
    assert resolve("x.gguf@3333", OWN, models, own={"x.gguf@3333": OWN}) == "x.gguf@3333"
