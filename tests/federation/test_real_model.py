"""One federated round with the real default model (SmolLM2-135M) on two nodes."""

from __future__ import annotations

import pytest
import trio

from zswarm import client
from zswarm.core.messages import ChatMessage, GenerateRequest, SamplingParams

from .conftest import wait_peers

pytestmark = [pytest.mark.model, pytest.mark.timeout(180)]


async def test_two_real_nodes_agree_on_paris(cluster):
    a = await cluster.start("a", federation={"discovery": "mdns"})
    await cluster.start("b", federation={"discovery": "mdns"})
    await wait_peers(a, lambda t: t.get("b") == "alive")
    request = GenerateRequest(
        messages=(ChatMessage(role="system", content="You are a helpful AI assistant. "
                              "Answer concisely."),
                  ChatMessage(role="user", content="What is the capital of France?")),
        params=SamplingParams(max_tokens=24, temperature=0.0), n=2)
    reply = await trio.to_thread.run_sync(
        lambda: client.ask(a.rpc_endpoint, request, strategy="majority", deadline_ms=60_000))
    assert "Paris" in reply.answer
    assert sorted(c.node for c in reply.report.candidates) == ["a", "b"]
    assert all(c.tokens > 0 and c.finish_reason == "stop" for c in reply.report.candidates)
    assert reply.report.agreement == 1.0  # same model, greedy: the same answer twice
