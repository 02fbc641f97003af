"""One request from start to answer: fan out to local workers, gather, decide, cancel.

Owns: splitting n candidates over the local workers (each part decoded as one
batch), the request deadline (a cancel scope), asking the strategy after every
candidate (early stop cancels the stragglers), retrying a part once when its
worker crashed before producing anything, and building the report.
It must not: pick strategies' winners itself (core/consensus.py does) or talk to
worker processes directly (runtime/workers.py does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import trio

from zswarm.core.consensus import Decision, Validation, build_report, decide
from zswarm.core.ids import new_request_id
from zswarm.core.messages import Candidate, GenerateRequest, Report, WorkCandidate, WorkToken
from zswarm.errors import DeadlineExceeded, NoQuorum, ZswarmError
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.workers import WorkerCrashed, WorkerPool

log = logging.getLogger(__name__)

TokenSink = Callable[[int, str], None]


def split_n(n: int, workers: int) -> list[int]:
    """Spread n candidates over at most ``workers`` parts, as evenly as possible."""
    parts = max(1, min(n, workers))
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class _Round:
    strategy: str
    expected: int
    candidates: list[Candidate] = field(default_factory=list)
    decision: Decision | None = None
    errors: list[ZswarmError] = field(default_factory=list)
    first_candidate_ms: float | None = None


class Coordinator:
    def __init__(self, *, node_name: str, pool: WorkerPool, scheduler: Scheduler,
                 weights: dict[str, float] | None = None, allow_truncated: bool = True) -> None:
        self.node_name = node_name
        self.pool = pool
        self.scheduler = scheduler
        self.weights = dict(weights or {})
        self.validation = Validation(allow_truncated=allow_truncated)

    async def ask(
        self,
        request: GenerateRequest,
        *,
        strategy: str,
        deadline_s: float,
        on_token: TokenSink | None = None,
        priority: int = 0,
    ) -> tuple[str, Report]:
        """Answer one request; raises NoQuorum, DeadlineExceeded, Overloaded, InferenceError."""
        t0 = time.perf_counter()
        rnd = _Round(strategy, request.n)
        parts = split_n(request.n, max(1, len(self.pool.workers)))
        with trio.move_on_after(deadline_s) as deadline_scope:
            async with trio.open_nursery() as nursery:
                first = 0
                for count in parts:
                    part = msgspec.structs.replace(request, n=count,
                                                   first_index=request.first_index + first)
                    nursery.start_soon(self._run_part, part, rnd, nursery.cancel_scope,
                                       on_token, first, priority)
                    first += count
        timings = {"total_ms": round((time.perf_counter() - t0) * 1000, 2)}
        if rnd.first_candidate_ms is not None:
            timings["first_candidate_ms"] = round(rnd.first_candidate_ms, 2)
        note = "; ".join(str(e) for e in rnd.errors)
        if deadline_scope.cancelled_caught:
            note = "; ".join(x for x in (note, f"deadline of {deadline_s:.1f} s reached") if x)
        decision = rnd.decision
        if decision is None:
            if not rnd.candidates:
                if rnd.errors:
                    raise rnd.errors[0]
                if deadline_scope.cancelled_caught:
                    raise DeadlineExceeded(f"no candidate within the deadline of {deadline_s:.1f} s")
                raise NoQuorum("no candidate arrived" + (f": {note}" if note else ""))
            decision = decide(strategy, rnd.candidates, expected=request.n, final=True,
                              weights=self.weights, validation=self.validation)
            assert decision is not None
        report = build_report(strategy, rnd.candidates, decision, expected=request.n,
                              timings=timings, note=note)
        return rnd.candidates[decision.winner].text, report

    async def _run_part(
        self,
        part: GenerateRequest,
        rnd: _Round,
        round_scope: trio.CancelScope,
        on_token: TokenSink | None,
        index_offset: int,
        priority: int,
    ) -> None:
        t0 = time.perf_counter()
        produced = 0

        def on_event(event: WorkToken | WorkCandidate) -> None:
            nonlocal produced
            produced += 1  # something reached the caller: a retry would repeat it
            if isinstance(event, WorkToken):
                if on_token is not None:
                    on_token(index_offset + event.index, event.text)
                return
            cand = msgspec.structs.replace(event.candidate, node=self.node_name, worker=worker,
                                           latency_ms=(time.perf_counter() - t0) * 1000)
            rnd.candidates.append(cand)
            if rnd.first_candidate_ms is None:
                rnd.first_candidate_ms = (time.perf_counter() - t0) * 1000
            if rnd.decision is None:
                try:
                    rnd.decision = decide(rnd.strategy, rnd.candidates, expected=rnd.expected,
                                          final=False, weights=self.weights,
                                          validation=self.validation)
                except NoQuorum:
                    rnd.decision = None
                if rnd.decision is not None:
                    round_scope.cancel()

        for attempt in (1, 2):
            try:
                async with self.scheduler.slot(priority) as worker:
                    await self.pool.run(worker, new_request_id(), part, on_event=on_event,
                                        stream=on_token is not None)
                return
            except WorkerCrashed as exc:
                if produced or attempt == 2:
                    rnd.errors.append(exc)
                    return
                log.warning("%s; retrying the request once on another worker", exc)
            except ZswarmError as exc:
                rnd.errors.append(exc)
                return
