"""Peer exchange (runtime/exchange.py): one address is enough to join, and a member that
lies about the others costs probes, never a peer. In-process nodes on loopback."""

from __future__ import annotations

import pytest

from tests.helpers import card, id_of, key_of
from zswarm.core.ids import unpinned
from zswarm.core.messages import Load, PeerInfo, PeersReply
from zswarm.runtime import exchange
from zswarm.testing.cluster import wait_until_async

from .conftest import alive, ask, peers_of, wait_peers
from .fakes import FakePeer

pytestmark = pytest.mark.timeout(120)


def info(node: str, rpc: str, state: str = "alive", name: str = "x",
         public: str | None = None) -> PeerInfo:
    """A member's entry for the test node ``node`` (its id and key: tests/helpers.py), or
    for the node of key ``public``, whatever id ``node`` is."""
    node_id = node if public is not None else id_of(node)
    return PeerInfo(node_id=node_id, name=name, address="", state=state, model_id="m",
                    load=Load(), last_seen_s=0.1, rtt_ms=0.2, source="mdns", rpc=rpc,
                    public=public if public is not None else key_of(node))


def key(node) -> str:
    """A running node's key, from its address."""
    return unpinned(node.rpc_endpoint)[1]


async def test_one_address_is_enough_to_see_the_whole_swarm(cluster):
    members = [await cluster.start(name, ["42"]) for name in ("b", "c", "d", "e")]
    for m in members:  # the members found each other (mDNS on loopback)
        await wait_peers(m, lambda t: sum(s == "alive" for s in t.values()) >= 3, 20)
    a = await cluster.start("a", ["42"], federation={
        "discovery": "static", "peers": [members[0].rpc_endpoint]})
    table = await wait_peers(a, alive("b", "c", "d", "e"), 20)
    sources = {p.name: p.source for p in await peers_of(a)}
    assert sources == {"b": "static", "c": "exchange", "d": "exchange", "e": "exchange"}, table
    _, report = await ask(a, 5, "majority")  # votes go to the learned members too
    assert {c.node for c in report.candidates} & {"c", "d", "e"}, report


async def test_a_lying_member_costs_probes_never_a_peer(cluster, nursery):
    c = await cluster.start("c", ["42"])
    d = await cluster.start("d", ["42"], federation={"discovery": "static"})
    fake = FakePeer(cluster.swarm, "silent")
    fake.peer_list = (
        [info("c" * 4, "tcp://127.0.0.1:9")]  # nobody there
        # d's id and key at c's endpoint: c cannot answer with d's key
        + [info(d.node_id, unpinned(c.rpc_endpoint)[0], name="d", public=key(d))]
        # an id that is not its key's
        + [info(c.node_id, "tcp://127.0.0.1:9", name="c?", public=key(d))]
        + [info("dead" + str(i), "tcp://127.0.0.1:9", state="dead") for i in range(50)]
        + [info("bad id!", "tcp://127.0.0.1:1"), info("x" * 80, "tcp://127.0.0.1:1"),
           info("noport", "tcp://127.0.0.1"), info("host", "tcp://example.com:80"),
           info("udp", "udp://127.0.0.1:5")]
        + [info(f"flood{i}", f"tcp://127.0.0.1:{10 + i}") for i in range(500)]
        + [info(c.node_id, unpinned(c.rpc_endpoint)[0], name="c", public=key(c))]  # the
        # one true entry, last
    )
    nursery.start_soon(fake.serve)
    try:
        a = await cluster.start("a", ["42"], federation={
            "discovery": "static", "peers": [fake.address]})
        await wait_peers(a, alive("fake"), 20)
        await wait_until_asked(fake)
        names = {p.name: (p.state, p.source) for p in await peers_of(a)}
        # the flood took the first PER_REPLY places; none answered as named, none is a peer
        assert set(names) <= {"fake", "c"} and "d" not in names, names
        assert len(await peers_of(a)) <= 2
        answer, _ = await ask(a, 1, "first_valid")
        assert answer == "42"
    finally:
        fake.close()


async def wait_until_asked(fake: FakePeer, times: int = 1) -> None:
    await wait_until_async(lambda: fake.peers_asked >= times, 20, what="asked for peers")


def test_what_is_worth_probing_is_checked_and_bounded():
    me, member = card("me", host="127.0.0.1"), card("member", host="127.0.0.1")
    checks = [
        info("me", "tcp://127.0.0.1:5"), info("member", "tcp://127.0.0.1:5"),
        info("known", "tcp://127.0.0.1:5"), info("ok", "tcp://10.0.0.7:17617"),
        info("ok", "tcp://10.0.0.8:17617"),  # the same id twice: one of them only
        info("dead", "tcp://10.0.0.9:1", state="dead"),
        info("bad/id", "tcp://10.0.0.9:1", public=key_of("bad")),
        info(id_of("forged"), "tcp://10.0.0.9:1", public=key_of("other")),  # not its key's
        info("nokey", "tcp://10.0.0.9:1", public=""),
        info("nohost", "tcp://:1"), info("name", "tcp://host.lan:1")]
    out = exchange.worth_probing(PeersReply(request_id="r", node=member, peers=checks),
                                 me=me, known={id_of("known")}, room=100)
    assert [x.node_id for x in out] == [id_of("ok")]
    assert out[0] in (
        exchange.Learned(id_of("ok"), "10.0.0.7", "tcp://10.0.0.7:17617", key_of("ok")),
        exchange.Learned(id_of("ok"), "10.0.0.8", "tcp://10.0.0.8:17617", key_of("ok")))
    many = PeersReply(request_id="r", node=member, peers=[
        *[info(f"n{i}", f"tcp://10.1.0.{i}:1") for i in range(40)], *checks])
    assert len(exchange.worth_probing(many, me=me, known=set(), room=100)) == exchange.PER_REPLY
    assert len(exchange.worth_probing(many, me=me, known=set(), room=3)) == 3
    assert exchange.worth_probing(many, me=me, known=set(), room=0) == []
    # junk listed first does not hide the rest: over a few asks, every entry comes up
    seen = set()
    for _ in range(30):
        seen |= {x.node_id for x in exchange.worth_probing(many, me=me, known=set(), room=16)}
    assert seen == {id_of(f"n{i}") for i in range(40)} | {id_of("ok"), id_of("known")}


def test_junk_is_probed_once_per_retry_window():
    tried = exchange.Tried()
    tried.add("junk", now=0.0)
    assert tried.recent("junk", 10.0) and not tried.recent("junk", exchange.RETRY_S + 1)
    for i in range(exchange.MAX_TRIED + 5):
        tried.add(f"n{i}", now=1.0)
    kept = tried.recent_ids(1.0)
    assert "junk" not in kept and "n0" not in kept and f"n{exchange.MAX_TRIED}" in kept
    assert len(tried) == exchange.MAX_TRIED


def test_nodes_that_started_together_ask_different_peers():
    """Every node asks at the same beats; each from a place of its own in the list, so a
    swarm started at once does not send all its exchanges to one peer."""
    ids = [f"{i:016x}" for i in range(64)]
    asked = [exchange.partner_at(5, [x for x in ids if x != me], me) for me in ids]
    assert None not in asked and len(set(asked)) >= 16
    later = [exchange.partner_at(15, [x for x in ids if x != me], me) for me in ids]
    assert later != asked  # and each node goes round the list in turn
