"""The node's life: one state machine (NodeContext), and what each state refuses."""

from __future__ import annotations

import pytest

from zswarm.config import parse_config
from zswarm.core.messages import NodeCard
from zswarm.errors import Draining, Loading, LocalProtocolError
from zswarm.runtime.context import NodeContext
from zswarm.runtime.models import Models
from zswarm.runtime.scheduler import Scheduler
from zswarm.testing.inline import InlinePool

CARD = NodeCard(node_id="s", name="s", model_id="m", workers=1, rpc="", pub="")


def context() -> NodeContext:
    return NodeContext(parse_config({}), CARD, Models.fixed(InlinePool(Scheduler(max_queue=8)), "m"))


def test_loading_then_ready_then_draining_each_with_its_refusal():
    ctx = context()
    assert ctx.state == "loading" and isinstance(ctx.refusal(), Loading)
    assert ctx.load().state == "loading"
    ctx.ready()
    assert ctx.state == "ready" and ctx.refusal() is None
    ctx.drain()
    assert ctx.state == "draining" and isinstance(ctx.refusal(), Draining)
    assert ctx.load().state == "draining"


def test_a_node_stopped_while_loading_drains():
    ctx = context()
    ctx.drain()
    assert isinstance(ctx.refusal(), Draining)


def test_no_transition_goes_back():
    ctx = context()
    ctx.ready()
    with pytest.raises(LocalProtocolError):
        ctx.ready()
    ctx.drain()
    with pytest.raises(LocalProtocolError):
        ctx.ready()
    with pytest.raises(LocalProtocolError):
        ctx.drain()
