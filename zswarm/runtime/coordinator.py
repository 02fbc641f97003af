"""One request from start to answer: fan out to local workers and peers, gather, decide, cancel.

Owns: asking core/plan.py who generates how many candidates; splitting the local
share over the local workers (each part decoded as one batch); sending VoteRequests
to peers through the Federation; the request deadline (a cancel scope) and each
vote's deadline; asking the strategy after every candidate (early stop cancels the
stragglers, local and remote); retrying a local part once when its worker crashed
before producing anything; ``route`` mode with a local fallback; and the report of
who was asked, who answered, who timed out. ``gather_local`` serves a peer's vote:
local workers only, never fanned out again (one hop).
It must not: pick winners itself (core/consensus.py does), talk to worker processes
(runtime/workers.py) or to sockets (runtime/federation.py).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import trio

from zswarm.core.consensus import Decision, Validation, build_report, decide
from zswarm.core.ids import new_request_id
from zswarm.core.messages import (
    Candidate,
    GenerateRequest,
    Outcome,
    Participant,
    Report,
    WorkCandidate,
    WorkToken,
)
from zswarm.core.plan import ROUTE, SELF, NodeLoad, Plan, plan
from zswarm.errors import DeadlineExceeded, NoQuorum, Overloaded, WorkerCrashed, ZswarmError
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.stats import NodeStats
from zswarm.runtime.workers import WorkerPool

if TYPE_CHECKING:
    from zswarm.runtime.federation import Federation

log = logging.getLogger(__name__)

TokenSink = Callable[[int, str], None]


def split_n(n: int, workers: int) -> list[int]:
    """Spread n candidates over at most ``workers`` parts, as evenly as possible."""
    parts = max(1, min(n, workers))
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class _Asked:
    node: str
    requested: int = 0
    received: int = 0
    #: set when the part failed or timed out; else derived from what arrived
    outcome: Outcome | None = None
    detail: str = ""
    latency_ms: float = 0.0


@dataclass
class _Round:
    #: None = gather every candidate (serving a vote), no strategy
    strategy: str | None
    expected: int
    candidates: list[Candidate] = field(default_factory=list)
    decision: Decision | None = None
    errors: list[ZswarmError] = field(default_factory=list)
    asked: dict[str, _Asked] = field(default_factory=dict)
    first_candidate_ms: float | None = None
    deadline_hit: bool = False


class RateMeter:
    """Tokens generated per second over the last ``window_s`` seconds (for heartbeats)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()

    def add(self, tokens: int) -> None:
        self._events.append((time.monotonic(), tokens))

    def rate(self) -> float:
        now = time.monotonic()
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()
        return round(sum(t for _, t in self._events) / self.window_s, 2)


class Coordinator:
    def __init__(self, *, node_name: str, pool: WorkerPool, scheduler: Scheduler,
                 weights: dict[str, float] | None = None, allow_truncated: bool = True,
                 federation: Federation | None = None, vote_deadline_s: float = 30.0) -> None:
        self.node_name = node_name
        self.pool = pool
        self.scheduler = scheduler
        self.weights = dict(weights or {})
        self.validation = Validation(allow_truncated=allow_truncated)
        self.federation = federation
        self.vote_deadline_s = vote_deadline_s
        self.tokens = RateMeter()
        self.stats = NodeStats()

    def local_load(self) -> NodeLoad:
        s = self.scheduler
        return NodeLoad(SELF, s.workers_ready, s.idle_workers, s.queue_depth)

    def _peer_loads(self, model_id: str, peers: list[str] | None) -> list[NodeLoad]:
        """ALIVE peers that serve ``model_id``; ``peers`` limits them (names or ids; [] = none)."""
        if self.federation is None or peers == []:
            return []
        fed = self.federation
        return [NodeLoad(p.card.node_id, p.load.workers_ready, p.load.idle_workers,
                         p.load.queue_depth + fed.in_flight.get(p.card.node_id, 0))
                for p in fed.candidates_for(model_id)
                if p.load.state == "ready"
                and (peers is None or p.card.name in peers or p.card.node_id in peers)]

    async def ask(self, request: GenerateRequest, *, strategy: str, deadline_s: float,
                  on_token: TokenSink | None = None, priority: int = 0,
                  model_id: str | None = None, peers: list[str] | None = None
                  ) -> tuple[str, Report]:
        """Answer one request; raises NoQuorum, DeadlineExceeded, Overloaded, InferenceError.

        ``model_id`` other than this node's sends the request to peers serving that model;
        ``peers`` limits which peers may be asked (node names or ids; [] = this node only).
        """
        t0 = time.perf_counter()
        deadline = trio.current_time() + deadline_s
        route = strategy == ROUTE
        if route:
            request = msgspec.structs.replace(request, n=1)
        local_model = model_id in (None, self.pool.model_id)
        local = self.local_load() if local_model else NodeLoad(SELF, 0, 0, 0)
        fanout = plan(request.n, strategy, local, self._peer_loads(
            self.pool.model_id if model_id is None else model_id, peers))
        if not fanout.parts:
            if not local_model:
                raise NoQuorum(f"no ALIVE peer serves the model {model_id!r}")
            fanout = Plan({SELF: request.n})  # nobody ready: queue locally
        rnd = _Round("first_valid" if route else strategy, request.n)
        await self._gather(rnd, request, fanout, deadline, on_token, priority)
        notes = []
        if route and not rnd.candidates and SELF not in fanout.parts \
                and trio.current_time() < deadline:
            notes.append("routed node failed; answered locally")
            await self._gather(rnd, request, Plan({SELF: 1}), deadline, on_token, priority)
        timings = {"total_ms": round((time.perf_counter() - t0) * 1000, 2)}
        if rnd.first_candidate_ms is not None:
            timings["first_candidate_ms"] = round(rnd.first_candidate_ms, 2)
        participants = self._participants(rnd)
        notes += [f"{p.node}: {p.outcome}" + (f" ({p.detail})" if p.detail else "")
                  for p in participants if p.outcome not in ("answered", "cancelled")]
        if rnd.deadline_hit:
            notes.append(f"deadline of {deadline_s:.1f} s reached")
        note = "; ".join(notes)
        decision = rnd.decision
        if decision is None:
            if not rnd.candidates:
                raise self._nothing_arrived(rnd, deadline_s, note)
            assert rnd.strategy is not None
            decision = decide(rnd.strategy, rnd.candidates, expected=request.n, final=True,
                              weights=self.weights, validation=self.validation)
            assert decision is not None
        report = build_report(strategy, rnd.candidates, decision, expected=request.n,
                              timings=timings, note=note)
        report = msgspec.structs.replace(report, participants=participants)
        self.stats.agreement.observe(report.agreement)
        return rnd.candidates[decision.winner].text, report

    async def gather_local(self, request: GenerateRequest, *, deadline_s: float
                           ) -> list[Candidate]:
        """Every candidate the local workers make for a peer's vote (no strategy, no fan-out)."""
        rnd = _Round(None, request.n)
        deadline = trio.current_time() + deadline_s
        await self._gather(rnd, request, Plan({SELF: request.n}), deadline, None, 0)
        if not rnd.candidates:
            raise self._nothing_arrived(rnd, deadline_s, "")
        return rnd.candidates

    def _nothing_arrived(self, rnd: _Round, deadline_s: float, note: str) -> ZswarmError:
        peers_asked = any(key != SELF for key in rnd.asked)
        if rnd.errors and not peers_asked:
            return rnd.errors[0]
        refusals = [e for e in rnd.errors if isinstance(e, Overloaded)]
        if refusals and len(refusals) == len(rnd.errors) \
                and all(a.outcome == "failed" for a in rnd.asked.values()):
            # every node asked refused for load: backpressure, not a failure to agree
            return Overloaded("every node asked is overloaded" + (f": {note}" if note else ""),
                              retry_after_s=max(e.retry_after_s for e in refusals))
        if rnd.deadline_hit and not peers_asked:
            return DeadlineExceeded(f"no candidate within the deadline of {deadline_s:.1f} s")
        return NoQuorum("no candidate arrived" + (f": {note}" if note else ""))

    def _participants(self, rnd: _Round) -> list[Participant]:
        out = []
        for a in rnd.asked.values():
            outcome: Outcome
            if a.outcome is not None:
                outcome = a.outcome
            elif a.received >= a.requested:
                outcome = "answered"
            elif a.received:
                outcome = "partial"
            elif rnd.decision is not None:
                outcome = "cancelled"  # stopped early: the winner was already clear
            else:
                outcome = "timeout"
            out.append(Participant(node=a.node, requested=a.requested, received=a.received,
                                   outcome=outcome, detail=a.detail,
                                   latency_ms=round(a.latency_ms, 2)))
        return out

    async def _gather(self, rnd: _Round, request: GenerateRequest, fanout: Plan, deadline: float,
                      on_token: TokenSink | None, priority: int) -> None:
        t0 = time.perf_counter()
        local_n = fanout.parts.get(SELF, 0)
        if local_n and len(fanout.parts) == 1 and len(split_n(local_n, len(self.pool.workers))) == 1:
            # one local part (n=1, or one worker): no nursery and no extra task needed
            with trio.CancelScope(deadline=deadline) as deadline_scope:
                with trio.CancelScope() as round_scope:
                    await self._run_local(request, rnd, round_scope, on_token, 0, priority, t0)
            rnd.deadline_hit = rnd.deadline_hit or deadline_scope.cancelled_caught
            return
        with trio.CancelScope(deadline=deadline) as deadline_scope:
            async with trio.open_nursery() as nursery:
                first = request.first_index
                for node_id, count in fanout.parts.items():
                    if node_id == SELF:
                        counts = split_n(count, max(1, len(self.pool.workers)))
                    else:
                        counts = [count]
                    for c in counts:
                        part = msgspec.structs.replace(request, n=c, first_index=first)
                        if node_id == SELF:
                            nursery.start_soon(self._run_local, part, rnd, nursery.cancel_scope,
                                               on_token, first - request.first_index, priority, t0)
                        else:
                            nursery.start_soon(self._run_peer, node_id, part, rnd,
                                               nursery.cancel_scope, deadline, t0)
                        first += c
        rnd.deadline_hit = rnd.deadline_hit or deadline_scope.cancelled_caught

    def _add(self, rnd: _Round, asked: _Asked, cand: Candidate, round_scope: trio.CancelScope,
             t0: float) -> None:
        if rnd.decision is not None:
            return  # a straggler: the winner was decided (and the report built) without it
        latency_ms = (time.perf_counter() - t0) * 1000
        rnd.candidates.append(msgspec.structs.replace(cand, latency_ms=latency_ms))
        asked.received += 1
        asked.latency_ms = latency_ms
        if rnd.first_candidate_ms is None:
            rnd.first_candidate_ms = latency_ms
        if rnd.strategy is not None:
            try:
                rnd.decision = decide(rnd.strategy, rnd.candidates, expected=rnd.expected,
                                      final=False, weights=self.weights,
                                      validation=self.validation)
            except NoQuorum:
                rnd.decision = None
            if rnd.decision is not None:
                round_scope.cancel()

    def _asked(self, rnd: _Round, key: str, node: str, count: int) -> _Asked:
        """The report entry of one node (keyed by id: two peers may share a name)."""
        asked = rnd.asked.setdefault(key, _Asked(node))
        asked.requested += count
        return asked

    async def _run_local(self, part: GenerateRequest, rnd: _Round, round_scope: trio.CancelScope,
                         on_token: TokenSink | None, index_offset: int, priority: int,
                         t0: float) -> None:
        asked = self._asked(rnd, SELF, self.node_name, part.n)
        produced = 0
        worker = ""

        def on_event(event: WorkToken | WorkCandidate) -> None:
            nonlocal produced
            produced += 1  # something reached the caller: a retry would repeat it
            if isinstance(event, WorkToken):
                if on_token is not None:
                    on_token(index_offset + event.index, event.text)
                return
            self.tokens.add(event.candidate.tokens)
            self.stats.tokens_generated += event.candidate.tokens
            cand = msgspec.structs.replace(event.candidate, node=self.node_name, worker=worker)
            self._add(rnd, asked, cand, round_scope, t0)

        for attempt in (1, 2):
            try:
                async with self.scheduler.slot(priority) as worker:
                    await self.pool.run(worker, new_request_id(), part, on_event=on_event,
                                        stream=on_token is not None)
                return
            except WorkerCrashed as exc:
                if produced or attempt == 2:
                    rnd.errors.append(exc)
                    asked.outcome, asked.detail = "failed", str(exc)
                    return
                log.warning("%s; retrying the request once on another worker", exc)
            except ZswarmError as exc:
                rnd.errors.append(exc)
                asked.outcome, asked.detail = "failed", str(exc)
                return

    async def _run_peer(self, node_id: str, part: GenerateRequest, rnd: _Round,
                        round_scope: trio.CancelScope, deadline: float, t0: float) -> None:
        fed = self.federation
        assert fed is not None
        name = fed.peer_name(node_id)
        asked = self._asked(rnd, node_id, name, part.n)
        # never negative: a round whose deadline is already spent asks with no time at all
        vote_deadline_s = max(0.0, min(deadline - trio.current_time(), self.vote_deadline_s))
        sent = time.perf_counter()
        self.stats.votes_sent += 1
        answered = False
        try:
            with trio.move_on_after(vote_deadline_s) as vote_scope:
                try:
                    candidates = await fed.vote(node_id, part, vote_deadline_s)
                except ZswarmError as exc:
                    asked.outcome, asked.detail = "failed", str(exc)
                    rnd.errors.append(exc)
                    log.debug("vote from %s failed: %s", name, exc)
                    return
            if vote_scope.cancelled_caught:
                asked.outcome = "timeout"
                asked.detail = f"no vote within {vote_deadline_s:.1f} s"
                fed.unanswered(node_id, asked.detail)
                return
            answered = True
            self.stats.vote_rtt_s.observe(time.perf_counter() - sent)
        finally:
            if not answered:
                self.stats.votes_unanswered[asked.outcome or "cancelled"] += 1
        for cand in candidates:
            self._add(rnd, asked, cand, round_scope, t0)
