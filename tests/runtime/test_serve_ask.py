"""serve_ask: the one path of a client's ask (RPC and HTTP call it): state, limits, count;
and the ask each door builds (zswarm/asks.build): every default resolved."""

from __future__ import annotations

import pytest

from zswarm import asks
from zswarm.asks import Ask
from zswarm.config import parse_config
from zswarm.core.messages import ChatMessage, GenerateRequest, NodeCard
from zswarm.errors import Draining, Loading, RequestRefused
from zswarm.runtime.context import NodeContext, NoPeers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.local import serving
from zswarm.runtime.models import Models
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.serving import serve_ask
from zswarm.testing.inline import InlinePool

QUESTION = GenerateRequest(messages=(ChatMessage(role="user", content="6 * 7?"),), n=1)
ASK = Ask(QUESTION, "majority", 5000)


async def test_refusals_and_answers_are_counted_in_one_place(config_factory):
    cfg = config_factory(federation={"enabled": False})
    card = NodeCard(node_id="s", name="s", model_id="scripted", workers=1, rpc="", pub="")
    pool = InlinePool(Scheduler(max_queue=8), workers=1)
    ctx = NodeContext(cfg, card, Models.fixed(pool, "scripted"))
    coordinator = Coordinator(ctx, NoPeers())
    with pytest.raises(Loading):  # before the workers are up
        await serve_ask(ctx, coordinator, ASK)
    async with serving(ctx, ctx.models):
        answer, report = await serve_ask(ctx, coordinator, ASK)
        assert answer and report.candidates
        with pytest.raises(RequestRefused):  # over this node's limit of n
            await serve_ask(ctx, coordinator,
                            Ask(GenerateRequest(messages=QUESTION.messages, n=17), "majority",
                                5000))
        ctx.drain()
        with pytest.raises(Draining):
            await serve_ask(ctx, coordinator, ASK)
    assert dict(ctx.stats.errors) == {"loading": 1, "protocol": 1, "draining": 1}


def test_an_ask_is_built_with_every_default_resolved():
    cfg = parse_config({"consensus": {"strategy": "best_of_n"},
                        "scheduler": {"default_deadline_ms": 7000}})
    ask = asks.build(cfg, QUESTION)
    assert (ask.strategy, ask.deadline_ms, ask.adaptive, ask.early_stop, ask.peers) == (
        "best_of_n", 7000, False, True, None)
    chosen = asks.build(cfg, QUESTION, strategy="majority", deadline_ms=250, peers=[])
    assert (chosen.strategy, chosen.deadline_ms, chosen.peers) == ("majority", 250, ())


@pytest.mark.parametrize(("choice", "field"), [
    ({"strategy": "loudest"}, "strategy"),
    ({"strategy": "first_valid", "adaptive": True}, "budget"),
    ({"deadline_ms": 0}, "deadline_ms"),
    ({"deadline_ms": 3_600_001}, "deadline_ms"),
])
def test_an_ask_that_cannot_be_built_names_its_field(choice, field):
    with pytest.raises(RequestRefused) as info:
        asks.build(parse_config({}), QUESTION, **choice)
    assert info.value.field == field
