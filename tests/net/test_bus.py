"""net/bus.py: heartbeats over real PUB/SUB, vote links over real DEALER -> ROUTER (loopback)."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.testing
import zmq

from zswarm.core import codec
from zswarm.core.messages import (
    Error,
    Heartbeat,
    Load,
    NodeCard,
    Status,
    StatusRequest,
)
from zswarm.errors import Overloaded, PeerUnavailable
from zswarm.net.bus import PeerLink, Publisher, Subscriber
from zswarm.net.guard import DropCounter
from zswarm.net.security import one_off
from zswarm.net.zmq_trio import TrioSocket

ONE, TWO = one_off(), one_off()  # the credentials of the publishers below
CARD = NodeCard(node_id=ONE.node.node_id, name="one", model_id="m", workers=1,
                rpc="tcp://127.0.0.1:1", pub="tcp://127.0.0.1:2", public=ONE.node.public)
ME = one_off()  # the subscriber's and the link's


async def test_heartbeats_arrive_and_bad_frames_are_counted_not_delivered():
    got: list[Heartbeat] = []
    pub = Publisher("tcp://127.0.0.1:0", creds=ONE)
    raw = TrioSocket.open(zmq.PUB, role="server", creds=TWO)
    raw_endpoint = raw.bind("tcp://127.0.0.1:0")
    drops = DropCounter("heartbeats")
    sub = Subscriber(pub.endpoint, ONE.node.public, CARD.node_id, got.append, drops=drops,
                     creds=ME)
    # a second link, to a publisher that sends garbage and heartbeats in another's name
    bad = Subscriber(raw_endpoint, TWO.node.public, TWO.node.node_id, got.append, drops=drops,
                     creds=ME)
    forged = codec.encode(Heartbeat(card=CARD, seq=1, load=Load()))
    try:
        wrong_version = msgspec.msgpack.encode({"type": "heartbeat", "v": 99, "seq": 1})
        with trio.fail_after(10):
            seq = 0
            # PUB/SUB has no handshake (slow joiner): publish until both sides see traffic
            while not got or drops.counts.get("wrong-version", 0) < 1 \
                    or drops.counts.get("malformed", 0) < 1 \
                    or drops.counts.get("wrong-sender", 0) < 1:
                seq += 1
                pub.publish(Heartbeat(card=CARD, seq=seq, load=Load()))
                raw.send_multipart([b"\xc1garbage"])
                raw.send_multipart([wrong_version])
                raw.send_multipart([forged])
                await trio.sleep(0.01)
                sub.drain()  # what the node's Connections do a few times per interval
                bad.drain()
    finally:
        pub.close()
        raw.close()
        sub.close()
        bad.close()
    # only the publisher of n1 spoke for n1: the forged copies (seq 1) were dropped
    assert all(isinstance(hb, Heartbeat) and hb.card == CARD for hb in got)
    assert [hb.seq for hb in got] == sorted(hb.seq for hb in got)
    assert len(got) == len({hb.seq for hb in got})


async def _status_server(sock: TrioSocket, behaviour: str) -> None:
    while True:
        ident, data = await sock.recv_multipart()
        msg = codec.decode(data)
        if behaviour == "silent":
            continue
        if behaviour == "busy":
            reply = Error(request_id=msg.request_id, kind="overloaded", message="busy")
        else:
            sock.send_multipart([ident, b"\x00not msgpack"])  # dropped by the link
            reply = Status(request_id=msg.request_id, card=CARD, load=Load())
        sock.send_multipart([ident, codec.encode(reply)])


@pytest.mark.parametrize("behaviour", ["ok", "busy", "silent"])
async def test_peer_link_matches_replies_and_translates_errors(behaviour):
    with TrioSocket.open(zmq.ROUTER, role="server", creds=ONE) as router:
        endpoint = router.bind("tcp://127.0.0.1:0")
        link = PeerLink(endpoint, ONE.node.public, "one", creds=ME)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_status_server, router, behaviour)
            await nursery.start(link.serve)
            rids = [f"r{i}" for i in range(20)]
            results: dict[str, object] = {}

            async def one(rid: str) -> None:
                try:
                    results[rid] = await link.request(StatusRequest(request_id=rid), rid,
                                                          timeout_s=0.5)
                except (PeerUnavailable, Overloaded) as exc:
                    results[rid] = exc

            async with trio.open_nursery() as clients:
                for rid in rids:
                    clients.start_soon(one, rid)
            nursery.cancel_scope.cancel()
    if behaviour == "ok":
        assert all(isinstance(results[r], Status) and results[r].request_id == r for r in rids)
        assert link.drops.counts["malformed"] == 20
    elif behaviour == "busy":
        assert all(isinstance(results[r], Overloaded) for r in rids)
    else:
        assert all(isinstance(results[r], PeerUnavailable) for r in rids)


async def test_closing_a_link_fails_waiting_requests_at_once():
    with TrioSocket.open(zmq.ROUTER, role="server", creds=ONE) as router:
        endpoint = router.bind("tcp://127.0.0.1:0")
        link = PeerLink(endpoint, ONE.node.public, "one", creds=ME)
        caught: list[BaseException] = []
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(link.serve)

                async def waiter() -> None:
                    try:
                        await link.request(StatusRequest(request_id="r"), "r", timeout_s=60)
                    except PeerUnavailable as exc:
                        caught.append(exc)

                nursery.start_soon(waiter)
                await router.recv_multipart()  # the request reached the peer
                link.fail_all(PeerUnavailable("peer one died"))
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
    assert [str(e) for e in caught] == ["peer one died"]


def test_drop_counter_rate_limits_its_log(caplog):
    drops = DropCounter("x", every_s=3600)
    for _ in range(100):
        drops.drop("malformed", "bad")
    assert drops.total == 100
    assert sum("dropped" in r.message for r in caplog.records) == 1
