"""The Federation's handling of what it hears, in milliseconds: trio's MockClock, no sockets.

A recording stand-in for runtime/connections.py answers status requests and votes as
told; mDNS records and heartbeats are handed to ``on_mdns`` / ``on_heartbeat`` as the
socket loops would. Real sockets, mDNS and processes prove the same paths in
tests/federation and tests/e2e.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import pytest
import trio
import trio.lowlevel

from tests import helpers
from zswarm.config import parse_config
from zswarm.core import codec
from zswarm.core.ids import pinned
from zswarm.core.messages import (
    PROTOCOL_VERSION,
    Candidate,
    ChatMessage,
    GenerateRequest,
    Heartbeat,
    HeldModel,
    Load,
    Message,
    NodeCard,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
    Vote,
    VoteRequest,
)
from zswarm.core.peers import MAX_UNHEARD, PeerState
from zswarm.errors import PeerUnavailable, RemoteProtocolError
from zswarm.net.guard import FrameDrops
from zswarm.net.mdns import Found
from zswarm.net.security import one_off
from zswarm.runtime.backlinks import MAX_BACKLINKS, Backlinks
from zswarm.runtime.connections import Connections, Inbound
from zswarm.runtime.context import NodeContext
from zswarm.runtime.federation import MAX_FOREIGN, MAX_JOBS, NOTES_PER_KIND, Federation
from zswarm.runtime.models import Models
from zswarm.runtime.probes import MAX_CONTACTS
from zswarm.runtime.scheduler import Scheduler
from zswarm.testing.cluster import wait_until_async
from zswarm.testing.inline import InlinePool

READY = Load(workers_ready=1, idle_workers=1, max_queue=8)
#: the test nodes' ids (their keys': tests/helpers.py) -> their names
NAMES = {helpers.id_of(n): n for n in ("me", "a", "b", "c", "d", "e", "x", "liar", "twin")}
ID = {n: i for i, n in NAMES.items()}


def card(name: str, *, swarm: str = "s", key: str = "", model: str = "m@1",
         host: str = "10.0.0.2") -> NodeCard:
    return helpers.card(name, host=host, model_id=model, swarm=swarm, key=key)


@dataclass
class FakeIO:
    """The part of Connections the Federation uses, recording what it is asked to do."""

    drops: FrameDrops = field(default_factory=FrameDrops)
    subscribed: list[str] = field(default_factory=list)
    forgotten: list[tuple[str, str]] = field(default_factory=list)
    #: endpoint -> the card that answers a status request there (absent = no answer)
    at: dict[str, NodeCard] = field(default_factory=dict)
    #: node id -> how it answers a vote request
    votes: dict[str, Callable[[VoteRequest], Message]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    vote_requests: list[VoteRequest] = field(default_factory=list)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    def read_heartbeats(self) -> None:
        pass  # the tests call on_heartbeat themselves

    def subscribe(self, peer) -> None:
        self.subscribed.append(peer.card.name)

    def forget(self, node_id: str, why: str) -> None:
        self.forgotten.append((NAMES.get(node_id, node_id), why))

    def close_link(self, node_id: str, why: str) -> None:
        pass

    def link(self, peer) -> FakeLink:
        return FakeLink(self, peer.card)

    async def status(self, endpoint: str, public: str, name: str) -> tuple[Status, float]:
        """As Connections.status: pinned to ``public``, so only its holder answers."""
        card = self.at.get(endpoint)
        if card is None or card.public != public:
            raise PeerUnavailable(f"{name} does not answer at {endpoint} with {public[:8]}")
        return Status(request_id="r", card=card, load=READY), 0.5

    def heartbeat_back(self, hb: Heartbeat) -> None:
        pass

    def asked_back(self) -> set[str]:
        return set()


@dataclass
class FakeLink:
    io: FakeIO
    peer: NodeCard

    async def request(self, msg: Message, rid: str, *, timeout_s: float | None = None
                      ) -> Message:
        if isinstance(msg, StatusRequest):
            return Status(request_id=rid, card=self.peer, load=READY)
        if isinstance(msg, PeersRequest):  # peer exchange: it knows nobody else
            return PeersReply(request_id=rid, node=self.peer, peers=[])
        assert isinstance(msg, VoteRequest)
        self.io.vote_requests.append(msg)
        answer = self.io.votes.get(self.peer.name)
        if answer is None:
            await trio.sleep_forever()
        await trio.sleep(0.1)  # a vote takes a while: several can be in flight
        return answer(msg)

    def cancel(self, rid: str) -> None:
        self.io.cancelled.append(rid)


class FakeRouter:
    """The RPC ROUTER as the Backlinks see it: what is sent to which connection."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Message]] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append((frames[0], codec.decode(frames[1])))


class Published:
    def __init__(self) -> None:
        self.heartbeats: list[Heartbeat] = []

    def publish(self, hb: Heartbeat) -> None:
        self.heartbeats.append(hb)


@dataclass
class Swarm:
    fed: Federation
    io: FakeIO
    published: Published
    ctx: NodeContext
    router: FakeRouter

    async def answer_back(self, ident: bytes, peer: NodeCard, interval_ms: int | None = None,
                          *, public: str | None = None) -> None:
        """Answer, as ``peer``, what was asked over the connection ``ident`` (whose key,
        as its handshake proved it, is ``public``: by default the peer's own)."""
        await wait_for(lambda: any(i == ident for i, _ in self.router.sent))
        for i, msg in self.router.sent:
            if i == ident and isinstance(msg, StatusRequest):
                self.fed.from_link(ident, Status(request_id=msg.request_id, card=peer,
                                                 load=READY, interval_ms=interval_ms),
                                   public or peer.public)
        self.router.sent.clear()
        await trio.sleep(0.01)

    def hear(self, peer: NodeCard, load: Load = READY) -> None:
        self.fed.on_heartbeat(Heartbeat(card=peer, seq=1, load=load, interval_ms=1000))

    def state(self, name: str) -> PeerState | None:
        """The state of the peer called ``name`` (the test nodes' ids are their keys')."""
        return {p.name: PeerState(p.state) for p in self.fed.peers() if p.node_id}.get(name)


@pytest.fixture
async def swarm(nursery):
    async def build(**federation: object) -> Swarm:
        config = parse_config({"node": {"name": "me"}, "federation": {
            "swarm": "s", "discovery": "static", **federation}})
        ctx = NodeContext(config, card("me", host="10.0.0.1"),
                          Models.fixed(InlinePool(Scheduler(max_queue=8)), "m"), state="ready")
        io, published, router = FakeIO(drops=ctx.drops), Published(), FakeRouter()
        fed = Federation(ctx, published, mdns_address="10.0.0.1", peer_io=io,
                         backlinks=Backlinks(router, ctx.drops.counter("backlinks")))  # type: ignore[arg-type]
        await nursery.start(fed.serve)
        return Swarm(fed, io, published, ctx, router)
    return build


def ask(n: int = 1) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage(role="user", content="6 * 7?"),), n=n)


def found(peer: NodeCard) -> Found:
    return Found(card=peer, address=peer.rpc[6:].split(":")[0], proto=PROTOCOL_VERSION,
                 service="x")


async def test_a_record_of_this_swarm_is_pinged_and_joins(swarm, autojump_clock):
    s = await swarm()
    b = card("b")
    s.io.at[b.rpc] = b
    s.fed.on_mdns(found(b))
    # only announced: nothing connects to it until it answers a probe, sent at once
    assert s.state("b") is PeerState.DISCOVERED and s.io.subscribed == []
    await trio.sleep(0.01)
    assert s.state("b") is PeerState.ALIVE and s.io.subscribed == ["b"]
    assert [NAMES[load.node_id] for load in s.fed.peer_loads("m@1", None)] == ["b"]


async def test_records_of_another_swarm_or_key_are_never_peers(swarm, autojump_clock):
    s = await swarm()
    s.fed.on_mdns(found(card("x", swarm="other")))
    s.fed.on_mdns(found(card("y", key="someone-elses-key")))
    s.hear(card("z", swarm="other"))
    await trio.sleep(2.0)
    assert s.fed.peers() == [] and s.io.subscribed == []


async def test_nodes_of_another_key_are_remembered_for_the_report_within_a_bound(
        swarm, autojump_clock):
    s = await swarm()
    for i in range(3 * MAX_FOREIGN):  # a flood of records of our swarm name, other keys
        s.fed.on_mdns(found(card(f"k{i}", key=f"key-{i}")))
    s.fed.on_mdns(found(card("k0", key="key-0")))  # one already remembered: said again
    foreign = s.fed.foreign()
    assert len(foreign) == MAX_FOREIGN and foreign[0].startswith("k0 at ")
    assert all("swarm key" in f for f in foreign)  # why each is not a peer
    assert s.fed.peers() == []  # and none of them is a peer


async def test_peer_loads_honour_model_state_allowed_and_votes_out(swarm, autojump_clock):
    s = await swarm()
    for name, model in (("b", "m@1"), ("c", "m@1"), ("d", "other@2")):
        s.fed.on_mdns(found(card(name, model=model)))
        s.hear(card(name, model=model))
    s.hear(card("c"), Load(state="draining"))
    assert [NAMES[p.node_id] for p in s.fed.peer_loads("m@1", None)] == ["b"]  # c drains, d differs
    assert s.fed.peer_loads("m@1", []) == []
    assert {m: sorted(h.name for h in hs) for m, hs in s.fed.models().items()} == \
        {"m@1": ["b", "c"], "other@2": ["d"]}  # c is ALIVE (draining): it holds m@1
    # a vote in flight to b counts as queue there, so the planner spreads the next one
    async with trio.open_nursery() as n:
        n.start_soon(s.fed.vote, ID["b"], ask(), 5.0)
        await trio.sleep(0.1)
        assert [(NAMES[p.node_id], p.queue_depth)
                for p in s.fed.peer_loads("m@1", [ID["b"]])] == [("b", 1)]
        n.cancel_scope.cancel()
    assert len(s.io.cancelled) == 1  # we stopped waiting: the peer is told to stop
    assert s.fed.peer_loads("m@1", [ID["b"]])[0].queue_depth == 0


async def test_a_peer_of_several_models_is_planned_by_each_models_state(swarm, autojump_clock):
    s = await swarm()
    held = [HeldModel(model_id="m@1", name="small"), HeldModel(model_id="q@2", name="q8")]
    b = helpers.card("b", host="10.0.0.2", model_id="m@1", swarm="s", models=held)
    s.fed.on_mdns(found(b))
    s.hear(b, msgspec.structs.replace(READY, models=["loaded", "unloaded"]))
    assert [NAMES[p.node_id] for p in s.fed.peer_loads("m@1", None)] == ["b"]
    assert s.fed.peer_loads("q@2", None) == []  # not loaded there: no vote for it yet
    assert [NAMES[p.node_id] for p in s.fed.peer_loads("q@2", None, loaded=False)] == ["b"]
    assert {m: [(h.name, h.state, h.model_name) for h in hs]
            for m, hs in s.fed.models().items()} == {
        "m@1": [("b", "loaded", "small")], "q@2": [("b", "unloaded", "q8")]}
    s.hear(b, msgspec.structs.replace(READY, models=["loaded", "loaded"]))
    assert [NAMES[p.node_id] for p in s.fed.peer_loads("q@2", None)] == ["b"]
    # a vote for q@2 names it; for a model b does not hold, b's own (same_model_only off)
    async with trio.open_nursery() as n:
        n.start_soon(s.fed.vote, ID["b"], ask(), 5.0, "q@2")
        n.start_soon(s.fed.vote, ID["b"], ask(), 5.0, "z@9")
        await trio.sleep(0.1)
        n.cancel_scope.cancel()
    assert sorted(r.model_id for r in s.io.vote_requests) == ["m@1", "q@2"]


async def test_a_silent_peer_dies_on_time_and_its_links_go(swarm, autojump_clock):
    s = await swarm(heartbeat_interval_ms=1000, liveness=3)
    s.fed.on_mdns(found(card("b")))
    s.hear(card("b"))
    s.io.at.clear()
    s.fed.peer_io.link = lambda peer: (_ for _ in ()).throw(PeerUnavailable("gone"))  # type: ignore[method-assign]
    # interval x liveness = 3 s, checked four times per interval; heartbeats are read at
    # the ticks, up to 0.25 s after they arrived: DEAD once the last one may be 3 s old
    await trio.sleep(2.7)
    assert s.state("b") is not PeerState.DEAD
    await trio.sleep(0.4)
    assert s.state("b") is PeerState.DEAD
    assert any(node == "b" and "died" in why for node, why in s.io.forgotten)
    assert s.fed.peer_loads("m@1", None) == []


async def test_a_peer_declared_dead_that_still_answers_is_back_at_once(swarm, autojump_clock):
    """Its heartbeats stopped (a starved process, say) but it answers a probe: DEAD, then
    ALIVE again within a tick of the verdict, not after the probe back-off."""
    s = await swarm(heartbeat_interval_ms=1000, liveness=3)
    s.io.at[card("b").rpc] = card("b")
    s.fed.on_mdns(found(card("b")))
    s.hear(card("b"))
    s.fed.peer_io.link = lambda peer: (_ for _ in ()).throw(PeerUnavailable("busy"))  # type: ignore[method-assign]
    await trio.sleep(2.9)
    assert any(node == "b" and "died" in why for node, why in s.io.forgotten)
    assert s.state("b") is PeerState.ALIVE


async def test_a_vote_from_the_wrong_node_is_refused_and_demotes_the_peer(swarm, autojump_clock):
    s = await swarm()
    s.fed.on_mdns(found(card("b")))
    s.hear(card("b"))
    s.io.votes["b"] = lambda msg: Vote(request_id=msg.request_id, node_id="mallory", name="m",
                                       candidates=[Candidate(text="1", finish_reason="stop")])
    with pytest.raises(RemoteProtocolError):
        await s.fed.vote(ID["b"], ask(), 5.0)
    assert s.fed.peer_loads("m@1", None) == []  # demoted: not asked for a while
    assert sum(s.ctx.drops.counts.values()) == 1
    (info,) = s.fed.peers()
    assert info.state == "alive" and info.detail


async def test_a_good_vote_is_renamed_after_the_link(swarm, autojump_clock):
    s = await swarm()
    s.fed.on_mdns(found(card("b")))
    s.hear(card("b"))
    s.io.votes["b"] = lambda msg: Vote(request_id=msg.request_id, node_id=ID["b"], name="b",
                                       candidates=[Candidate(text="42", finish_reason="stop",
                                                             node="someone-else")])
    (cand,) = await s.fed.vote(ID["b"], ask(), 5.0)
    assert cand.text == "42" and cand.node == "b"


async def test_an_unanswered_vote_demotes_for_a_while(swarm, autojump_clock):
    s = await swarm()
    s.fed.on_mdns(found(card("b")))
    s.hear(card("b"))
    s.fed.unanswered(ID["b"], "no vote within 1.0 s")
    assert s.fed.peer_loads("m@1", None) == []
    await trio.sleep(11.0)  # the first demotion lasts 10 s
    s.hear(card("b"))
    assert [NAMES[p.node_id] for p in s.fed.peer_loads("m@1", None)] == ["b"]


async def test_static_peers_are_probed_and_explained_until_they_answer(swarm, autojump_clock):
    c, d = card("c", host="10.0.0.3"), card("d", host="10.0.0.4", swarm="other")
    liar = card("liar", host="10.0.0.5")  # answers at the address of e's key: cannot
    addresses = [pinned(c.rpc, c.public), pinned(d.rpc, d.public),
                 pinned(liar.rpc, helpers.key_of("e"))]
    s = await swarm(peers=addresses)
    for x in (c, d, liar):
        s.io.at[x.rpc] = x
    await trio.sleep(1.5)
    by_rpc = {p.rpc: p for p in s.fed.peers()}
    assert by_rpc[c.rpc].state == "alive"
    assert by_rpc[addresses[1]].state == "unreachable"
    assert "swarm 'other'" in by_rpc[addresses[1]].detail
    assert by_rpc[addresses[2]].state == "unreachable" and s.state("liar") is None


async def test_heartbeats_say_draining_and_goodbye_says_leaving(swarm, nursery, autojump_clock):
    s = await swarm()
    await trio.sleep(1.5)  # between two heartbeats (every 1 s), never at the same instant
    assert s.published.heartbeats[-1].load.state == "ready"
    s.ctx.drain()
    await trio.sleep(1.0)
    last = s.published.heartbeats[-1].load
    assert last.state == "draining" and last.workers_ready == 0 and last.max_queue == 8
    nursery.cancel_scope.cancel()
    await trio.lowlevel.checkpoint()
    assert s.published.heartbeats[-1].load.state == "leaving"


async def test_a_heartbeat_does_not_rename_a_peer_its_status_reply_does(swarm, autojump_clock):
    s = await swarm()
    b = card("b")
    s.fed.on_mdns(found(b))
    s.hear(b)
    renamed = msgspec.structs.replace(b, name="weight-3-node", workers=64)
    s.hear(renamed)  # a claim: asks b itself (its status over its own link) ...
    await trio.sleep(0.01)
    (info,) = s.fed.peers()
    assert info.name == "b"  # ... which still says "b"
    s.fed.peer_io.link = lambda peer: FakeLink(s.io, renamed)  # type: ignore[method-assign]
    s.hear(msgspec.structs.replace(renamed, hardware="x"))
    await trio.sleep(0.01)
    (info,) = s.fed.peers()
    assert info.name == "weight-3-node"  # the peer's own status reply is taken


async def test_a_restarted_peer_that_asks_our_status_is_probed_at_once(swarm, autojump_clock):
    s = await swarm(heartbeat_interval_ms=1000, liveness=3)
    b = card("b")
    s.fed.on_mdns(found(b))
    s.hear(b)
    await trio.sleep(40)  # DEAD, its probes backed off to many seconds apart
    assert s.state("b") is PeerState.DEAD
    s.io.at[b.rpc] = b  # b is back ...
    s.fed.hello(ID["b"], None, back=None)  # ... and pinged us at start (its StatusRequest named it)
    await trio.sleep(0.01)
    assert s.state("b") is PeerState.ALIVE


async def test_a_peer_is_planned_with_what_it_delivered_not_what_it_claims(swarm,
                                                                          autojump_clock):
    s = await swarm()
    greedy = msgspec.structs.replace(card("b"), workers=1000)
    s.fed.on_mdns(found(greedy))
    await trio.sleep(0.01)  # its status probe
    s.hear(greedy, Load(workers_ready=1000, idle_workers=1000, max_queue=8))
    (load,) = s.fed.peer_loads("m@1", None)
    assert (load.workers_ready, load.idle_workers) == (1, 1)  # nothing delivered yet
    s.io.votes["b"] = lambda msg: Vote(request_id=msg.request_id, node_id=ID["b"], name="b",
                                       candidates=[Candidate(text="42", finish_reason="stop")])
    async with trio.open_nursery() as n:  # three of ours in flight, all answered
        for _ in range(3):
            n.start_soon(s.fed.vote, ID["b"], ask(), 5.0)
    s.hear(greedy, Load(workers_ready=1000, idle_workers=1000, max_queue=8))
    (load,) = s.fed.peer_loads("m@1", None)
    assert load.workers_ready == 4  # three answered at once, so one more: not 1,000


async def test_records_with_our_own_id_cost_a_few_lines_not_one_each(swarm, autojump_clock,
                                                                      caplog):
    s = await swarm()
    me = s.ctx.card
    for port in range(3000):  # our id at 3,000 other addresses
        forged = msgspec.structs.replace(me, rpc=f"tcp://10.0.0.9:{port + 1}",
                                         pub=f"tcp://10.0.0.9:{port + 1}")
        s.fed.on_mdns(found(forged))
    duplicates = [e for e in s.ctx.stats.events if "DUPLICATE" in e.text]
    assert 1 <= len(duplicates) <= NOTES_PER_KIND
    assert sum("DUPLICATE" in r.getMessage() for r in caplog.records) <= NOTES_PER_KIND
    s.fed.on_mdns(found(card("b")))  # the events list still has room for the real swarm
    s.hear(card("b"))
    await trio.sleep(0.01)
    assert any("joined" in e.text for e in s.ctx.stats.events)


async def test_a_sustained_record_flood_queues_a_bounded_number_of_probes(swarm, autojump_clock):
    s = await swarm()

    async def never_answers(endpoint: str, name: str) -> tuple[Status, float]:
        await trio.sleep_forever()
        raise AssertionError

    s.fed.peer_io.status = never_answers  # type: ignore[method-assign]
    for i in range(3000):
        s.fed.on_mdns(found(card(f"f{i:05d}")))
        if i % 100 == 0:
            await trio.sleep(0.01)
    assert len(s.fed._busy) <= MAX_JOBS
    assert sum(p.last_heard is None for p in s.fed.table.peers.values()) <= MAX_UNHEARD


async def test_a_probe_that_fails_in_any_way_costs_that_probe_not_the_node(swarm,
                                                                            autojump_clock):
    s = await swarm()

    async def breaks(endpoint: str, name: str) -> tuple[Status, float]:
        raise trio.ClosedResourceError("socket is closed")  # what CI saw once

    s.fed.peer_io.status = breaks  # type: ignore[method-assign]
    s.fed.on_mdns(found(card("b")))
    await trio.sleep(2.0)  # a few heartbeats: the federation still runs
    assert s.ctx.drops.counts[("probes", "handler-error")] >= 1
    assert s.published.heartbeats[-1].seq >= 2


async def wait_for(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    await wait_until_async(predicate, timeout_s, interval_s=0.01)


async def test_a_node_that_contacts_us_is_probed_back_and_known(swarm, autojump_clock):
    s = await swarm()
    b = card("b", host="10.0.0.3")
    s.io.at[b.rpc] = b  # it answers where it says it is
    s.fed.hello(ID["b"], b, back=b"conn-b")
    await wait_for(lambda: s.state("b") is PeerState.ALIVE)
    (info,) = [p for p in s.fed.peers() if p.name == "b"]
    assert (info.source, info.reach, info.address) == ("contact", "direct", "10.0.0.3")
    assert s.router.sent == []  # reached directly: nothing asked over its link


async def test_a_node_that_accepts_no_connections_is_reached_over_its_own_link(
        swarm, autojump_clock):
    s = await swarm()
    c = card("c", host="10.0.0.4")  # nothing answers at c.rpc (its firewall)
    s.fed.hello(ID["c"], c, back=b"conn-c")
    await s.answer_back(b"conn-c", c)
    assert s.state("c") is PeerState.ALIVE and s.io.subscribed == []  # its PUB is out of reach
    (info,) = [p for p in s.fed.peers() if p.name == "c"]
    assert info.reach == "its link" and "own link" in info.detail
    # its heartbeats come over the same connection and keep it alive ...
    for _ in range(10):
        s.fed.from_link(b"conn-c", Heartbeat(card=c, seq=1, load=READY), c.public)
        await trio.sleep(0.5)
    assert s.state("c") is PeerState.ALIVE
    # ... and only its own: that connection cannot speak for another node
    with pytest.raises(RemoteProtocolError, match="another node than the one asked"):
        s.fed.from_link(b"conn-c", Heartbeat(card=card("b"), seq=1, load=READY), c.public)
    # a vote goes over its link
    with trio.move_on_after(1):
        await s.fed.vote(ID["c"], ask(), trio.current_time() + 1)
    assert any(i == b"conn-c" and isinstance(m, VoteRequest) for i, m in s.router.sent)
    # silent: DEAD, and the connection is let go
    await trio.sleep(10)
    assert s.state("c") is PeerState.DEAD and ID["c"] not in s.fed.backlinks.ident_of


async def test_a_link_cannot_take_the_id_of_a_node_alive_elsewhere(swarm, autojump_clock):
    s = await swarm()
    b = card("b", host="10.0.0.3")
    s.io.at[b.rpc] = b
    s.fed.on_mdns(found(b))
    await wait_for(lambda: s.state("b") is PeerState.ALIVE)
    s.hear(b)
    liar = card("b", host="10.0.0.66")  # "I am b, now at .66" (nothing answers there)
    s.fed.hello(ID["b"], liar, back=b"conn-liar")
    await trio.sleep(2)
    assert not any(i == b"conn-liar" for i, _ in s.router.sent)  # not even asked
    assert ID["b"] not in s.fed.backlinks.ident_of
    (info,) = [p for p in s.fed.peers() if p.name == "b"]
    assert info.address == "10.0.0.3" and info.reach == "direct"


async def test_a_link_that_answers_as_another_node_is_not_bound(swarm, autojump_clock):
    s = await swarm()
    s.fed.hello(ID["c"], card("c", host="10.0.0.4"), back=b"conn")
    await s.answer_back(b"conn", card("d", host="10.0.0.4"), public=helpers.key_of("c"))
    assert s.state("c") is None and s.state("d") is None and not s.fed.backlinks.ident_of
    assert s.ctx.drops.counts[("probes", "contact")] == 1


async def test_contacts_past_the_bound_cost_nothing_held(swarm, autojump_clock):
    s = await swarm()
    nodes = [card(f"n{i}", host="10.0.0.9") for i in range(MAX_BACKLINKS + 20)]
    for i, node in enumerate(nodes):
        s.fed.hello(node.node_id, node, back=f"conn{i}".encode())
    await wait_for(lambda: len(s.router.sent) >= len(nodes))  # each asked over its link
    for ident, msg in list(s.router.sent):
        i = int(ident[4:])
        assert isinstance(msg, StatusRequest)
        s.fed.from_link(ident, Status(request_id=msg.request_id, card=nodes[i], load=READY),
                        nodes[i].public)
    await trio.sleep(0.1)
    assert len(s.fed.backlinks.ident_of) == MAX_BACKLINKS
    assert sum(p.reach == "its link" for p in s.fed.peers()) == MAX_BACKLINKS
    assert s.ctx.drops.counts[("backlinks", "unasked-reply")] == 0


async def test_a_peer_with_a_longer_interval_is_not_dead_before_its_first_heartbeat(
        swarm, autojump_clock):
    s = await swarm(heartbeat_interval_ms=200)
    c = card("c", host="10.0.0.4")
    s.fed.hello(ID["c"], c, back=b"conn-c")
    await s.answer_back(b"conn-c", c, interval_ms=1000)  # its heartbeats come every 1 s
    await trio.sleep(0.9)  # past our own 0.2 s x 3, before its first heartbeat
    assert s.state("c") is PeerState.ALIVE
    s.fed.from_link(b"conn-c", Heartbeat(card=c, seq=1, load=READY, interval_ms=1000),
                    c.public)
    await trio.sleep(0.9)
    assert s.state("c") is PeerState.ALIVE


async def test_hellos_of_more_ids_than_remembered_cost_a_bounded_memory(swarm, autojump_clock):
    s = await swarm()
    for i in range(MAX_CONTACTS + 200):  # every one a node nobody answers for
        node = card(f"h{i}", host="10.0.0.9")
        s.fed.hello(node.node_id, node, back=None)
        if i % 100 == 0:
            await trio.sleep(0.01)
    assert len(s.fed.prober._greeted) == MAX_CONTACTS and len(s.fed.prober._contact_at) == MAX_CONTACTS
    assert all(p.state is not PeerState.ALIVE for p in s.fed.table.peers.values())
    assert s.fed.peer_loads("m@1", None) == []  # and the node plans as before


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)


def test_requests_asked_back_past_the_inbound_bound_are_refused_as_overloaded():
    send, receive = trio.open_memory_channel[Inbound](2)
    io = Connections(lambda hb: None, drops=FrameDrops(), creds=one_off(), probe_timeout_s=1.0,
                     inbound=send)
    link = RecordingLink()
    for i in range(5):
        io._asked("a", link, StatusRequest(request_id=f"r{i}"))  # type: ignore[arg-type]
    assert [item.msg.request_id for item in (receive.receive_nowait(),  # type: ignore[union-attr]
                                             receive.receive_nowait())] == ["r0", "r1"]
    assert [(m.request_id, m.kind) for m in link.sent] == [  # type: ignore[union-attr]
        ("r2", "overloaded"), ("r3", "overloaded"), ("r4", "overloaded")]
    assert io.asked_back() == {"a"}  # and it is sent our heartbeats over that link
