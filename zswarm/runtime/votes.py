"""Serving a request: one function per kind, whichever transport brought it.

``serve_vote``: a peer's vote (RPC VoteRequest, POST /v1/federation/vote): the same
admission rule (core/limits.py), the same count of votes served, candidates from the
local workers only (never fanned out again: one hop), and the same Vote back.
``serve_ask``: a client's ask (RPC ClientRequest, the OpenAI routes): the node's state
(``NodeContext.refusal``: loading, draining) and limits, the coordinator's ask, and
the count of what failed by kind (``stats.errors``: refusals included, the same over
every transport). The transports only translate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from zswarm.core.limits import admit, check_strategy, deadline_s
from zswarm.core.messages import GenerateRequest, Report, Vote
from zswarm.errors import ZswarmError
from zswarm.runtime.context import NodeContext
from zswarm.runtime.coordinator import Coordinator


async def serve_vote(ctx: NodeContext, coordinator: Coordinator, *, request_id: str,
                     request: GenerateRequest, deadline_ms: int) -> Vote:
    """Generate ``request.n`` candidates locally; raises what admission or the workers raise.

    The caller holds ``ctx.requests`` while this runs (a drain waits for it).
    """
    t0 = time.perf_counter()
    ctx.stats.votes_received += 1
    limits = ctx.config.limits
    admit(limits, request)
    deadline = trio.current_time() + deadline_s(limits, deadline_ms)
    candidates = await coordinator.gather_local(request, deadline=deadline)
    return Vote(request_id=request_id, node_id=ctx.card.node_id, name=ctx.card.name,
                candidates=candidates, elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))


async def serve_ask(ctx: NodeContext, coordinator: Coordinator, request: GenerateRequest, *,
                    strategy: str, deadline_ms: int | None,
                    on_token: Callable[[int, str], None] | None = None,
                    model_id: str | None = None, peers: list[str] | None = None,
                    early_stop: bool = True, adaptive: bool = False) -> tuple[str, Report]:
    """The answer and its report; raises (and counts) what admission or the ask raise.

    ``deadline_ms``: the time the asker gives it (None: the node's default).
    ``adaptive``: ``request.n`` is a budget (core/stopping.py)."""
    try:
        refusal = ctx.refusal()
        if refusal is not None:
            raise refusal
        limits = ctx.config.limits
        checked = check_strategy(strategy, adaptive=adaptive)
        admit(limits, request)
        deadline = trio.current_time() + deadline_s(limits, deadline_ms)
        return await coordinator.ask(request, strategy=checked, deadline=deadline,
                                     on_token=on_token, model_id=model_id, peers=peers,
                                     early_stop=early_stop, adaptive=adaptive)
    except ZswarmError as exc:
        ctx.stats.errors[exc.kind] += 1
        raise
