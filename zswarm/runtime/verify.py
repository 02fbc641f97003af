"""A peer's claimed log-probability decides nothing until this node's model confirms it.

Owns the check between gathering and answering. After the strategy decides, the peer
candidates whose log-probabilities helped decide (core/consensus.deciding_claims) are
settled, and the strategy decides again, until no unsettled claim decides:

- **not needed**: under ``confidence``, when every candidate carries a log-probability
  of one model (so each weight depends on its own claim only), the claims the winning
  answer does not need - it still wins with them at the least confidence there is
  (CONFIDENCE_FLOOR), taken least confident first - are not checked: a checked figure
  could only be higher than that. The others are checked; once the answer stands on
  what is checked, the claims not needed are dropped (so a liar's text is not the one
  shown for its claim);
- **checked**: the others are re-scored with the local model (Engine.score, a
  teacher-forced pass over the candidate's tokens whose prompt the worker holds in its
  prompt cache), all of them in one worker request; under ``best_of_n`` every peer claim
  above the best checked or local score at once (the next in line when the first
  falls), and their claims replaced by the verified figures. At most MAX_RESCORES per
  request;
- **dropped**: a claim that cannot be checked (another model, no time or worker left,
  an engine that cannot score, the budget spent) counts like a candidate without
  log-probabilities.

A re-scored or dropped candidate's per-token figures go with its claim. So one member
that lies about its scores cannot outweigh honest nodes; it still has its candidates'
votes, like any member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import trio

from zswarm.core.consensus import Decision, Strategy, deciding_claims
from zswarm.core.ids import new_request_id
from zswarm.core.messages import Candidate, GenerateRequest, WorkCandidate, WorkToken
from zswarm.errors import ZswarmError
from zswarm.runtime.context import NodeContext

#: peer candidates re-scored per request at most (each costs one pass over its answer)
MAX_RESCORES = 4
#: a claim at least as low as any confidence (CONFIDENCE_FLOOR) it can be given
_LEAST = -1e9


@dataclass
class Checks:
    """What the check of one decision did (the report's note, the bench's breakdown)."""

    rescored: int = 0
    not_needed: int = 0
    seconds: float = 0.0


async def verified_decision(ctx: NodeContext, model_id: str, strategy: Strategy,
                            request: GenerateRequest, candidates: list[Candidate],
                            decide: Callable[[Sequence[Candidate]], Decision], *,
                            deadline: float) -> tuple[Decision, Checks]:
    """Decide with every deciding claim settled; ``candidates`` is updated in place
    (verified figures, claims not needed or not checkable dropped). Claims are checked
    with this node's ``model_id``, the ask's model: of another, they are dropped."""
    me = ctx.card
    checks = Checks()
    checked: set[int] = set()
    started = trio.current_time()

    def peer_claim(i: int) -> bool:
        cand = candidates[i]
        return i not in checked and cand.node_id != me.node_id and \
            cand.mean_logprob is not None

    try:
        while True:
            decision = decide(candidates)
            suspects = [i for i in deciding_claims(strategy, candidates, decision)
                        if peer_claim(i)]
            if not suspects:
                return decision, checks
            spare = _not_needed(candidates, decision, suspects, decide) \
                if strategy == "confidence" else []
            if len(spare) == len(suspects):  # the answer stands on what is settled
                for i in spare:
                    candidates[i] = _with_claim(candidates[i], None)
                checks.not_needed += len(spare)
                return decide(candidates), checks
            if strategy == "best_of_n":
                suspects = _in_line(candidates, suspects[0], peer_claim)
            need = [i for i in suspects if i not in spare]
            room = max(0, MAX_RESCORES - checks.rescored)
            batch = [i for i in need if candidates[i].model_id == model_id][:room]
            scores = await _rescore(ctx, model_id, request,
                                    [candidates[i].text for i in batch], deadline)
            verified = {i: scores.get(k) for k, i in enumerate(batch)}
            checks.rescored += len(batch)
            for i in need:
                checked.add(i)
                candidates[i] = _with_claim(candidates[i], verified.get(i))
    finally:
        checks.seconds = trio.current_time() - started


def _with_claim(cand: Candidate, mean_logprob: float | None) -> Candidate:
    return msgspec.structs.replace(cand, mean_logprob=mean_logprob, token_logprobs=None)


def _not_needed(candidates: list[Candidate], decision: Decision, suspects: list[int],
                decide: Callable[[Sequence[Candidate]], Decision]) -> list[int]:
    """The suspects (confidence) whose claims the winning answer does not need: it still
    wins with all of them at the least confidence there is. Taken least confident first,
    as long as the answer stands. Only where each weight depends on its own claim alone
    (every candidate has one, of one model); elsewhere none."""
    if any(c.mean_logprob is None for c in candidates) or \
            len({c.model_id for c in candidates}) > 1 or not decision.answer_keys:
        return []
    key = decision.answer_keys[decision.winner]
    spare: list[int] = []
    trial = list(candidates)
    for i in sorted(suspects, key=lambda i: candidates[i].mean_logprob or 0.0):
        trial[i] = _with_claim(candidates[i], _LEAST)
        alt = decide(trial)
        if alt.answer_keys and alt.answer_keys[alt.winner] == key:
            spare.append(i)
        else:
            trial[i] = candidates[i]
    return spare


def _in_line(candidates: list[Candidate], winner: int,
             unsettled: Callable[[int], bool]) -> list[int]:
    """best_of_n: the winner and every unsettled peer claim above the best settled score
    (local or checked), best first: whoever would win next if the ones above fell."""
    settled = [c.mean_logprob for i, c in enumerate(candidates)
               if not unsettled(i) and c.mean_logprob is not None]
    bar = max(settled, default=float("-inf"))
    above = [i for i, c in enumerate(candidates) if unsettled(i) and i != winner
             and c.mean_logprob is not None and c.mean_logprob > bar]
    return [winner, *sorted(above, key=lambda i: -(candidates[i].mean_logprob or 0.0))]


async def _rescore(ctx: NodeContext, model_id: str, request: GenerateRequest,
                   texts: list[str], deadline: float) -> dict[int, float]:
    """This node's model's mean log-probability of each text, by position (missing: no
    time, no worker, or the engine cannot score). One worker request for all of them:
    the first pass leaves the prompt in its cache, the others decode their answers only."""
    got: dict[int, float] = {}
    if not texts:
        return got

    def on_event(event: WorkToken | WorkCandidate) -> None:
        if isinstance(event, WorkCandidate) and event.candidate.mean_logprob is not None \
                and 0 <= event.index < len(texts):
            got[event.index] = event.candidate.mean_logprob

    one = msgspec.structs.replace(request, n=1, first_index=0)
    with trio.move_on_at(deadline):
        try:
            async with ctx.models.use(model_id) as model, model.scheduler.slot() as worker:
                assert model.pool is not None
                await model.pool.run(worker, new_request_id(), one, on_event=on_event,
                                     score=tuple(texts))
        except ZswarmError:
            pass
    return got
