"""serve_ask: the one path of a client's ask (RPC and HTTP call it): state, limits, count."""

from __future__ import annotations

import pytest

from zswarm.core.messages import ChatMessage, GenerateRequest, NodeCard
from zswarm.errors import Draining, Loading, RequestRefused
from zswarm.runtime.context import NodeContext, NoPeers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.swarm import serving
from zswarm.runtime.votes import serve_ask
from zswarm.testing.inline import InlinePool

ASK = GenerateRequest(messages=(ChatMessage(role="user", content="6 * 7?"),), n=1)


async def test_refusals_and_answers_are_counted_in_one_place(config_factory):
    cfg = config_factory(federation={"enabled": False})
    card = NodeCard(node_id="s", name="s", model_id="scripted", workers=1, rpc="", pub="")
    ctx = NodeContext(cfg, card, Scheduler(max_queue=8))
    pool = InlinePool(ctx.scheduler, workers=1)
    coordinator = Coordinator(ctx, pool, NoPeers())
    with pytest.raises(Loading):  # before the workers are up
        await serve_ask(ctx, coordinator, ASK, strategy="majority", deadline_ms=5000)
    async with serving(ctx, pool):
        answer, report = await serve_ask(ctx, coordinator, ASK, strategy="majority",
                                         deadline_ms=5000)
        assert answer and report.candidates
        with pytest.raises(RequestRefused):  # over this node's limit of n
            await serve_ask(ctx, coordinator, GenerateRequest(messages=ASK.messages, n=17),
                            strategy="majority", deadline_ms=5000)
        with pytest.raises(RequestRefused):  # a deadline out of range: counted the same
            await serve_ask(ctx, coordinator, ASK, strategy="majority", deadline_ms=0)
        ctx.state = "draining"
        with pytest.raises(Draining):
            await serve_ask(ctx, coordinator, ASK, strategy="majority", deadline_ms=5000)
    assert dict(ctx.stats.errors) == {"loading": 1, "protocol": 2, "draining": 1}
