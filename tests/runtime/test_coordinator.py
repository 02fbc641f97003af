"""The coordinator's rules in milliseconds: an in-process pool, scripted peers, trio's MockClock.

Real sockets and processes prove the same paths elsewhere (tests/federation); these
pin down fan-out, early stop, route fallback, outcomes and demotion requests exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from tests.helpers import conversation, question
from zswarm.asks import Ask
from zswarm.config import parse_config
from zswarm.core import calibration
from zswarm.core.messages import Candidate, GenerateRequest, Load, NodeCard, PeerInfo
from zswarm.core.peers import Peer, PeerState
from zswarm.core.plan import NodeLoad
from zswarm.errors import NoQuorum, Overloaded, PeerUnavailable, ZswarmError
from zswarm.runtime.context import NodeContext, NoPeers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.models import Models
from zswarm.runtime.scheduler import Scheduler
from zswarm.testing.inline import InlinePool


@dataclass
class Behaviour:
    texts: list[str] = field(default_factory=lambda: ["42"])
    delay_s: float = 0.0
    error: ZswarmError | None = None
    hang: bool = False
    #: the claimed mean log-probability of every candidate (None: no claim)
    logprob: float | None = None


class ScriptedPeers:
    """``Peers`` (runtime/context.py) whose peers do as they are told."""

    def __init__(self, **peers: Behaviour) -> None:
        self.behaviour = peers
        self.table = {name: Peer(card=NodeCard(node_id=name, name=name, model_id="scripted",
                                               workers=1, rpc="tcp://10.0.0.9:1",
                                               pub="tcp://10.0.0.9:2"),
                                 address="10.0.0.9", source="test", state=PeerState.ALIVE,
                                 load=Load(workers_ready=1, idle_workers=1))
                      for name in peers}
        self.asked: list[str] = []
        self.asked_models: list[str | None] = []
        self.unanswered_calls: list[str] = []
        #: node -> models it holds without having them loaded
        self.holding: dict[str, list[str]] = {}

    def peer_loads(self, model_id: str, allowed: Sequence[str] | None, *,
                   loaded: bool = True) -> list[NodeLoad]:
        if not loaded:  # a model they hold but have not loaded
            return [NodeLoad(node, 1, 1, 0) for node, held in self.holding.items()
                    if model_id in held]
        return [NodeLoad(p.card.node_id, p.load.workers_ready, p.load.idle_workers,
                         p.load.queue_depth)
                for p in self.table.values() if p.card.model_id == model_id
                and (allowed is None or p.card.name in allowed)]

    def models(self) -> dict[str, str]:
        return {p.card.model_id: p.card.name for p in self.table.values()}

    def peers(self) -> list[PeerInfo]:
        return []

    def peer_name(self, node_id: str) -> str:
        return node_id

    def unanswered(self, node_id: str, why: str) -> None:
        self.unanswered_calls.append(node_id)

    async def vote(self, node_id: str, request: GenerateRequest, deadline: float,
                   model_id: str | None = None) -> list[Candidate]:
        self.asked.append(node_id)
        self.asked_models.append(model_id)
        b = self.behaviour[node_id]
        if b.hang:
            await trio.sleep_forever()
        await trio.sleep(b.delay_s)
        if b.error is not None:
            raise b.error
        return [Candidate(text=b.texts[i % len(b.texts)], finish_reason="stop", node=node_id,
                          node_id=node_id,  # as the federation names them (claims.accept_vote)
                          model_id="scripted", mean_logprob=b.logprob)
                for i in range(request.n)]


LETTERED = "Which is a vegetable? (a) carrot (b) apple (c) potato. Answer with the letter."


def ask_request(n: int) -> GenerateRequest:
    return question("6 * 7?", n=n)


@pytest.fixture
async def make(nursery):
    async def build(peers: ScriptedPeers | None, *, local: list[str] | None = None,
                    local_delay_s: float = 0.0, vote_deadline_s: float = 5.0,
                    workers: int = 1, local_logprob: float | None = None,
                    calibrate: bool = True) -> Coordinator:
        config = parse_config({"node": {"name": "me"},
                               "federation": {"deadline_ms": int(vote_deadline_s * 1000)},
                               "consensus": {"calibrate": calibrate}})
        card = NodeCard(node_id="me", name="me", model_id="scripted", workers=1, rpc="", pub="")
        pool = InlinePool(Scheduler(max_queue=4), answers=local or ["42"],
                          delay_s=local_delay_s, workers=workers, logprob=local_logprob)
        ctx = NodeContext(config, card, Models.fixed(pool, "scripted"), state="ready")
        await nursery.start(ctx.models.serve)
        return Coordinator(ctx, peers if peers is not None else NoPeers())
    return build


async def test_majority_over_local_and_peers_reports_every_participant(make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(["41"]), c=Behaviour(["41"], delay_s=0.5))
    coordinator = await make(peers)
    answer, report = await coordinator.ask(Ask(ask_request(3), "majority", 10_000))
    assert answer == "41" and sorted(peers.asked) == ["b", "c"]
    assert {p.node: p.outcome for p in report.participants} == {
        "me": "answered", "b": "answered", "c": "answered"}


async def test_first_valid_stops_early_and_cancels_the_stragglers(make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(delay_s=30), c=Behaviour(delay_s=30))
    coordinator = await make(peers)
    t0 = trio.current_time()
    answer, report = await coordinator.ask(Ask(ask_request(3), "first_valid", 60_000))
    assert answer == "42" and trio.current_time() - t0 < 1
    assert {p.node: p.outcome for p in report.participants} == {
        "me": "answered", "b": "cancelled", "c": "cancelled"}
    assert peers.unanswered_calls == []  # stopped by us, not the peers' fault


async def test_a_silent_peer_times_out_and_is_reported_for_demotion(make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(hang=True))
    coordinator = await make(peers, vote_deadline_s=2.0)
    answer, report = await coordinator.ask(Ask(ask_request(2), "majority", 10_000))
    assert answer == "42"
    (b,) = [p for p in report.participants if p.node == "b"]
    assert b.outcome == "timeout" and "b: timeout" in report.note
    assert peers.unanswered_calls == ["b"]


async def test_route_falls_back_to_this_node_when_the_routed_peer_fails(make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(error=PeerUnavailable("gone"), delay_s=0.5))
    coordinator = await make(peers)

    async def busy_for_a_moment() -> None:  # the local worker is busy when the route is planned
        worker = await coordinator.ctx.models.default.scheduler.acquire()
        await trio.sleep(0.2)
        coordinator.ctx.models.default.scheduler.release(worker)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(busy_for_a_moment)
        await trio.testing.wait_all_tasks_blocked()
        answer, report = await coordinator.ask(Ask(ask_request(1), "route", 10_000))
    assert peers.asked == ["b"] and answer == "42"
    assert "routed node failed; answered locally" in report.note
    assert {p.node: p.outcome for p in report.participants} == {"b": "failed", "me": "answered"}


async def test_every_node_overloaded_is_overloaded_not_no_quorum(make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(error=Overloaded("busy", retry_after_s=3.0)))
    coordinator = await make(peers)
    async with trio.open_nursery() as hold:  # fill the local worker and its queue of 4
        for _ in range(5):
            hold.start_soon(coordinator.ctx.models.default.scheduler.acquire)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(Overloaded) as info:
            await coordinator.ask(Ask(ask_request(2), "majority", 10_000))
        assert info.value.retry_after_s == 3.0
        hold.cancel_scope.cancel()


async def test_a_peer_only_model_with_no_peer_is_no_quorum(make, autojump_clock):
    coordinator = await make(ScriptedPeers())
    with pytest.raises(NoQuorum, match="no ALIVE peer serves the model"):
        await coordinator.ask(Ask(ask_request(1), "first_valid", 1000, model_id="other@123"))


async def test_route_sends_a_conversations_next_turn_to_the_node_that_answered_it(
        make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(["from b"]))
    coordinator = await make(peers, local=["from me"], local_delay_s=1.0)
    async with trio.open_nursery() as nursery:  # the only local worker is busy for a while
        nursery.start_soon(coordinator.ask, Ask(ask_request(1), "majority", 10_000))
        await trio.sleep(0.1)
        answer, _ = await coordinator.ask(Ask(conversation("hi"), "route", 10_000))
        assert answer == "from b"  # the least loaded node
    # the local worker is free again (a tie, which this node would win), but b holds the
    # conversation in its prompt cache: its next turn goes there
    answer, _ = await coordinator.ask(Ask(conversation("hi", "from b", "more"), "route", 10_000))
    assert answer == "from b"
    answer, _ = await coordinator.ask(Ask(conversation("another"), "route", 10_000))
    assert answer == "from me"  # a new conversation: least loaded, this node
    # the home is busy (a vote of ours in flight there): the least loaded node answers
    peers.table["b"].load = Load(workers_ready=1, idle_workers=0, queue_depth=2)
    answer, _ = await coordinator.ask(
        Ask(conversation("hi", "from b", "more", "from b", "again"), "route", 10_000))
    assert answer == "from me"


async def test_a_conversations_next_turn_goes_to_the_worker_that_holds_it(make, autojump_clock):
    coordinator = await make(None, workers=2)
    _, first = await coordinator.ask(Ask(conversation("hi"), "majority", 10_000))
    home = first.candidates[0].worker
    for turn in range(3):  # other conversations in between, and the next turns
        for other in range(2):  # which would leave the next idle worker the other one
            await coordinator.ask(Ask(conversation(f"other {turn} {other}"), "majority", 10_000))
        _, report = await coordinator.ask(
            Ask(conversation("hi", "42", *(x for t in range(turn) for x in (f"q{t}", "42")),
                         f"q{turn}"), "majority", 10_000))
        assert report.candidates[0].worker == home


WORDS = "apple pear plum fig date grape melon mango peach cherry lemon guava olive quince " \
    "papaya banana".split()


async def test_a_budget_stops_once_the_answer_is_settled(make, autojump_clock):
    coordinator = await make(None)
    answer, report = await coordinator.ask(
        Ask(ask_request(16), "confidence", 10_000, adaptive=True))
    assert answer == "42"
    assert (len(report.candidates), report.waves, report.budget, report.stop) == \
        (4, 1, 16, "settled")
    (me,) = report.participants  # settled with the first wave: the second never starts
    assert me.outcome == "answered" and me.requested == 4


async def test_a_budget_of_scattered_answers_stops_at_half_as_no_agreement(make, autojump_clock):
    coordinator = await make(None, local=WORDS)
    _, report = await coordinator.ask(Ask(ask_request(16), "majority", 10_000, adaptive=True))
    assert (len(report.candidates), report.waves, report.stop) == (8, 2, "no agreement")
    # each wave continues the seeds (first_index) of the one before: 8 different answers
    assert len({c.text for c in report.candidates}) == 8


async def test_waves_are_spread_over_the_swarm_like_a_fixed_n(make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(["kiwi", "lime"]))
    coordinator = await make(peers, local=WORDS)
    _, report = await coordinator.ask(Ask(ask_request(16), "majority", 10_000, adaptive=True))
    assert peers.asked == ["b", "b"]  # asked in both waves
    assert {p.node: p.requested for p in report.participants} == {"me": 4, "b": 4}
    assert (len(report.candidates), report.waves, report.stop) == (8, 2, "no agreement")


async def test_a_fixed_n_reports_no_budget(make, autojump_clock):
    coordinator = await make(None)
    _, report = await coordinator.ask(Ask(ask_request(4), "majority", 10_000))
    assert (report.budget, report.waves, report.stop) == (0, 1, "")


async def every_claim(coordinator: Coordinator, n: int, strategy: str):
    """Ask and wait for every candidate (no early stop: which claims arrive before one
    is not these tests' to pin)."""
    return await coordinator.ask(Ask(ask_request(n), strategy, 10_000, early_stop=False))


async def test_a_peer_claim_the_answer_wins_without_is_not_rescored(make, autojump_clock):
    """42 wins on this node's own candidate even with the agreeing peer's claim at the
    least confidence: no pass is spent on it (its claim is dropped, not believed)."""
    peers = ScriptedPeers(agrees=Behaviour(["42"], logprob=-1.0),
                          other=Behaviour(["41"], logprob=-3.0))
    coordinator = await make(peers, local_logprob=-1.0)
    answer, report = await every_claim(coordinator, 3, "confidence")
    assert answer == "42" and coordinator.models.default.pool.scored == []
    assert "1 peer score(s) not needed" in report.note and "checked" not in report.note
    (agrees,) = [c for c in report.candidates if c.node == "agrees"]
    assert agrees.mean_logprob is None


async def test_a_deciding_lie_is_rescored_and_loses(make, autojump_clock):
    peers = ScriptedPeers(liar=Behaviour(["41"], logprob=0.0),
                          honest=Behaviour(["42"], logprob=-3.0))
    coordinator = await make(peers, local_logprob=-3.0)
    answer, report = await every_claim(coordinator, 3, "confidence")
    assert answer == "42" and coordinator.models.default.pool.scored == [["41"]]
    assert "1 peer score(s) checked by this node's model" in report.note


async def test_best_of_n_checks_every_claim_in_line_in_one_slot(make, autojump_clock):
    """Two peers claim more than this node's best: both are re-scored in one worker slot
    (the second would be next in line once the first fell), not one after the other."""
    peers = ScriptedPeers(p1=Behaviour(["41"], logprob=-0.1),
                          p2=Behaviour(["40"], logprob=-0.2))
    coordinator = await make(peers, local_logprob=-2.0)
    answer, report = await every_claim(coordinator, 3, "best_of_n")
    assert answer == "42" and coordinator.models.default.pool.scored == [["41", "40"]]
    assert "2 peer score(s) checked" in report.note


async def test_the_next_ask_gives_a_slower_peer_a_smaller_share(make, autojump_clock):
    """Both finish together: after one ask in which the peer took three times as long
    for the same share, the split follows the measured speeds (runtime/speeds.py)."""
    peers = ScriptedPeers(slow=Behaviour(["42"], delay_s=3.0))
    coordinator = await make(peers, local_delay_s=1.0)
    _, first = await coordinator.ask(Ask(ask_request(8), "majority", 30_000, early_stop=False))
    assert {p.node: p.requested for p in first.participants} == {"me": 4, "slow": 4}
    _, second = await coordinator.ask(Ask(ask_request(8), "majority", 30_000, early_stop=False))
    shares = {p.node: p.requested for p in second.participants}
    assert shares["me"] > 4 > shares["slow"] >= 1 and sum(shares.values()) == 8


async def test_only_the_claim_that_tips_the_answer_is_rescored(make, autojump_clock):
    """42 needs one of its two peer claims to beat 41: the less confident one is spared
    (42 still wins with it at the least confidence), the other is re-scored."""
    peers = ScriptedPeers(sure=Behaviour(["42"], logprob=-0.5),
                          unsure=Behaviour(["42"], logprob=-2.0),
                          other=Behaviour(["41"], logprob=-1.0))
    coordinator = await make(peers, local_logprob=-3.0)
    answer, report = await every_claim(coordinator, 4, "confidence")
    assert answer == "42" and coordinator.models.default.pool.scored == [["42"]]
    assert "1 peer score(s) checked" in report.note and "1 peer score(s) not needed" in report.note
    by_node = {c.node: c.mean_logprob for c in report.candidates}
    assert by_node["sure"] == -0.5 and by_node["unsure"] is None  # checked; dropped


async def test_a_model_loaded_nowhere_goes_to_a_peer_that_holds_it(make, autojump_clock):
    peers = ScriptedPeers(b=Behaviour(["41"]), c=Behaviour(["40"]))
    peers.holding = {"c": ["q8.gguf@2"]}  # c holds it, not loaded: a vote there loads it
    coordinator = await make(peers)
    answer, report = await coordinator.ask(Ask(ask_request(2), "majority", 10_000,
                                               model_id="q8.gguf@2"))
    assert answer == "40" and peers.asked == ["c"] and peers.asked_models == ["q8.gguf@2"]
    with pytest.raises(NoQuorum, match="no ALIVE peer serves the model 'x.gguf@3'"):
        await coordinator.ask(Ask(ask_request(2), "majority", 10_000, model_id="x.gguf@3"))


async def test_a_committee_asks_each_model_for_its_share_and_learns_its_weight(
        nursery, autojump_clock):
    from zswarm.config import ModelEntry
    from zswarm.runtime.models import Resident

    def resident(name: str, answers: list[str]) -> Resident:
        pool = InlinePool(Scheduler(max_queue=8), answers=answers, workers=2)
        return Resident(name, f"{name}@1", ModelEntry(pinned=True, workers=2), 0,
                        lambda: pool)

    models = Models([resident("good", ["Paris"]), resident("bad", ["Lyon"])],
                    budget_mib=0, min_resident_s=0, max_waiting=8)
    card = NodeCard(node_id="me", name="me", model_id="good@1", workers=2, rpc="", pub="")
    ctx = NodeContext(parse_config({}), card, models, state="ready")
    await nursery.start(models.serve)
    coordinator = Coordinator(ctx, NoPeers())
    answer, report = await coordinator.ask(Ask(ask_request(5), "majority", 10_000,
                                               models=("good@1", "bad@1")))
    assert sorted(c.model_id for c in report.candidates) == ["bad@1"] * 2 + ["good@1"] * 3, (
        report.note, report.participants)
    assert answer == "Paris"  # three of five
    # the good model agreed with the decision, the bad one did not: they weigh so now
    assert coordinator.committee.weight("good@1") > 1.0 > coordinator.committee.weight("bad@1")


async def test_the_models_lean_is_learned_from_this_nodes_candidates_never_a_peers(
        make, autojump_clock):
    # a peer that answers "(a)" to everything, many times, must not move the prior the
    # asker divides out of its candidates (core/calibration.py); this node's own do
    peers = ScriptedPeers(liar=Behaviour(["(a) carrot"]))
    coordinator = await make(peers, local=["(c) potato"])
    assert coordinator.priors is not None
    own = 0
    for _ in range(5):
        _, report = await coordinator.ask(Ask(question(LETTERED, n=4), "confidence", 10_000))
        assert {c.node for c in report.candidates} == {"me", "liar"}
        own += sum(c.node == "me" for c in report.candidates)
    letters = ("option:a", "option:b", "option:c")
    share = coordinator.priors.prior("scripted", letters)
    pseudo = calibration.PSEUDO_COUNT  # only "me"'s "(c)" were counted, no "(a)"
    assert share["option:a"] == share["option:b"] == pseudo / (own + 3 * pseudo)
    factors = coordinator.priors.factors("scripted", LETTERED)
    assert factors["option:a"] > 1 > factors["option:c"]
    _, report = await coordinator.ask(Ask(question(LETTERED, n=4), "confidence", 10_000))
    assert "calibrated" in report.note


async def test_calibration_can_be_turned_off(make, autojump_clock):
    coordinator = await make(None, calibrate=False)
    assert coordinator.priors is None
    _, report = await coordinator.ask(Ask(question(LETTERED, n=2), "confidence", 10_000))
    assert "calibrated" not in report.note


async def test_the_peers_votes_leave_before_this_node_starts_its_share(make, autojump_clock):
    # trio may run a batch of new tasks in either order: twenty waves, every one of them
    # with the votes sent first (a vote leaves before its task's first checkpoint)
    peers = ScriptedPeers(b=Behaviour(["41"]), c=Behaviour(["41"]))
    coordinator = await make(peers)
    run_local = coordinator._run_local

    async def local(*args, **kw):
        peers.asked.append("me")
        await run_local(*args, **kw)

    coordinator._run_local = local  # type: ignore[method-assign]
    for _ in range(20):
        peers.asked.clear()
        # best_of_n waits for all three: no share is cancelled, each ask finds all idle
        await coordinator.ask(Ask(ask_request(3), "best_of_n", 10_000))
        assert peers.asked[-1] == "me" and sorted(peers.asked) == ["b", "c", "me"]
