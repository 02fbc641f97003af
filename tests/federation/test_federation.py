"""Several nodes in one test process on loopback: real mDNS, heartbeats, votes, scripted engines.

The scripted engines' answers are known, so each strategy's choice across nodes is
asserted exactly.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket

import msgspec
import pytest
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from tests.helpers import id_of, key_of, question
from zswarm import client, views
from zswarm.core import codec
from zswarm.core.messages import ClientRequest, Error
from zswarm.net.mdns import SERVICE_TYPE
from zswarm.statedir import NodeInfo
from zswarm.testing.cluster import dealer, node_key_of, wait_until_async

from .conftest import alive, ask, peers_of, wait_peers

pytestmark = pytest.mark.timeout(120)


async def test_two_nodes_discover_each_other_vote_and_leave_with_goodbye(cluster):
    a = await cluster.start("a", ["42"], federation={"discovery": "mdns"})
    b = await cluster.start("b", ["41"], federation={"discovery": "mdns"})
    await wait_peers(a, alive("b"))
    await wait_peers(b, alive("a"))
    (peer,) = await peers_of(a)
    assert peer.node_id == b.node_id and peer.source == "mdns" and peer.rtt_ms is not None
    answer, report = await ask(a, 2, "best_of_n")
    assert sorted(c.node for c in report.candidates) == ["a", "b"]
    assert {c.text for c in report.candidates} == {"42", "41"}
    assert {p.node: p.outcome for p in report.participants} == {"a": "answered", "b": "answered"}
    cluster.stop("b")
    # "left" comes only from b's goodbye (its silence would make it "dead")
    await wait_peers(a, lambda t: t.get("b") == "left", timeout_s=5)
    answer, report = await ask(a, 2, "majority")
    assert [c.node for c in report.candidates] == ["a", "a"]  # b is gone: local only


async def three(cluster, specs: dict[str, dict], **common) -> list[NodeInfo]:
    """Start nodes a, b, c (answers and options per node) and wait until a sees b and c."""
    infos = [await cluster.start(name, **spec, **common) for name, spec in specs.items()]
    await wait_peers(infos[0], alive(*list(specs)[1:]))
    return infos


async def test_majority_follows_the_peers_and_their_weights(cluster):
    # weights are by node id: a2's key (its id) is made before it starts
    a2_id = node_key_of(cluster.directory, "a2").node_id
    weights = {"consensus": {"weights": {a2_id: 5.0}}}
    a, _, _ = await three(cluster, {"a": {"answers": ["41"]}, "b": {"answers": ["42"]},
                                    "c": {"answers": ["The answer is 42"]}})
    answer, report = await ask(a, 3, "majority")
    assert report.candidates[report.winner].node in ("b", "c") and "42" in answer
    assert {c.node for c in report.candidates} == {"a", "b", "c"}
    for name in ("a", "b", "c"):
        cluster.stop(name)
    # new names: the old nodes may still be saying goodbye while the new ones start
    a, _, _ = await three(cluster, {"a2": {"answers": ["41"], **weights},
                                    "b2": {"answers": ["42"]}, "c2": {"answers": ["42"]}})
    answer, report = await ask(a, 3, "majority")
    assert answer == "41"  # a2's weight 5 outvotes two peers of weight 1


async def test_best_of_n_takes_the_most_confident_node(cluster):
    # one "model" on every node (the same script): candidate i answers the i-th text with
    # its score, and every node scores a text alike when it checks a peer's claim
    same = {"answers": ["A", "B", "C"], "script": {"mean_logprob": [-2.0, -0.1, -1.0]}}
    a, _, _ = await three(cluster, {"a": same, "b": same, "c": same})
    answer, report = await ask(a, 3, "best_of_n")
    assert answer == "B" and report.candidates[report.winner].node in ("b", "c")  # a peer
    assert len(report.candidates) == 3


async def test_weighted_vote_picks_the_medoid_not_the_outlier(cluster):
    a, _, _ = await three(cluster, {"a": {"answers": ["Lyon, I think"]},
                                    "b": {"answers": ["Paris"]}, "c": {"answers": ["Paris"]}})
    answer, report = await ask(a, 3, "weighted_vote")
    assert answer == "Paris" and report.candidates[report.winner].node in ("b", "c")


async def test_first_valid_takes_the_fastest_node_and_cancels_the_rest(cluster):
    a, _, c = await three(cluster, {"a": {"answers": ["slow a"], "delay_ms": 3000},
                                    "b": {"answers": ["fast b"]},
                                    "c": {"answers": ["mid c"], "delay_ms": 3000}})
    answer, report = await ask(a, 3, "first_valid")
    assert answer == "fast b"
    outcomes = {p.node: p.outcome for p in report.participants}
    assert outcomes == {"a": "cancelled", "b": "answered", "c": "cancelled"}
    # said as what it is: an early stop, not a fault of the nodes not waited for
    assert {p.detail for p in report.participants if p.outcome == "cancelled"} == {
        "stopped early: the winner could not change"}
    assert "cancelled" not in report.note and "partial" not in report.note
    # the Cancel reached c: its only worker is free long before its 3 s answer was due
    with trio.fail_after(1.0):
        while True:
            status = await trio.to_thread.run_sync(client.status, c.rpc_endpoint)
            if status.load.idle_workers == 1:
                break
            await trio.sleep(0.01)


async def test_route_sends_the_request_to_an_idle_node(cluster):
    a, _, _ = await three(cluster, {"a": {"answers": ["from a"], "delay_ms": 2000},
                                    "b": {"answers": ["from b"]}, "c": {"answers": ["from c"]}})
    answer, report = await ask(a, 1, "route")
    assert answer == "from a"  # all idle: the tie goes to the node itself
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, a, 1, "first_valid")  # keeps a's only worker busy
        with trio.fail_after(5):
            while True:  # wait until a's worker is taken
                status = await trio.to_thread.run_sync(client.status, a.rpc_endpoint)
                if status.load.idle_workers == 0:
                    break
                await trio.sleep(0.01)
        answer, report = await ask(a, 1, "route")
    assert answer in ("from b", "from c") and report.strategy == "route"


async def test_slow_peer_times_out_and_the_report_says_so(cluster):
    a = await cluster.start("a", ["42"], federation={"discovery": "mdns", "deadline_ms": 500})
    await cluster.start("b", ["42"], delay_ms=30_000, federation={"discovery": "mdns"})
    await wait_peers(a, alive("b"))
    answer, report = await ask(a, 2, "majority")
    assert answer == "42" and [c.node for c in report.candidates] == ["a"]
    (slow,) = [p for p in report.participants if p.node == "b"]
    # given up at [federation] deadline_ms, not after b's 30 s
    assert slow.outcome == "timeout" and slow.detail == "no vote within 0.5 s"
    assert "b: timeout" in report.note


async def test_static_peers_without_mdns(cluster):
    b = await cluster.start("b", ["from b"], federation={"discovery": "static"})
    nobody = f"tcp://127.0.0.1:9?key={'ab' * 32}"
    a = await cluster.start("a", ["from a"],
                            federation={"discovery": "static", "peers": [b.rpc_endpoint,
                                                                          nobody]})
    table = await wait_peers(a, alive("b"))
    assert table["b"] == "alive"
    unreachable = [p for p in await peers_of(a) if p.state == "unreachable"]
    assert [(p.address, p.rpc) for p in unreachable] == [("tcp://127.0.0.1:9", nobody)]
    answer, report = await ask(a, 2, "best_of_n")
    assert {c.node for c in report.candidates} == {"a", "b"}


async def test_a_budget_over_rpc_spends_waves_on_both_nodes(cluster):
    words = "apple pear plum fig date grape melon mango".split()
    b = await cluster.start("b", ["kiwi", "lime"], federation={"discovery": "static"})
    a = await cluster.start("a", words, federation={"discovery": "static",
                                                    "peers": [b.rpc_endpoint]})
    await wait_peers(a, alive("b"))
    _, report = await ask(a, 16, "majority", adaptive=True)
    assert (report.budget, report.waves, report.stop) == (16, 2, "no agreement")
    # both nodes in both waves; the second wave's split follows the speeds the first
    # measured (runtime/speeds.py), so 2 + 2 then 2 + 2, or 3 + 1
    shares = {p.node: p.requested for p in report.participants}
    assert set(shares) == {"a", "b"} and sum(shares.values()) == 8 and min(shares.values()) >= 2


async def test_incompatible_protocol_version_is_listed_and_never_sent_votes(cluster):
    a = await cluster.start("a", ["42"], federation={"discovery": "mdns"})
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only))
    try:
        info = ServiceInfo(SERVICE_TYPE, f"future-{cluster.swarm}.{SERVICE_TYPE}",
                           addresses=[socket.inet_aton("127.0.0.1")], port=9,
                           properties={"id": id_of("future"), "pk": key_of("future"),
                                       "name": "future", "proto": "99",
                                       "model": "scripted", "workers": "1", "pub": "9",
                                       "rpc": "9", "swarm": cluster.swarm},
                           server="future.local.")
        await trio.to_thread.run_sync(
            lambda: zc.register_service(info, cooperating_responders=True))
        await wait_peers(a, lambda t: t.get("future") == "incompatible")
        answer, report = await ask(a, 2, "majority")
        assert [c.node for c in report.candidates] == ["a", "a"]
    finally:
        await trio.to_thread.run_sync(zc.close)


async def test_malformed_frames_get_errors_and_the_node_keeps_serving(cluster):
    a = await cluster.start("a", ["42"], federation={"discovery": "static"})
    with dealer(a.rpc_endpoint) as sock:
        future = msgspec.to_builtins(ClientRequest(request_id="x", request=question(n=1)))
        future["v"] = 7
        bad = {b"\xc1": "malformed", b"\x80": "malformed", b"{" * 10_000: "malformed",
               msgspec.msgpack.encode(future): "protocol version 7 is not supported"}
        for frame, why in bad.items():
            await sock.send([frame])
            with trio.fail_after(5):
                (reply,) = await sock.recv_multipart()
            err = codec.decode(reply)
            assert isinstance(err, Error) and err.kind == "protocol" and why in err.message
        await sock.send([b"a", b"b", b"c"])  # wrong frame count: dropped, no reply
    with dealer(a.rpc_endpoint) as big:  # over ZMQ_MAXMSGSIZE: zmq drops the connection
        await big.send([b"\x00" * (9 * 1024 * 1024)])
    answer, _ = await ask(a, 1, "first_valid")
    assert answer == "42"


async def test_duplicate_node_id_is_logged_loudly(cluster, caplog):
    await cluster.start("a", ["42"], federation={"discovery": "mdns"})
    twin_state = cluster.directory / "twin" / "state"
    twin_state.mkdir(parents=True)  # a copied state dir: the same key, so the same id
    shutil.copy(cluster.directory / "a" / "state" / "node.key", twin_state / "node.key")
    with caplog.at_level(logging.ERROR, logger="zswarm"):
        await cluster.start("twin", ["42"], federation={"discovery": "mdns"})
        await wait_until_async(lambda: "DUPLICATE NODE ID" in caplog.text, 10,
                               what="duplicate id logged")


async def test_many_quick_rounds_with_stragglers_keep_the_node_serving(cluster):
    # zero-time engines: peers' votes and local candidates race the early stop
    a = await cluster.start("a", ["42"], federation={"discovery": "mdns"})
    await cluster.start("b", ["42"], federation={"discovery": "mdns"})
    await cluster.start("c", ["41"], federation={"discovery": "mdns"})
    await wait_peers(a, alive("b", "c"))
    with client.NodeClient(a.rpc_endpoint) as node:
        for strategy in ("first_valid", "majority", "weighted_vote", "best_of_n"):
            for _ in range(25):
                reply = await trio.to_thread.run_sync(
                    lambda s=strategy: node.ask(question(n=3), strategy=s, deadline_ms=5000))
                report = reply.report
                assert reply.answer == report.candidates[report.winner].text
                assert sum(p.received for p in report.participants) >= len(report.candidates)


async def test_two_nodes_that_share_a_name_are_told_apart_in_every_report(cluster):
    # a shelf of machines with one hostname: names are for people, ids for machines
    a = await cluster.start("a", ["42"], node={"name": "vm"}, federation={"discovery": "mdns"})
    b = await cluster.start("b", ["42"], node={"name": "vm"}, federation={"discovery": "mdns"})
    await wait_peers(a, lambda t: t.get("vm") == "alive", 20)
    _, report = await ask(a, 2, "best_of_n")
    shown = {a.node_id: f"vm ({a.node_id[:6]})", b.node_id: f"vm ({b.node_id[:6]})"}
    assert {(c.node_id, c.node) for c in report.candidates} <= set(shown.items())
    assert {(p.node_id, p.node) for p in report.participants} == set(shown.items())
    rendered = json.loads(views.as_json("42", report))
    assert {c["node_id"] for c in rendered["candidates"]} <= set(shown)
