"""The swarm's models: each once with its holders; a request's model name resolved."""

from __future__ import annotations

import pytest

from zswarm.core.catalog import Holder, catalog, resolve
from zswarm.errors import ModelNotFound, RequestRefused

OWN = "SmolLM2.Q4_1.gguf@aaaa"
PEERS = {"SmolLM2.Q8_0.gguf@bbbb": [Holder("b1", "b"), Holder("c1", "c")],
         OWN: [Holder("d1", "d")], "same.gguf@1111": [Holder("e1", "e")],
         "same.gguf@2222": [Holder("f1", "f")]}


def test_each_model_once_with_this_node_first():
    found = catalog(OWN, Holder("a1", "a"), PEERS)
    assert list(found)[0] == OWN and [h.name for h in found[OWN]] == ["a", "d"]
    assert [h.name for h in found["SmolLM2.Q8_0.gguf@bbbb"]] == ["b", "c"]


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
