"""A hostile LAN against in-process nodes on loopback: real sockets, real mDNS, scripted engines.

Each test sends what an attacker or a broken peer could send and checks that it
costs that message (an error reply, a counter) and never the node.
"""

from __future__ import annotations

import logging
import socket

import httpx
import msgspec
import pytest
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from tests.helpers import id_of, key_of, question
from zswarm import client
from zswarm.core import codec
from zswarm.core.ids import unpinned
from zswarm.core.messages import (
    PROTOCOL_VERSION,
    ClientReply,
    ClientRequest,
    Error,
    Heartbeat,
    Load,
    VoteRequest,
)
from zswarm.errors import PeerUnavailable
from zswarm.net.mdns import SERVICE_TYPE
from zswarm.net.security import write_key_file
from zswarm.testing.cluster import address_of, dealer, free_port, wait_until_async

from .conftest import alive, ask, peers_of, wait_peers
from .fakes import FakePeer

pytestmark = pytest.mark.timeout(120)

NASTY_FRAMES = [
    bytes.fromhex("81a474797065a2dfdf"),  # a map whose string is not UTF-8 (killed nodes once)
    b"\x91" * 100_000 + b"\xc0",  # nesting 100,000 deep
    b"\xdb\xff\xff\xff\xff",  # a string that claims 4 GiB
    b"\xdd\xff\xff\xff\xff",  # an array that claims 4 billion items
    msgspec.msgpack.encode({"type": "client_request", "v": PROTOCOL_VERSION, "request_id": "r",
                            "request": {"messages": [{"role": "user", "content": 5}]}}),
    msgspec.msgpack.encode({"type": "vote", "v": PROTOCOL_VERSION, "request_id": "r",
                            "node_id": "x",
                            "name": "x", "candidates": [{"text": "a", "finish_reason": "stop",
                                                         "mean_logprob": float("nan")}]}),
    b"",
]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(info) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{info.http_port}/metrics")).text


async def test_any_frame_costs_that_frame_only(cluster):
    a = await cluster.start("a", ["42"], federation={"discovery": "static"})
    with dealer(a.rpc_endpoint) as sock:
        for frame in NASTY_FRAMES:
            await sock.send([frame])
            with trio.fail_after(5):
                (reply,) = await sock.recv_multipart()
            err = codec.decode(reply)
            assert isinstance(err, Error) and err.kind == "protocol", (frame[:20], err)
    answer, _ = await ask(a, 1, "first_valid")
    assert answer == "42"
    text = await scrape(a)
    assert metric(text, "zswarm_frames_dropped_total", socket="rpc", reason="malformed") \
        == len(NASTY_FRAMES)


async def test_request_ids_are_scoped_per_sender_and_duplicates_refused(cluster):
    a = await cluster.start("a", ["42"], delay_ms=300, federation={"discovery": "static"})
    msg = codec.encode(ClientRequest(request_id="same", request=question(n=1)))
    with dealer(a.rpc_endpoint) as one, dealer(a.rpc_endpoint) as two:
        await one.send([msg])
        await one.send([msg])  # again, while the first is in flight: refused
        await two.send([msg])  # the same id from another sender: its own request
        replies = []
        with trio.fail_after(10):
            for sock, count in ((one, 2), (two, 1)):
                for _ in range(count):
                    (raw,) = await sock.recv_multipart()
                    replies.append((sock is one, codec.decode(raw)))
    kinds = sorted((first, type(r).__name__, getattr(r, "kind", "")) for first, r in replies)
    assert kinds == [(False, "ClientReply", ""), (True, "ClientReply", ""),
                     (True, "Error", "duplicate_request")]
    assert all(r.request_id == "same" for _, r in replies)


async def test_a_vote_for_a_model_the_node_does_not_serve_is_refused(cluster):
    """Candidates are labelled with the model the asker expected: a node serving another
    (restarted with another file meanwhile) refuses instead of answering with it."""
    a = await cluster.start("a", ["42"], model_id="m@1", federation={"discovery": "static"})
    with dealer(a.rpc_endpoint) as sock:
        for rid, model in (("wrong", "m@2"), ("right", "m@1"), ("any", "")):
            await sock.send([codec.encode(VoteRequest(
                request_id=rid, request=question(n=1), deadline_ms=5000, model_id=model))])
        with trio.fail_after(10):
            replies = {}
            for _ in range(3):
                reply = codec.decode((await sock.recv_multipart())[0])
                replies[reply.request_id] = reply
    assert isinstance(replies["wrong"], Error) and "does not serve m@2 (it serves m@1)" in \
        replies["wrong"].message
    assert [c.text for c in replies["right"].candidates] == ["42"]
    assert [c.text for c in replies["any"].candidates] == ["42"]


async def test_bad_mdns_records_cost_the_record_and_real_peers_still_join(cluster):
    a = await cluster.start("a", ["42"], federation={"discovery": "mdns"})
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only))
    good = {"id": "b" * 16, "name": "x", "proto": "1", "model": "scripted", "workers": "1",
            "pub": "9", "rpc": "9", "swarm": cluster.swarm}
    bad = [{"pub": "-1"}, {"rpc": "70000"}, {"id": ""}, {"id": "a b"}, {"workers": "-3"},
           {"rpc": "9; rm -rf"}, {"name": "\udcff"}, {"pub": "ipc:///tmp/x"}, {"http": "x"}]
    try:
        for i, change in enumerate(bad):
            props = {k: v.encode("utf-8", "surrogateescape") for k, v in
                     {**good, "id": f"{i:016x}", **change}.items()}
            info = ServiceInfo(SERVICE_TYPE, f"bad{i}-{cluster.swarm}.{SERVICE_TYPE}",
                               addresses=[socket.inet_aton("127.0.0.1")], port=9,
                               properties=props, server=f"bad{i}.local.")
            await trio.to_thread.run_sync(
                lambda info=info: zc.register_service(info, cooperating_responders=True))
        await wait_until_async(lambda: True, 0.1)
        await cluster.start("b", ["41"], federation={"discovery": "mdns"})
        table = await wait_peers(a, alive("b"))
        # well-formed records (port 9: never alive); a name that is not UTF-8 is replaced
        assert set(table) <= {"b", "x", "\ufffd"}
        text = await scrape(a)
        dropped = sum(metric(text, "zswarm_frames_dropped_total", socket="mdns", reason=r)
                      for r in ("bad-record", "bad-endpoint"))
        assert dropped >= 6
        answer, report = await ask(a, 2, "best_of_n")
        assert {c.node for c in report.candidates} == {"a", "b"}
    finally:
        await trio.to_thread.run_sync(zc.close)


@pytest.mark.parametrize("vote", ["too_many", "nan", "silent", "bloat", "huge"])
async def test_a_peer_that_breaks_the_rules_is_demoted_and_not_asked_again(cluster, nursery,
                                                                           vote):
    fake = FakePeer(cluster.swarm, vote)
    nursery.start_soon(fake.serve)
    try:
        a = await cluster.start("a", ["42"], federation={
            "discovery": "static", "peers": [fake.address], "deadline_ms": 1000})
        await wait_peers(a, alive("fake"))
        answer, report = await ask(a, 2, "majority")
        assert answer == "42" and {c.node for c in report.candidates} == {"a"}
        (fake_part,) = [p for p in report.participants if p.node == "fake"]
        assert fake_part.outcome in ("failed", "timeout") and fake_part.received == 0
        (info,) = [p for p in await peers_of(a) if p.name == "fake"]
        assert info.detail.startswith("demoted"), info.detail
        asked = fake.votes_asked
        answer, report = await ask(a, 2, "majority")
        assert [p.node for p in report.participants] == ["a"] and fake.votes_asked == asked
    finally:
        fake.close()


async def test_a_heartbeat_cannot_move_a_peer_introduce_one_or_claim_absurd_load(
        cluster, nursery):
    fake = FakePeer(cluster.swarm, "silent")
    nursery.start_soon(fake.serve)
    try:
        c = await cluster.start("c", ["40"], federation={
            "discovery": "static", "peers": [fake.address]})
        await wait_peers(c, alive("fake"))
        moved = msgspec.structs.replace(fake.card, rpc="tcp://127.0.0.1:1",
                                        pub="tcp://127.0.0.1:2")
        stranger = msgspec.structs.replace(fake.card, node_id="b" * 16, name="stranger")
        greedy = Load(workers_ready=1000, idle_workers=1000)
        for seq in range(1000, 1020):
            for card in (moved, stranger):
                await fake.pub.send([codec.encode(Heartbeat(card=card, seq=seq, load=greedy))])
            await trio.sleep(0.01)
        peers = {p.name: p for p in await peers_of(c)}
        assert set(peers) == {"fake"}
        assert peers["fake"].rpc == fake.rpc_endpoint
        assert peers["fake"].load.idle_workers <= 1
    finally:
        fake.close()


async def test_only_holders_of_the_swarm_key_get_in(cluster, tmp_path):
    key_file = tmp_path / "swarm.key"
    key = write_key_file(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    keyed = {"security": {"swarm_key_file": str(key_file)}, "federation": {"discovery": "mdns"}}
    a = await cluster.start("a", ["42"], **keyed)
    await cluster.start("b", ["41"], **keyed)
    c = await cluster.start("c", ["40"], federation={"discovery": "mdns"})  # no key
    await wait_peers(a, alive("b"), key=key)
    answer, report = await trio.to_thread.run_sync(lambda: _ask_keyed(a.rpc_endpoint, key))
    assert {x.node for x in report.candidates} == {"a", "b"}
    assert {p.name for p in await peers_of(a, key)} == {"b"}  # c: another (no) key
    assert {p.name for p in await peers_of(c)} == set()  # the open node sees no keyed peer
    with pytest.raises(PeerUnavailable):  # no key: not even an error comes back
        await trio.to_thread.run_sync(
            lambda: client.status(a.rpc_endpoint, timeout_s=1.0))
    other = write_key_file(tmp_path / "other.key")
    with pytest.raises(PeerUnavailable):
        await trio.to_thread.run_sync(
            lambda: client.status(a.rpc_endpoint, timeout_s=1.0, key=other))
    status = await trio.to_thread.run_sync(lambda: client.status(a.rpc_endpoint, key=key))
    assert status.card.key == key.fingerprint


async def test_the_start_up_report_names_a_key_mismatch(cluster, tmp_path, caplog):
    """A node whose neighbour has another key (or none) is told that, not only 'no node of
    the swarm answered'."""
    caplog.set_level(logging.INFO, logger="zswarm.node")
    keyed = {"security": {"swarm_key_file": str(tmp_path / "swarm.key")},
             "federation": {"discovery": "mdns"}}
    write_key_file(tmp_path / "swarm.key")
    await cluster.start("open", ["40"], federation={"discovery": "mdns"})
    await cluster.start("keyed", ["41"], **keyed)

    def reported() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if "every member needs the same" in r.getMessage()]

    await wait_until_async(lambda: len(reported()) >= 2, 15, what="both reports")
    said = reported()
    assert any(line.strip().startswith("keyed at ") and "has no swarm key" not in line
               and "uses a swarm key and this node has none" in line for line in said)
    assert any(line.strip().startswith("open at ") and "has no swarm key" in line
               for line in said), said


async def test_a_static_member_of_another_key_is_said_to_be_one(cluster, tmp_path):
    """With multicast gone, a member of another key is only an endpoint that never
    answers: the peer list says something listens there and a key may differ."""
    write_key_file(tmp_path / "swarm.key")
    keyed = await cluster.start("keyed", ["41"], security={
        "swarm_key_file": str(tmp_path / "swarm.key")}, federation={"discovery": "static"})
    a = await cluster.start("a", ["40"], federation={
        "discovery": "static", "peers": [keyed.rpc_endpoint,
                                         f"tcp://127.0.0.1:{free_port()}?key={'ab' * 32}"]})

    async def details() -> dict[str, str]:
        return {p.address: p.detail for p in await peers_of(a) if p.state == "unreachable"}

    async def told() -> dict[str, str]:  # both endpoints probed and said why
        with trio.fail_after(20):
            while True:
                found = await details()
                if len(found) == 2 and all(d.startswith("no answer") for d in found.values()):
                    return found
                await trio.sleep(0.05)

    found = await told()
    there = unpinned(keyed.rpc_endpoint)[0]
    assert "another swarm key (this node has none)" in found[there]
    closed = next(d for e, d in found.items() if e != there)
    assert "nothing listens there" in closed


def _ask_keyed(endpoint: str, key) -> tuple[str, object]:
    reply = client.ask(endpoint, question(n=2), strategy="best_of_n", deadline_ms=20_000, key=key)
    assert isinstance(reply, ClientReply)
    return reply.answer, reply.report



async def test_a_static_peer_that_left_is_probed_again_and_returns(cluster):
    port = free_port()
    static_b = {"federation": {"discovery": "static"}, "ports": {"rpc": port}}
    await cluster.start("b", ["41"], **static_b)
    b = address_of(cluster.directory, "b", f"tcp://127.0.0.1:{port}")  # (its key is made)
    a = await cluster.start("a", ["42"], federation={"discovery": "static", "peers": [b]})
    await wait_peers(a, alive("b"))
    cluster.stop("b")  # a clean stop: b says goodbye
    await wait_peers(a, lambda t: t.get("b") == "left")
    with trio.fail_after(10):  # the goodbye can arrive before b has closed its sockets
        await cluster.ended["b"].wait()
    await cluster.start("b", ["41"], **static_b)
    await wait_peers(a, alive("b"))
    answer, report = await ask(a, 2, "best_of_n")
    assert {c.node for c in report.candidates} == {"a", "b"}, report.participants


async def test_a_bogus_record_costs_a_probe_now_and_then_not_a_reconnect_storm(cluster):
    """A record pointing at some host:port: once DEAD, nothing keeps reconnecting there."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    accepted = 0

    async def count_connections() -> None:
        nonlocal accepted
        while True:
            conn, _ = await listener.accept()
            accepted += 1
            conn.close()

    a = await cluster.start("a", ["42"], federation={"discovery": "mdns"})
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_connections)
            info = ServiceInfo(SERVICE_TYPE, f"bogus-{cluster.swarm}.{SERVICE_TYPE}",
                               addresses=[socket.inet_aton("127.0.0.1")], port=port,
                               properties={"id": id_of("bogus"), "pk": key_of("bogus"),
                                           "name": "bogus", "proto": str(PROTOCOL_VERSION),
                                           "model": "scripted", "workers": "1",
                                           "pub": str(port), "rpc": str(port),
                                           "swarm": cluster.swarm},
                               server="bogus.local.")
            await trio.to_thread.run_sync(
                lambda: zc.register_service(info, cooperating_responders=True))
            await wait_peers(a, lambda t: t.get("bogus") == "dead")
            before = accepted
            await trio.sleep(6)  # a measurement window, not a synchronisation
            # one connection per probe, and probes back off (0.2, 0.4, 0.8, 1.6, 3.2 s):
            # ZeroMQ's reconnects of a kept subscription would come every 0.1-0.5 s
            assert accepted - before <= 6, accepted - before
            nursery.cancel_scope.cancel()
    finally:
        listener.close()
        await trio.to_thread.run_sync(zc.close)


@pytest.mark.parametrize("strategy", ["confidence", "best_of_n"])
async def test_a_lying_member_cannot_outweigh_two_honest_nodes(cluster, nursery, strategy):
    """The liar claims log-probability 0 (certain) for a wrong answer, which outweighs the
    two honest candidates as claimed (confidence at tau 2: 1.0 against 2 x e^-1): the
    asker re-scores the claim with its own model (same model id), which finds it unlikely
    (-5: this model would not have said it)."""
    fake = FakePeer(cluster.swarm, "liar")
    nursery.start_soon(fake.serve)
    try:
        honest = {"answers": ["42"], "script": {"mean_logprob": [-2.0]}}
        fed = {"discovery": "both", "peers": [fake.address]}
        a = await cluster.start("a", federation=fed, **honest)
        await cluster.start("b", federation={"discovery": "mdns"}, **honest)
        await wait_peers(a, alive("b", "fake"))
        answer, report = await ask(a, 3, strategy)
        assert {c.node for c in report.candidates} == {"a", "b", "fake"}
        assert answer == "42"
        (lie,) = [c for c in report.candidates if c.node == "fake"]
        assert lie.mean_logprob is not None and lie.mean_logprob < -2.0  # a's figure
        assert "checked by this node's model" in report.note
    finally:
        fake.close()
