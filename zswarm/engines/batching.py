"""Continuous batching: the requests one worker decodes together, one step at a time.

Owns: the state of each running request (a Job) and of each of its candidates (a
Run: its sequence, sampler, text stream and counts; one object, not parallel lists),
admission of new requests between steps, and the step itself: one decode call holding
the next token of every generating candidate plus a chunk of the oldest prompt still
being read (chunked prefill, as llama-server mixes them). Fair: every generating
candidate advances every step, prompts are read first come first served, and while
others generate a prompt takes at most BUSY_PREFILL tokens per step, so a long new
prompt slows the streams around it but never stalls them.

A request holds one prompt-cache slot (engines/prefix_cache.py) from admission to its
end; one candidate generates in the slot itself, several copy its prompt's cells to
sequences of a shared pool. The KV operations are the engine's (engines/llamacpp.py,
through the small ``Kv`` protocol), so this module knows no llama.cpp calls.
It must not: know about processes or sockets (runtime/worker_process.py feeds it).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from zswarm.core.messages import (
    Candidate,
    FinishReason,
    GenerateRequest,
    Structure,
    TokenLogprob,
)
from zswarm.core.structured import CALL_CLOSE, constrains, repeated_call
from zswarm.engines.base import CandidateCallback, TextStream, TokenCallback, context_message
from zswarm.engines.grammar import Matcher
from zswarm.engines.prefix_cache import Slot
from zswarm.engines.sampling import make_rng, sample, top_logprobs
from zswarm.errors import InferenceError, RequestRefused, ZswarmError

log = logging.getLogger(__name__)

#: prompt tokens read per step while other candidates are generating
BUSY_PREFILL = 128

DoneCallback = Callable[[ZswarmError | None], None]
Logits = np.ndarray[Any, np.dtype[np.float32]]


class Kv(Protocol):
    """What the batcher needs from an engine's context."""

    n_batch: int
    n_ctx: int
    cache_slots: int
    max_batch_candidates: int
    eog: Any  # token ids that end generation (numpy array)
    eog_set: frozenset[int]

    @property
    def slots(self) -> list[Slot]: ...  # the prompt cache's slots

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None: ...
    def logits(self, i: int) -> Logits: ...
    def place(self, tokens: list[int], extra: int, *, pinned: frozenset[int], reserved: int
              ) -> tuple[Slot, int] | None: ...
    def copy_seq(self, src: int, dst: int) -> None: ...
    def drop_seq(self, seq: int, start: int = 0) -> None: ...
    def token_bytes(self, token: int) -> bytes: ...
    def forget(self, slot: Slot) -> None: ...
    def matcher(self, structure: Structure) -> Matcher: ...


@dataclass(eq=False)
class Run:
    """One candidate being generated."""

    index: int  # the candidate's index in its request
    seq: int
    rng: Any
    stream: TextStream
    logits: Logits | None = None
    tokens: int = 0
    logprob_sum: float = 0.0
    per_token: list[TokenLogprob] | None = None
    finish: FinishReason | None = None
    #: a structured answer's grammar state (engines/grammar.py); None: free text
    matcher: Matcher | None = None
    #: token -> times generated (presence and frequency penalties)
    counts: dict[int, int] = field(default_factory=dict)


@dataclass(eq=False)
class Job:
    """One request: its prompt, its slot, its candidates and where their output goes."""

    key: str
    request: GenerateRequest
    prompt: list[int]
    count: int  # candidates in flight at most
    budget: int  # tokens per candidate at most
    on_token: TokenCallback | None
    on_candidate: CandidateCallback | None
    on_done: DoneCallback
    t0: float = field(default_factory=time.perf_counter)
    slot: Slot | None = None
    reuse: int = 0
    read: int = 0  # prompt tokens in the slot
    first_logits: Logits | None = None
    waiting: deque[int] = field(default_factory=deque)  # candidate indices not started
    runs: list[Run] = field(default_factory=list)
    cancelled: bool = False
    #: the compiled constraint of a structured request (each run takes a copy)
    matcher: Matcher | None = None

    @property
    def reserved(self) -> int:
        return self.count * self.budget

    def candidate(self, run: Run, reason: FinishReason) -> Candidate:
        mean = run.logprob_sum / run.tokens if run.tokens else None
        return Candidate(
            text=run.stream.text, finish_reason=reason,
            tokens=run.tokens, prompt_tokens=len(self.prompt), cached_tokens=self.reuse,
            mean_logprob=mean, token_logprobs=run.per_token,
            latency_ms=(time.perf_counter() - self.t0) * 1000.0)


class Batcher:
    """The jobs of one engine. ``submit`` and ``cancel`` between steps; ``step`` runs one."""

    def __init__(self, kv: Kv, *, max_jobs: int) -> None:
        self.kv = kv
        self.max_jobs = max_jobs
        self.queue: deque[Job] = deque()  # submitted, not yet given a slot
        self.jobs: list[Job] = []  # admitted, in order
        self._pool = self._all_sequences()

    def _all_sequences(self) -> list[int]:
        """The candidates' pool: sequences after the prompt cache's slots."""
        return list(range(self.kv.cache_slots, self.kv.cache_slots + self.kv.max_batch_candidates))

    @property
    def busy(self) -> bool:
        return bool(self.jobs or self.queue)

    @property
    def pinned(self) -> frozenset[int]:
        return frozenset(job.slot.seq for job in self.jobs if job.slot is not None)

    def submit(self, key: str, request: GenerateRequest, prompt: list[int], *,
               on_token: TokenCallback | None, on_candidate: CandidateCallback | None,
               on_done: DoneCallback) -> None:
        """Queue a request; its output arrives through the callbacks during ``step``."""
        if len(prompt) + 1 > self.kv.n_ctx:  # a limit of this node's, not a failure
            on_done(RequestRefused(context_message(len(prompt), self.kv.n_ctx), field="prompt"))
            return
        count = min(request.n, self.kv.max_batch_candidates)
        budget = min(request.params.max_tokens, (self.kv.n_ctx - len(prompt)) // count)
        job = Job(key, request, prompt, count, max(1, budget), on_token, on_candidate, on_done)
        if request.structure is not None and constrains(request.structure):
            try:
                job.matcher = self.kv.matcher(request.structure)
            except RequestRefused as exc:
                on_done(exc)
                return
        job.waiting.extend(range(request.n))
        self.queue.append(job)

    def cancel(self, key: str) -> None:
        """Stop a request (``"*"``: every request); its candidates end "cancelled". One
        still queued ends now; a running one at the next step."""
        for job in list(self.queue):
            if key in ("*", job.key):
                self.queue.remove(job)
                self._finish_unstarted(job, "cancelled")
                job.on_done(None)
        for job in self.jobs:
            if key in ("*", job.key):
                job.cancelled = True

    def reset(self) -> None:
        """Drop every job without a word (the caller has answered them; the engine empties
        its KV cache)."""
        self.queue.clear()
        self.jobs.clear()
        self._pool = self._all_sequences()

    # --- one step -------------------------------------------------------------------

    def step(self) -> None:
        """Admit what fits, sample one token for every generating candidate, read a chunk
        of the oldest unread prompt, and decode all of it in one call."""
        self._admit()
        entries: list[tuple[int, int, int, bool]] = []
        owners: list[tuple[Job, Run | None]] = []
        for job in list(self.jobs):
            if job.cancelled:
                self._end(job, None)
                continue
            self._start_runs(job)
            for run in job.runs:
                if run.finish is None and run.logits is not None:
                    entry = self._sample(job, run)
                    if entry is not None:
                        entries.append(entry)
                        owners.append((job, run))
            if job.read == len(job.prompt) and not job.waiting \
                    and all(run.finish is not None for run in job.runs):
                self._end(job, None)
        reading = next((j for j in self.jobs if j.read < len(j.prompt)), None)
        if reading is not None and len(entries) >= self.kv.n_batch:
            reading = None  # a batch full of generating candidates: the prompt waits a step
        if reading is not None:
            assert reading.slot is not None
            room = self.kv.n_batch - len(entries)
            take = min(room, BUSY_PREFILL) if entries else room
            start, prompt = reading.read, reading.prompt
            for k, token in enumerate(prompt[start:start + take]):
                entries.append((token, start + k, reading.slot.seq, start + k == len(prompt) - 1))
                owners.append((reading, None))
        if not entries:
            return
        try:
            self._decode(entries)
        except InferenceError as exc:
            self._fail(list(dict.fromkeys(job for job, _ in owners)), exc)
            return
        for i, ((token, _, seq, want), (job, owner)) in enumerate(
                zip(entries, owners, strict=True)):
            assert job.slot is not None
            if owner is not None:
                owner.logits = self.kv.logits(i).copy()
            else:
                job.read += 1
                if want:
                    job.first_logits = self.kv.logits(i).copy()
            if seq == job.slot.seq:
                job.slot.tokens.append(token)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode; if the KV cache has no room (cells fragmented), empty the slots no
        request is using and try once more."""
        try:
            self.kv.decode(entries)
        except InferenceError:
            pinned = self.pinned
            idle = [s for s in self.kv.slots if s.seq not in pinned and s.tokens]
            if not idle:
                raise
            for slot in idle:
                self.kv.drop_seq(slot.seq)
                self.kv.forget(slot)
            self.kv.decode(entries)

    def _admit(self) -> None:
        """Give queued jobs a slot, first come first served (none overtakes the head)."""
        while self.queue and len(self.jobs) < self.max_jobs:
            job = self.queue[0]
            placed = self.kv.place(job.prompt, job.reserved, pinned=self.pinned,
                                   reserved=sum(j.reserved for j in self.jobs))
            if placed is None:
                if not self.jobs:  # alone, it must fit: the engine could not make room
                    self.queue.popleft()
                    job.on_done(InferenceError("the KV cache has no room for this prompt"))
                    continue
                return  # waits for running jobs to end
            self.queue.popleft()
            job.slot, job.reuse = placed
            job.read = job.reuse
            self.jobs.append(job)

    def _start_runs(self, job: Job) -> None:
        """Start waiting candidates once the prompt is read: one in the slot itself, or
        several, each in a pool sequence holding a copy of the prompt's cells."""
        if job.first_logits is None or not job.waiting:
            return
        assert job.slot is not None
        params = job.request.params
        live = sum(1 for run in job.runs if run.finish is None)
        while job.waiting and live < job.count:
            if job.request.n == 1:
                seq = job.slot.seq
            elif self._pool:
                seq = self._pool.pop()
                self.kv.copy_seq(job.slot.seq, seq)
            else:
                return  # another job's candidates hold the pool: next step
            index = job.waiting.popleft()
            job.runs.append(Run(
                index=index, seq=seq,
                rng=make_rng(params.seed, job.request.first_index + index),
                stream=TextStream(params.stop), logits=job.first_logits,
                per_token=[] if params.logprobs else None,
                matcher=None if job.matcher is None else job.matcher.copy()))
            live += 1

    def _sample(self, job: Job, run: Run) -> tuple[int, int, int, bool] | None:
        """Sample the run's next token; the decode entry for it, or None if it ended."""
        params = job.request.params
        assert run.logits is not None
        logits, run.logits = run.logits, None
        allowed = None
        if run.matcher is not None:  # a structured answer: its grammar says what may follow
            allowed = run.matcher.mask()
            if allowed is None or not allowed.any():
                log.warning("constrained decoding stopped: %s", run.matcher.error)
                self._close(job, run, "error")
                return None
        ignore_eos = params.ignore_eos and run.matcher is None  # a grammar decides its end
        token, logprob = sample(logits, params, run.rng, allowed=allowed, counts=run.counts,
                                banned=self.kv.eog if ignore_eos else None)
        if token in self.kv.eog_set and not ignore_eos:
            self._close(job, run, "stop")
            return None
        if run.matcher is not None:
            run.matcher.consume(token)
        run.tokens += 1
        run.logprob_sum += logprob
        run.counts[token] = run.counts.get(token, 0) + 1
        piece = self.kv.token_bytes(token)
        if run.per_token is not None:
            top = tuple((self.kv.token_bytes(t).decode(errors="replace"), lp)
                        for t, lp in top_logprobs(logits, params.top_logprobs)
                        ) if params.top_logprobs else ()
            run.per_token.append(TokenLogprob(piece.decode(errors="replace"), logprob, top))
        text = run.stream.feed(piece)
        if run.matcher is not None and run.stream.text.rstrip().endswith(CALL_CLOSE):
            cut = repeated_call(run.stream.text)  # a call said again ends the answer before it
            if cut is not None:
                run.stream.cut(cut)
                text = ""
        if text and job.on_token is not None:
            job.on_token(run.index, text)
        if run.stream.stopped:
            self._close(job, run, "stop")
        elif run.tokens >= job.budget:
            self._close(job, run, "length")
        else:
            return (token, len(job.prompt) + run.tokens - 1, run.seq, True)
        return None

    # --- endings --------------------------------------------------------------------

    def _close(self, job: Job, run: Run, reason: FinishReason) -> None:
        run.finish = reason
        tail = run.stream.finish()
        if tail and job.on_token is not None:
            job.on_token(run.index, tail)
        if job.on_candidate is not None:
            job.on_candidate(run.index, job.candidate(run, reason))
        if job.slot is None or run.seq != job.slot.seq:
            self.kv.drop_seq(run.seq)
            self._pool.append(run.seq)

    def _end(self, job: Job, error: ZswarmError | None) -> None:
        """The job is over (error None: every candidate ended); free its slot."""
        for run in job.runs:
            if run.finish is None:
                self._close(job, run, "cancelled")
        self._finish_unstarted(job, "cancelled")
        if job in self.jobs:
            self.jobs.remove(job)
        job.on_done(error)

    def _finish_unstarted(self, job: Job, reason: FinishReason) -> None:
        while job.waiting:
            index = job.waiting.popleft()
            run = Run(index=index, seq=-1, rng=None, stream=TextStream(()), finish=reason)
            if job.on_candidate is not None:
                job.on_candidate(index, job.candidate(run, reason))

    def _fail(self, jobs: list[Job], exc: ZswarmError) -> None:
        """A decode failed: the jobs in it end with the error; what their slots hold past
        what is known decoded is uncertain, so those slots are emptied."""
        log.warning("decode failed for %d request(s): %s", len(jobs), exc)
        for job in jobs:
            for run in job.runs:
                if run.finish is None:
                    run.finish = "error"
                    if job.slot is None or run.seq != job.slot.seq:
                        self.kv.drop_seq(run.seq)
                        self._pool.append(run.seq)
            if job.slot is not None:
                self.kv.drop_seq(job.slot.seq)
                self.kv.forget(job.slot)
            job.waiting.clear()
            self.jobs.remove(job)
            job.on_done(exc)
