"""A worker pool that generates in the node's own process with a fixed delay (benches only).

``InlinePool`` has WorkerPool's interface (``workers``, ``model_id``, ``serve``,
``run``) but no worker processes: each "worker" answers ``answers[i]`` after
``delay_s`` of trio sleep. It isolates the cost of everything around the engine
(scheduler, coordinator, RPC, votes) in bench/vote_rtt.py; the proof that real
inference works lives in the tests that use real worker processes.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from zswarm.core.messages import Candidate, GenerateRequest, WorkCandidate, WorkToken
from zswarm.runtime.scheduler import Scheduler


class InlinePool:
    def __init__(self, scheduler: Scheduler, *, workers: int = 1, answers: list[str] | None = None,
                 delay_s: float = 0.0, model_id: str = "scripted",
                 logprob: float | None = None) -> None:
        self.scheduler = scheduler
        self.workers = {f"w{i}": None for i in range(workers)}
        self.answers = answers or ["42"]
        self.delay_s = delay_s
        self.model_id = model_id
        #: every candidate's mean log-probability (None: none given)
        self.logprob = logprob
        #: the texts of every scoring request, one list per request
        self.scored: list[list[str]] = []

    async def serve(self, *, task_status: trio.TaskStatus[InlinePool] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        for name in self.workers:
            self.scheduler.worker_ready(name)
        task_status.started(self)
        await trio.sleep_forever()

    async def run(self, worker_name: str, request_id: str, request: GenerateRequest, *,
                  on_event: Callable[[WorkToken | WorkCandidate], None],
                  stream: bool = False, score: tuple[str, ...] | None = None) -> None:
        if self.delay_s:
            await trio.sleep(self.delay_s)
        if score is not None:  # the answers are this "model's": anything else is unlikely
            self.scored.append(list(score))
            for k, text in enumerate(score):
                on_event(WorkCandidate(request_id=request_id, index=k, candidate=Candidate(
                    text=text, finish_reason="stop", mean_logprob=-0.5 if text in self.answers
                    else -5.0)))
            return
        for i in range(request.n):
            text = self.answers[(request.first_index + i) % len(self.answers)]
            on_event(WorkCandidate(request_id=request_id, index=i, candidate=Candidate(
                text=text, finish_reason="stop", tokens=1, mean_logprob=self.logprob)))
