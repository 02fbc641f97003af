"""pull.holders: which members serve a model a puller names (every model their cards list)."""

from __future__ import annotations

import pytest

from zswarm.core.messages import HeldModel, Load, NodeCard, PeerInfo, PeersReply
from zswarm.errors import ModelNotFound
from zswarm.pull import holders


def _peer(name: str, *models: str, state: str = "alive") -> PeerInfo:
    return PeerInfo(node_id=name, name=name, address="127.0.0.1", state=state,  # type: ignore[arg-type]
                    model_id=models[0], load=Load(models=["unloaded"] * len(models)),
                    last_seen_s=0.0, rtt_ms=1.0, source="static", rpc=f"tcp://{name}:1",
                    models=[HeldModel(model_id=m) for m in models] if len(models) > 1 else [])


def test_a_model_any_member_lists_is_found_with_every_holder():
    me = NodeCard(node_id="a", name="a", model_id="small.gguf@1", workers=1, rpc="tcp://a:1",
                  pub="", models=[HeldModel(model_id="small.gguf@1"),
                                  HeldModel(model_id="coder.gguf@2")])
    reply = PeersReply(request_id="r", node=me, load=Load(models=["loaded", "unloaded"]),
                       peers=[_peer("b", "small.gguf@1", "coder.gguf@2"),
                              _peer("c", "coder.gguf@2"),
                              _peer("d", "coder.gguf@2", state="dead")])
    model_id, found = holders(reply, "coder.gguf")  # not the default model of a or b
    assert model_id == "coder.gguf@2" and [h.name for h in found] == ["a", "b", "c"]
    with pytest.raises(ModelNotFound, match="the swarm has: coder.gguf@2, small.gguf@1"):
        holders(reply, "big.gguf")
