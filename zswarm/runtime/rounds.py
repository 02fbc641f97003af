"""One ask's round: what it may spend, what arrived, and what its report says of each node.

Owns: ``Round`` (the deadline, the token sink, the early-stop scope, the candidates and
decision, and for an adaptive ask its waves and why it stopped), ``Asked`` (what one
node was asked for and what came of it), and turning them into the report's
participants and into the error of a round where nothing arrived. The coordinator
(runtime/coordinator.py) runs rounds; this module only holds and reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import trio

from zswarm.core.consensus import Decision, Strategy, Validation
from zswarm.core.messages import Candidate, Outcome, Participant
from zswarm.core.names import shown
from zswarm.core.plan import SELF
from zswarm.core.stopping import StopReason
from zswarm.errors import DeadlineExceeded, NoQuorum, Overloaded, ZswarmError

TokenSink = Callable[[int, str], None]


#: what a participant cancelled by a stop reads in the report
STOPPED: dict[StopReason, str] = {
    "cannot change": "the winner could not change",
    "settled": "the winner was settled",
    "no agreement": "no answer was gaining agreement",
    "budget spent": "the budget was spent"}


def split_n(n: int, workers: int) -> list[int]:
    """Spread n candidates over at most ``workers`` parts, as evenly as possible."""
    parts = max(1, min(n, workers))
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class Asked:
    node: str
    node_id: str = ""
    requested: int = 0
    received: int = 0
    #: set when the part failed or timed out; else derived from what arrived
    outcome: Outcome | None = None
    detail: str = ""
    latency_ms: float = 0.0
    #: trio time of its last candidate (how fast it delivered: runtime/speeds.py)
    last_at: float = 0.0


@dataclass
class Round:
    """One request from fan-out to decision: what it may spend and what arrived."""

    #: None = gather every candidate (serving a vote), no strategy
    strategy: Strategy | None
    expected: int
    #: trio time at which the whole round ends
    deadline: float
    #: the model asked for (its local workers make this node's share)
    model_id: str = ""
    #: a committee's weights of its models (core/committee.py), with the node weights
    model_weights: dict[str, float] = field(default_factory=dict)
    #: where streamed tokens go (candidate index, text); None = no streaming
    on_token: TokenSink | None = None
    #: told of each candidate as it is added (who made it; progress for a client)
    on_candidate: Callable[[Candidate], None] | None = None
    #: the last user message: helps the strategies tell answers from restated questions
    question: str = ""
    #: decide as soon as the strategy can (else only once every candidate is in)
    early_stop: bool = True
    #: ``expected`` is a budget, spent in waves until core/stopping.py says stop
    adaptive: bool = False
    #: why the candidates stopped coming (adaptive asks), for the report
    stop: StopReason | None = None
    waves: int = 0
    #: the local worker whose prompt cache holds this conversation, if one does
    home_worker: str | None = None
    #: what makes a candidate valid, and its answer key (a structured answer's value)
    validation: Validation = field(default_factory=Validation)
    #: ``confidence``'s calibration of the answer keys (core/calibration.py), or empty
    factors: dict[str, float] = field(default_factory=dict)
    #: perf_counter at the start of the current gather (candidate latencies count from it)
    t0: float = 0.0
    #: the current gather: cancelled once the strategy has decided (early stop)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    candidates: list[Candidate] = field(default_factory=list)
    decision: Decision | None = None
    errors: list[ZswarmError] = field(default_factory=list)
    asked: dict[str, Asked] = field(default_factory=dict)
    first_candidate_ms: float | None = None
    deadline_hit: bool = False
    #: trio time at which the round began (for messages: "the deadline of 30.0 s")
    began: float = field(default_factory=trio.current_time)

    @property
    def stopped(self) -> bool:
        """The strategy or the stopping rule decided: what still runs is cancelled."""
        return self.decision is not None or self.stop is not None

    @property
    def seconds(self) -> float:
        """The time the round was given."""
        return self.deadline - self.began


def nothing_arrived(rnd: Round, note: str) -> ZswarmError:
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
        return DeadlineExceeded(f"no candidate within the deadline of {rnd.seconds:.1f} s")
    return NoQuorum("no candidate arrived" + (f": {note}" if note else ""))

def participants(rnd: Round) -> tuple[list[Participant], dict[str, str]]:
    """The report's participants, and how each node is shown (node id -> name: no two
    look alike, core/names.py; ``named`` applies it to the candidates)."""
    names = shown([(a.node_id, a.node) for a in rnd.asked.values()]
                  + [(c.node_id, c.node) for c in rnd.candidates])
    out = []
    for a in rnd.asked.values():
        outcome: Outcome
        detail = a.detail
        if a.outcome is not None:
            outcome = a.outcome
        elif a.received >= a.requested:
            outcome = "answered"
        elif rnd.stopped:  # we stopped it, not a fault of the node's
            outcome = "cancelled"
            detail = detail or f"stopped early: {STOPPED[rnd.stop or 'cannot change']}"
        elif a.received:
            outcome = "partial"
        else:
            outcome = "timeout"
        out.append(Participant(node=names.get(a.node_id, a.node), node_id=a.node_id,
                               requested=a.requested, received=a.received,
                               outcome=outcome, detail=detail,
                               latency_ms=round(a.latency_ms, 2)))
    return out, names


def named(candidates: list[Candidate], names: dict[str, str]) -> list[Candidate]:
    """The candidates with their nodes shown as ``names`` says."""
    return [c if names.get(c.node_id, c.node) == c.node
            else msgspec.structs.replace(c, node=names[c.node_id]) for c in candidates]
