"""Serving a request: one function per kind, whichever transport brought it.

``serve_vote``: a peer's vote (RPC VoteRequest, POST /v1/federation/vote): the same
admission rule (core/limits.py), the same count of votes served, candidates from the
local workers only (never fanned out again: one hop), and the same Vote back.
``serve_ask``: a client's ask (zswarm/asks.py's ``Ask``, built at the door: `zswarm ask
--local`, RPC ClientRequest, the OpenAI routes): the node's state
(``NodeContext.refusal``: loading, draining) and limits, the coordinator's ask, and
the count of what failed by kind (``stats.errors``: refusals included, the same over
every transport; an ask its door could not build - an unknown strategy, a deadline
out of range - is refused there, like any malformed body). The transports only
translate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from zswarm.asks import Ask
from zswarm.core.limits import admit, deadline_s
from zswarm.core.messages import Candidate, GenerateRequest, Report, Vote
from zswarm.errors import RequestRefused, ZswarmError
from zswarm.runtime.context import NodeContext
from zswarm.runtime.coordinator import Coordinator


async def serve_vote(ctx: NodeContext, coordinator: Coordinator, *, request_id: str,
                     request: GenerateRequest, deadline_ms: int | None,
                     model_id: str = "") -> Vote:
    """Generate ``request.n`` candidates locally; raises what admission or the workers raise.
    ``deadline_ms``: the time the asker gives it (None: the node's default); ``model_id``:
    the model the asker expects ("": any), refused if this node does not serve it.

    The caller holds ``ctx.requests`` while this runs (a drain waits for it).
    """
    t0 = time.perf_counter()
    ctx.stats.votes_received += 1
    limits = ctx.config.limits
    if model_id and ctx.models.find(model_id) is None:
        raise RequestRefused(f"this node does not serve {model_id} (it serves "
                             f"{', '.join(ctx.models.residents)})", field="model_id")
    admit(limits, request)
    deadline = trio.current_time() + deadline_s(limits, deadline_ms)
    candidates = await coordinator.gather_local(request, deadline=deadline,
                                                model_id=model_id or None)
    return Vote(request_id=request_id, node_id=ctx.card.node_id, name=ctx.card.name,
                candidates=candidates, elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))


async def serve_ask(ctx: NodeContext, coordinator: Coordinator, ask: Ask, *,
                    on_token: Callable[[int, str], None] | None = None,
                    on_candidate: Callable[[Candidate], None] | None = None
                    ) -> tuple[str, Report]:
    """The answer and its report; raises (and counts) what admission or the ask raise.
    ``on_token``: where a one-candidate ask streams its tokens; ``on_candidate``: told
    of each candidate as it arrives."""
    try:
        refusal = ctx.refusal()
        if refusal is not None:
            raise refusal
        admit(ctx.config.limits, ask.request)
        return await coordinator.ask(ask, on_token=on_token, on_candidate=on_candidate)
    except ZswarmError as exc:
        ctx.stats.errors[exc.kind] += 1
        raise
