"""One request from start to answer: fan out to local workers and peers, gather, decide, cancel.

Owns: asking core/plan.py who generates how many candidates; splitting the local
share over the local workers (each part decoded as one batch); sending VoteRequests
to peers through ``Peers`` (runtime/context.py); one ``Round`` per request holding
its deadline, start time, token sink, early-stop scope and what arrived; each
vote's deadline; asking the strategy after every candidate (early stop cancels the
stragglers, local and remote); for a budget (``adaptive``), asking for the candidates
in waves (core/stopping.py's ``waves``, each planned like a fixed n) and asking
``verdict`` after every candidate instead; retrying a local part once when its worker crashed
before producing anything; ``route`` mode with a local fallback; and the report of
who was asked, who answered, who timed out; where each conversation was answered
(``Homes``, core/affinity.py), so its next turn goes to the worker - and with
``route`` the node - whose prompt cache holds it, while that one is free.
``gather_local`` serves a peer's vote: local workers only, never fanned out again
(one hop).
It must not: pick winners itself (core/consensus.py does), talk to worker processes
(runtime/workers.py) or to sockets (runtime/federation.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import msgspec
import trio

from zswarm.asks import Ask
from zswarm.core.affinity import Homes, conversation_keys
from zswarm.core.calibration import Priors
from zswarm.core.committee import ModelWeights
from zswarm.core.committee import shares as committee_shares
from zswarm.core.consensus import (
    SCORED_STRATEGIES,
    Decision,
    Strategy,
    Validation,
    build_report,
    decide,
)
from zswarm.core.ids import new_request_id
from zswarm.core.messages import (
    Candidate,
    GenerateRequest,
    Report,
    WorkCandidate,
    WorkToken,
)
from zswarm.core.plan import ROUTE, SELF, AskStrategy, NodeLoad, Plan, least_loaded, plan
from zswarm.core.stopping import verdict, waves
from zswarm.core.structured import Shape
from zswarm.errors import NoQuorum, WorkerCrashed, ZswarmError
from zswarm.runtime.context import NodeContext, Peers
from zswarm.runtime.rounds import (
    Asked,
    Round,
    TokenSink,
    named,
    nothing_arrived,
    participants,
    split_n,
)
from zswarm.runtime.speeds import Speeds
from zswarm.runtime.verify import Checks, verified_decision

log = logging.getLogger(__name__)


def _question(request: GenerateRequest) -> str:
    """The last user message (what the answer keys are read against, and what is recorded)."""
    return next((m.content for m in reversed(request.messages) if m.role == "user"), "")


class Coordinator:
    def __init__(self, ctx: NodeContext, peers: Peers) -> None:
        self.ctx = ctx
        self.models = ctx.models
        self.peers = peers
        consensus = ctx.config.consensus
        self.weights = dict(consensus.weights)
        self.validation = Validation(allow_truncated=consensus.allow_truncated)
        self.tau = consensus.confidence_tau
        #: the model's lean on lettered questions, from this node's own candidates
        self.priors = Priors() if consensus.calibrate else None
        self.vote_deadline_s = ctx.config.federation.deadline_s
        #: where conversations were answered: a local worker, and (route) a node
        self.worker_homes = Homes()
        self.node_homes = Homes()
        #: how fast each node delivered its share lately (the plan splits by it)
        self.speeds = Speeds()
        #: how much each model's candidates weigh in a committee (core/committee.py)
        self.committee = ModelWeights()

    def _validation(self, request: GenerateRequest) -> Validation:
        """A structured request's candidates are valid when complete and of its shape."""
        if request.structure is None:
            return self.validation
        return Validation(allow_truncated=False, shape=Shape(request.structure))

    def local_load(self, model_id: str | None = None) -> NodeLoad:
        """This node's workers of the model (none while it is not loaded)."""
        model = self.models.find(model_id)
        if model is None or model.state != "loaded":
            return NodeLoad(SELF, 0, 0, 0)
        s = model.scheduler
        return NodeLoad(SELF, s.workers_ready, s.idle_workers, s.queue_depth)

    async def ask(self, ask: Ask, *, on_token: TokenSink | None = None,
                  on_candidate: Callable[[Candidate], None] | None = None
                  ) -> tuple[str, Report]:
        """Answer one ask; raises NoQuorum, DeadlineExceeded, Overloaded, InferenceError.

        Its deadline starts now: every scope of the ask (the round, each vote, the check
        of peers' scores) ends by it. ``on_token``: a one-candidate ask's tokens as they
        come; ``on_candidate``: each candidate as it arrives. Every ask is recorded
        (``NodeStats.recent``) with its report or its error.
        """
        started = time.time()
        deadline = trio.current_time() + ask.deadline_ms / 1000
        request = ask.request
        question = _question(request)
        try:
            answer, report = await self._ask(ask, deadline, on_token, question, on_candidate)
        except ZswarmError as exc:
            self.ctx.stats.asked(started, question, ask.strategy, request.n,
                                 error=f"{exc.kind}: {exc}")
            raise
        self.ctx.stats.asked(started, question, ask.strategy, request.n, answer=answer,
                             report=report)
        return answer, report

    async def _ask(self, ask: Ask, deadline: float, on_token: TokenSink | None,
                   question: str, on_candidate: Callable[[Candidate], None] | None = None
                   ) -> tuple[str, Report]:
        request, strategy, adaptive = ask.request, ask.strategy, ask.adaptive
        model_id, peers = ask.model_id or self.models.default.model_id, ask.peers
        early_stop = ask.early_stop and not adaptive and not ask.models  # a committee:
        # every model's share is heard
        t0 = time.perf_counter()
        route = strategy == ROUTE
        decides: Strategy = "first_valid" if strategy == ROUTE else strategy
        if route:
            request = msgspec.structs.replace(request, n=1)
        keys = conversation_keys(request)
        rnd = Round(decides, request.n, deadline=deadline, model_id=model_id, on_token=on_token,
                    on_candidate=on_candidate,
                    question=question, early_stop=early_stop, adaptive=adaptive,
                    home_worker=self.worker_homes.find(keys),
                    validation=self._validation(request))
        if self.priors is not None and decides == "confidence" and not ask.models \
                and request.structure is None:
            rnd.factors = self.priors.factors(model_id, question)
        ran = 0
        plan_s = 0.0
        fanout = Plan({})
        sizes = waves(request.n) if adaptive else [request.n]
        if ask.models:  # a committee: one fixed wave over its models (asks.build checks)
            rnd.model_weights = self.committee.weights(ask.models)
            plan_s = await self._gather_committee(rnd, request, ask.models, peers, keys)
            sizes = []
        for size in sizes:
            wave = msgspec.structs.replace(request, n=size,
                                           first_index=request.first_index + ran)
            planned = time.perf_counter()
            fanout = self._plan(wave, strategy, model_id, peers, keys)
            plan_s += time.perf_counter() - planned
            rnd.waves += 1
            await self._gather(rnd, wave, fanout)
            ran += size
            if rnd.stopped or rnd.deadline_hit:
                break
        if adaptive and rnd.stop is None and not rnd.deadline_hit:
            rnd.stop = "budget spent"
        notes = []
        if route and not rnd.candidates and SELF not in fanout.parts \
                and trio.current_time() < rnd.deadline:
            notes.append("routed node failed; answered locally")
            await self._gather(rnd, request, Plan({SELF: 1}))
        timings = {"plan_ms": round(plan_s * 1000, 2),
                   "gather_ms": round((time.perf_counter() - t0) * 1000, 2)}
        if rnd.first_candidate_ms is not None:
            timings["first_candidate_ms"] = round(rnd.first_candidate_ms, 2)
        who, names = participants(rnd)
        notes += [f"{p.node}: {p.outcome}" + (f" ({p.detail})" if p.detail else "")
                  for p in who if p.outcome not in ("answered", "cancelled")]
        if rnd.deadline_hit:
            notes.append(f"deadline of {rnd.seconds:.1f} s reached")
        note = "; ".join(notes)
        if not rnd.candidates:
            raise nothing_arrived(rnd, note)
        deciding = time.perf_counter()
        decision, checks = await self._decide(rnd, request)
        timings["decide_ms"] = round((time.perf_counter() - deciding) * 1000, 2)
        timings["rescore_ms"] = round(checks.seconds * 1000, 2)
        said = [note] if note else []
        shape = rnd.validation.shape
        if shape is not None:  # a structured ask: every candidate's key is its value
            misshapen = sum(1 for c in rnd.candidates if c.finish_reason in ("stop", "length")
                            and not rnd.validation.accepts(c))
            if misshapen:
                self.ctx.stats.misshapen += misshapen
                said.append(f"{misshapen} candidate(s) not of the requested shape (cut "
                            "short, or not valid JSON or calls): not counted")
            decision = dataclasses.replace(decision, answer_keys=[
                shape.key(c.text, rnd.question) if rnd.validation.accepts(c) else None
                for c in rnd.candidates])
        if checks.rescored:
            said.append(f"{checks.rescored} peer score(s) checked by this node's model")
        if checks.not_needed:
            said.append(f"{checks.not_needed} peer score(s) not needed: the answer wins "
                        "without them")
        note = "; ".join(said)
        timings["total_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        report = build_report(strategy, named(rnd.candidates, names), decision,
                              expected=request.n,
                              timings=timings, note=note)
        report = msgspec.structs.replace(
            report, participants=who, waves=rnd.waves,
            budget=request.n if adaptive else 0, stop=rnd.stop or "")
        self.ctx.stats.agreement.observe(report.agreement)
        if ask.models:
            self.committee.observe(rnd.candidates, decision.answer_keys, decision.winner,
                                   ask.models)
        self._remember(keys, rnd.candidates[decision.winner])
        self._learn(rnd, decision)
        return rnd.candidates[decision.winner].text, report

    def _learn(self, rnd: Round, decision: Decision) -> None:
        """The model's lean (core/calibration.py) learns from this node's own candidates
        only: a peer's never moves it."""
        if self.priors is None or not decision.answer_keys or rnd.validation.shape:
            return
        own = ("", self.ctx.card.node_id)
        self.priors.observe(rnd.model_id, rnd.question,
                            [k for c, k in zip(rnd.candidates, decision.answer_keys,
                                               strict=False)
                             if c.node_id in own and c.model_id == rnd.model_id])

    def _plan(self, request: GenerateRequest, strategy: AskStrategy, model_id: str,
              peers: tuple[str, ...] | None, keys: list[str]) -> Plan:
        """Who generates how many of ``request.n`` (core/plan.py): the nodes where the
        model is loaded; else this node if it holds the model (queued here, or loaded
        here); else the least loaded peer that holds it (which loads it)."""
        speed = self.speeds.applied
        local = speed(self.local_load(model_id))
        others = [speed(p) for p in self.peers.peer_loads(model_id, peers)]
        fanout = plan(request.n, strategy, local, others,
                      prefer=self.node_homes.find(keys) if strategy == ROUTE else None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("plan n=%d: %s from %s", request.n, fanout.parts,
                      [(n.node_id[:8], round(n.speed, 2), round(n.pressure, 2))
                       for n in (local, *others)])
        if fanout.parts:
            return fanout
        if self.models.find(model_id) is not None:
            return Plan({SELF: request.n})
        holders = least_loaded(self.peers.peer_loads(model_id, peers, loaded=False))
        if holders:
            return Plan({holders[0].node_id: request.n})
        failed = [h.name for h in self.peers.models().get(model_id, []) if h.state == "failed"]
        raise NoQuorum(f"no ALIVE peer serves the model {model_id!r}" + (
            f" (it failed to load, or cannot fit in the memory budget, at {', '.join(failed)})"
            if failed else ""))

    def _remember(self, keys: list[str], winner: Candidate) -> None:
        """The conversation's next turn has this answer in it: where it was made holds it
        in a prompt cache (core/affinity.py)."""
        if winner.node_id in ("", self.ctx.card.node_id):
            self.node_homes.record(keys, SELF)
            if winner.worker:
                self.worker_homes.record(keys, winner.worker)
        else:
            self.node_homes.record(keys, winner.node_id)

    async def _decide(self, rnd: Round, request: GenerateRequest) -> tuple[Decision, Checks]:
        """The final decision, with every peer's deciding score checked (runtime/verify.py)."""
        strategy = rnd.strategy
        assert strategy is not None  # None only when serving a vote

        weights = {**self.weights, **rnd.model_weights}

        def final(candidates: Sequence[Candidate]) -> Decision:
            decision = decide(strategy, candidates, expected=rnd.expected, final=True,
                              weights=weights, validation=rnd.validation, tau=self.tau,
                              question=rnd.question, calibration=rnd.factors)
            assert decision is not None
            return decision

        if rnd.decision is not None and strategy not in SCORED_STRATEGIES:
            return rnd.decision, Checks()  # no log-probabilities decided: nothing to check
        return await verified_decision(self.ctx, rnd.model_id, strategy, request, rnd.candidates,
                                       final, deadline=rnd.deadline)

    async def _gather_committee(self, rnd: Round, request: GenerateRequest,
                                models: tuple[str, ...], peers: tuple[str, ...] | None,
                                keys: list[str]) -> float:
        """A committee's candidates: ``request.n`` split over its models, each share
        planned over the nodes of its model and gathered at once; the seconds planning
        took."""
        planned = time.perf_counter()
        parts = []
        first = request.first_index
        for model_id, count in committee_shares(request.n, models):
            part = msgspec.structs.replace(request, n=count, first_index=first)
            parts.append((part, self._plan(part, "majority", model_id, peers, keys), model_id))
            first += count
        plan_s = time.perf_counter() - planned
        rnd.waves = 1
        async with trio.open_nursery() as nursery:
            for part, fanout, model_id in parts:
                nursery.start_soon(self._gather, rnd, part, fanout, model_id)
        return plan_s

    async def gather_local(self, request: GenerateRequest, *, deadline: float,
                           model_id: str | None = None) -> list[Candidate]:
        """Every candidate the local workers of ``model_id`` (None: the default model)
        make for a peer's vote (no strategy, no fan-out)."""
        keys = conversation_keys(request)
        rnd = Round(None, request.n, deadline=deadline,
                    model_id=model_id or self.models.default.model_id,
                    home_worker=self.worker_homes.find(keys))
        await self._gather(rnd, request, Plan({SELF: request.n}))
        if not rnd.candidates:
            raise nothing_arrived(rnd, "")
        if rnd.candidates[0].worker:
            self.worker_homes.record(keys, rnd.candidates[0].worker)
        return rnd.candidates

    async def _gather(self, rnd: Round, request: GenerateRequest, fanout: Plan,
                      model_id: str | None = None) -> None:
        """Run one wave of the plan (of ``model_id``; None: the round's model); then note
        how fast each node delivered its share."""
        rnd.t0 = rnd.t0 or time.perf_counter()  # candidate latencies count from the first wave
        started = trio.current_time()
        before = {key: asked.received for key, asked in rnd.asked.items()}
        try:
            await self._gather_wave(rnd, request, fanout, model_id or rnd.model_id)
        finally:
            for key in fanout.parts:
                asked = rnd.asked.get(key)
                if asked is not None and asked.outcome != "failed":
                    self.speeds.observe(key, asked.received - before.get(key, 0),
                                        asked.last_at - started)

    async def _gather_wave(self, rnd: Round, request: GenerateRequest, fanout: Plan,
                           model_id: str) -> None:
        local_n = fanout.parts.get(SELF, 0)
        model = self.models.find(model_id)
        workers = max(1, model.workers) if model is not None else 1
        if local_n and len(fanout.parts) == 1 and len(split_n(local_n, workers)) == 1:
            # one local part (n=1, or one worker): no nursery and no extra task needed
            with trio.CancelScope(deadline=rnd.deadline) as deadline_scope:
                rnd.scope = trio.CancelScope()
                with rnd.scope:
                    await self._run_local(rnd, request, 0, model_id)
            rnd.deadline_hit = rnd.deadline_hit or deadline_scope.cancelled_caught
            return
        parts: list[tuple[str, GenerateRequest]] = []  # (node, its part), seeds in plan order
        first = request.first_index
        for node_id, count in fanout.parts.items():
            for c in split_n(count, workers) if node_id == SELF else [count]:
                parts.append((node_id, msgspec.structs.replace(request, n=c, first_index=first)))
                first += c
        with trio.CancelScope(deadline=rnd.deadline) as deadline_scope:
            async with trio.open_nursery() as nursery:
                rnd.scope = nursery.cancel_scope
                for node_id, part in parts:
                    if node_id == SELF:
                        nursery.start_soon(self._run_local_after_peers, rnd, part,
                                           part.first_index - request.first_index, model_id)
                    else:
                        nursery.start_soon(self._run_peer, rnd, node_id, part, model_id)
        rnd.deadline_hit = rnd.deadline_hit or deadline_scope.cancelled_caught

    def _add(self, rnd: Round, asked: Asked, cand: Candidate) -> None:
        if rnd.stopped:
            return  # a straggler: the winner was decided (and the report built) without it
        latency_ms = (time.perf_counter() - rnd.t0) * 1000
        rnd.candidates.append(msgspec.structs.replace(cand, latency_ms=latency_ms))
        asked.received += 1
        asked.latency_ms = latency_ms
        asked.last_at = trio.current_time()
        if rnd.first_candidate_ms is None:
            rnd.first_candidate_ms = latency_ms
        if rnd.on_candidate is not None:
            rnd.on_candidate(cand)
        if rnd.strategy is not None and rnd.adaptive:
            rnd.stop = verdict(rnd.strategy, rnd.candidates, budget=rnd.expected,
                               weights=self.weights, validation=rnd.validation, tau=self.tau,
                               question=rnd.question, calibration=rnd.factors)
            if rnd.stop is not None:
                rnd.scope.cancel()
        elif rnd.strategy is not None and rnd.early_stop:
            try:
                rnd.decision = decide(rnd.strategy, rnd.candidates, expected=rnd.expected,
                                      final=False, weights=self.weights,
                                      validation=rnd.validation, tau=self.tau,
                                      question=rnd.question, calibration=rnd.factors)
            except NoQuorum:
                rnd.decision = None
            if rnd.decision is not None:
                rnd.scope.cancel()

    def _asked(self, rnd: Round, key: str, node: str, count: int) -> Asked:
        """The report entry of one node (keyed by id: two peers may share a name)."""
        asked = rnd.asked.setdefault(
            key, Asked(node, self.ctx.card.node_id if key == SELF else key))
        asked.requested += count
        return asked

    async def _run_local_after_peers(self, rnd: Round, part: GenerateRequest,
                                     index_offset: int, model_id: str) -> None:
        """This node's part of a wave, started once the peers' votes have left: a vote is
        sent before its task's first checkpoint, and every task of the wave runs up to
        its first checkpoint before this one resumes (trio runs a batch of tasks before
        the next). So a peer's round trip and prompt overlap this node's work."""
        await trio.lowlevel.checkpoint()
        await self._run_local(rnd, part, index_offset, model_id)

    async def _run_local(self, rnd: Round, part: GenerateRequest, index_offset: int,
                         model_id: str) -> None:
        name = self.ctx.card.name
        asked = self._asked(rnd, SELF, name, part.n)
        produced = 0
        worker = ""

        def on_event(event: WorkToken | WorkCandidate) -> None:
            nonlocal produced
            produced += 1  # something reached the caller: a retry would repeat it
            if isinstance(event, WorkToken):
                if rnd.on_token is not None:
                    rnd.on_token(index_offset + event.index, event.text)
                return
            cand = event.candidate
            self.ctx.stats.generated(cand.tokens, prompt_tokens=cand.prompt_tokens,
                                     cached_tokens=cand.cached_tokens)
            cand = msgspec.structs.replace(event.candidate, node=name, worker=worker,
                                           node_id=self.ctx.card.node_id,
                                           model_id=model_id)
            self._add(rnd, asked, cand)

        for attempt in (1, 2):
            try:
                async with self.models.use(model_id) as model, \
                        model.scheduler.slot(prefer=rnd.home_worker) as worker:
                    assert model.pool is not None
                    await model.pool.run(worker, new_request_id(), part, on_event=on_event,
                                         stream=rnd.on_token is not None)
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

    async def _run_peer(self, rnd: Round, node_id: str, part: GenerateRequest,
                        model_id: str) -> None:
        name = self.peers.peer_name(node_id)
        asked = self._asked(rnd, node_id, name, part.n)
        # the round's deadline, or sooner: [federation] deadline_ms is a peer's time to answer
        vote_deadline = min(rnd.deadline, trio.current_time() + self.vote_deadline_s)
        sent, sent_at = time.perf_counter(), trio.current_time()
        stats = self.ctx.stats
        stats.votes_sent += 1
        answered = False
        try:
            with trio.move_on_at(vote_deadline) as vote_scope:
                try:
                    candidates = await self.peers.vote(node_id, part, vote_deadline,
                                                       model_id)
                except ZswarmError as exc:
                    asked.outcome, asked.detail = "failed", str(exc)
                    rnd.errors.append(exc)
                    log.debug("vote from %s failed: %s", name, exc)
                    return
            if vote_scope.cancelled_caught:
                asked.outcome = "timeout"
                asked.detail = f"no vote within {vote_deadline - sent_at:.1f} s"
                self.peers.unanswered(node_id, asked.detail)
                return
            answered = True
            stats.vote_rtt_s.observe(time.perf_counter() - sent)
        finally:
            if not answered:
                stats.votes_unanswered[asked.outcome or "cancelled"] += 1
        for cand in candidates:
            self._add(rnd, asked, cand)
