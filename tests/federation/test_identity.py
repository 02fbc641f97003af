"""Ids that are keys: a member that claims another's id gets neither its weight nor its
traffic, whichever way it lies, in an open swarm and in a keyed one. Real in-process nodes,
real ZeroMQ with CURVE, and a lying member that holds a key of its own (fakes.py)."""

from __future__ import annotations

import httpx
import msgspec
import pytest
import trio

from zswarm import client
from zswarm.core import codec
from zswarm.core.messages import StatusRequest
from zswarm.net.security import SwarmKey, http_token, write_key_file
from zswarm.testing.cluster import dealer

from .conftest import alive, ask, peers_of, wait_peers
from .fakes import FakePeer

pytestmark = pytest.mark.timeout(120)


async def dropped(info, socket: str, reason: str, key: SwarmKey | None) -> float:
    """How many frames the node dropped on ``socket`` for ``reason`` (its /metrics)."""
    headers = {"Authorization": f"Bearer {http_token(key)}"} if key is not None else {}
    async with httpx.AsyncClient(headers=headers) as http:
        text = (await http.get(f"http://127.0.0.1:{info.http_port}/metrics")).text
    want = f'zswarm_frames_dropped_total{{reason="{reason}",socket="{socket}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(want))


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
async def test_a_member_that_claims_another_members_id_gets_neither_its_weight_nor_its_traffic(
        cluster, nursery, tmp_path, keyed):
    key = write_key_file(tmp_path / "swarm.key") if keyed else None
    security = {"security": {"swarm_key_file": str(tmp_path / "swarm.key")}} if keyed else {}
    liar = FakePeer(cluster.swarm, "liar", key=key)  # votes "41", claimed certain
    nursery.start_soon(liar.serve)
    try:
        b = await cluster.start("b", ["42"], federation={"discovery": "static"}, **security)
        # the hidden probe of the issue: a weighs b 3 by id, and knows b and the liar
        a = await cluster.start("a", ["41"], consensus={"weights": {b.node_id: 3.0}},
                                federation={"discovery": "static",
                                            "peers": [b.rpc_endpoint, liar.address]},
                                **security)
        await wait_peers(a, alive("b", "fake"), 20, key=key)
        real = (await trio.to_thread.run_sync(
            lambda: client.status(b.rpc_endpoint, key=key))).card

        # the liar says it is b, at its own endpoints: in its status answers and its
        # heartbeats (over links pinned to its own key), and in a hello over a link of its
        # own to a (whose key a's ROUTER sees)
        lie = msgspec.structs.replace(real, rpc=liar.card.rpc, pub=liar.card.pub)
        liar.card = lie
        with dealer(a.rpc_endpoint, key) as link:
            await link.send([codec.encode(StatusRequest(request_id="hello", sender=b.node_id,
                                                        card=lie, standing=True))])

            async def refused() -> bool:
                return (await dropped(a, "heartbeats", "wrong-sender", key) >= 3
                        and await dropped(a, "rpc", "wrong-key", key) >= 1
                        and await dropped(a, "probes", "wrong-key", key) >= 1)

            with trio.fail_after(20):  # its heartbeats, its hello, its status answers
                while True:
                    if await refused():
                        break
                    await trio.sleep(0.1)

        peers = {p.node_id: p for p in await peers_of(a, key)}
        assert peers[b.node_id].rpc == real.rpc and peers[b.node_id].state == "alive"
        assert peers[liar.creds.node.node_id].name == "fake"  # its own id, still
        answer, report = await ask(a, 3, "majority", key=key)
        by_id = {c.node_id: c.text for c in report.candidates}
        assert by_id.get(b.node_id) == "42" and answer == "42", report  # b's weight is b's

        # b dies: its id is still not the liar's to take
        cluster.stop("b")
        await wait_peers(a, lambda t: t.get("b") in ("left", "dead"), 20, key=key)
        for _ in range(10):
            peers = {p.node_id: p for p in await peers_of(a, key)}
            assert peers[b.node_id].rpc == real.rpc and peers[b.node_id].state != "alive"
            await trio.sleep(0.2)
    finally:
        liar.close()
