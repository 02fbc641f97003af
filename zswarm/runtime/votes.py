"""Serving a peer's vote: one function, whichever transport brought the request.

The RPC server (VoteRequest over ZeroMQ) and the HTTP shim (POST /v1/federation/vote)
both call ``serve_vote``: the same admission rule (core/limits.py), the same count
of votes served, candidates from the local workers only (never fanned out again:
one hop), and the same Vote message back.
"""

from __future__ import annotations

import time

from zswarm.core.limits import admit, deadline_s
from zswarm.core.messages import GenerateRequest, Vote
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
    candidates = await coordinator.gather_local(request,
                                                deadline_s=deadline_s(limits, deadline_ms))
    return Vote(request_id=request_id, node_id=ctx.card.node_id, name=ctx.card.name,
                candidates=candidates, elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))
