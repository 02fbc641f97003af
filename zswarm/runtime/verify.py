"""A peer's claimed log-probability decides nothing until this node's model confirms it.

Owns the check between gathering and answering: after the strategy decides, the peer
candidates whose log-probabilities helped decide (core/consensus.deciding_claims) are
re-scored with the local model (a teacher-forced pass over the candidate's tokens,
Engine.score through a local worker), their claims replaced by the verified figures,
and the strategy decides again; at most MAX_RESCORES per request. A claim that cannot
be checked (another model, no time or worker left, an engine that cannot score, the
budget spent) is dropped, so the candidate counts like one without log-probabilities;
a re-scored candidate's per-token figures are dropped with its claim.
So one member that lies about its scores cannot outweigh honest nodes; it still has
its candidates' votes, like any member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
import trio

from zswarm.core.consensus import Decision, Strategy, deciding_claims
from zswarm.core.ids import new_request_id
from zswarm.core.messages import Candidate, GenerateRequest, WorkCandidate, WorkToken
from zswarm.errors import ZswarmError
from zswarm.runtime.context import NodeContext, Pool

#: peer candidates re-scored per request at most (each costs one local prompt pass)
MAX_RESCORES = 4


async def verified_decision(ctx: NodeContext, pool: Pool, strategy: Strategy,
                            request: GenerateRequest, candidates: list[Candidate],
                            decide: Callable[[Sequence[Candidate]], Decision], *,
                            deadline: float) -> tuple[Decision, int]:
    """Decide with every deciding claim checked; returns (decision, claims re-scored).

    ``candidates`` is updated in place (verified figures, unverifiable claims dropped).
    """
    me = ctx.card
    checked: set[int] = set()
    while True:
        decision = decide(candidates)
        suspects = [i for i in deciding_claims(strategy, candidates, decision)
                    if i not in checked and candidates[i].node_id != me.node_id
                    and candidates[i].mean_logprob is not None]
        if not suspects:
            return decision, len(checked)
        for i in suspects:
            cand = candidates[i]
            verified = None
            if cand.model_id == me.model_id and len(checked) < MAX_RESCORES:
                verified = await _rescore(ctx, pool, request, cand.text, deadline)
            checked.add(i)
            candidates[i] = msgspec.structs.replace(cand, mean_logprob=verified,
                                                    token_logprobs=None)


async def _rescore(ctx: NodeContext, pool: Pool, request: GenerateRequest, text: str,
                   deadline: float) -> float | None:
    """This node's model's mean log-probability of ``text`` (None: no time, no worker)."""
    got: float | None = None

    def on_event(event: WorkToken | WorkCandidate) -> None:
        nonlocal got
        if isinstance(event, WorkCandidate):
            got = event.candidate.mean_logprob

    one = msgspec.structs.replace(request, n=1, first_index=0)
    with trio.move_on_at(deadline):
        try:
            async with ctx.scheduler.slot() as worker:
                await pool.run(worker, new_request_id(), one, on_event=on_event, score=text)
        except ZswarmError:
            return None
    return got
