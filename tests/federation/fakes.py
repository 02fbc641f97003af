"""A fake member on loopback: honest status and heartbeats, votes as a test tells it.

Shared by the hostile-peer tests (test_hostile.py) and the peer-exchange tests
(test_exchange.py).
"""

from __future__ import annotations

import msgspec
import trio
import zmq

from zswarm.core import codec
from zswarm.core.ids import pinned
from zswarm.core.messages import (
    Candidate,
    Heartbeat,
    Load,
    NodeCard,
    PeerInfo,
    PeersReply,
    PeersRequest,
    Status,
    StatusRequest,
    TokenLogprob,
    Vote,
    VoteRequest,
)
from zswarm.net.security import SwarmKey, one_off
from zswarm.net.zmq_trio import TrioSocket


class FakePeer:
    """A peer that answers Status and heartbeats honestly and votes as told."""

    def __init__(self, swarm: str, vote: str, key: SwarmKey | None = None) -> None:
        self.creds = one_off(key)  # a key of its own: its id is its key's
        self.key = key
        self.rpc = TrioSocket.open(zmq.ROUTER, role="server", creds=self.creds)
        self.rpc_endpoint = self.rpc.bind("tcp://127.0.0.1:0")
        self.pub = TrioSocket.open(zmq.PUB, role="server", creds=self.creds)
        self.pub_endpoint = self.pub.bind("tcp://127.0.0.1:0")
        self.card = NodeCard(node_id=self.creds.node.node_id, name="fake",
                             model_id="scripted", workers=1, rpc=self.rpc_endpoint,
                             pub=self.pub_endpoint, swarm=swarm, public=self.creds.node.public,
                             key=key.fingerprint if key is not None else "")
        #: what --node and [federation] peers take
        self.address = pinned(self.rpc_endpoint, self.creds.node.public)
        self.vote = vote
        self.votes_asked = 0
        #: what it answers to PeersRequest (peer exchange)
        self.peer_list: list[PeerInfo] = []
        self.peers_asked = 0
        self.scope = trio.CancelScope()

    async def serve(self) -> None:
        with self.scope:
            try:
                await self._serve()
            finally:
                self.rpc.close()
                self.pub.close()

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._beat)
            while True:
                ident, raw = await self.rpc.recv_multipart()
                msg = codec.decode(raw)
                if isinstance(msg, StatusRequest):
                    reply = codec.encode(Status(request_id=msg.request_id, card=self.card,
                                                load=Load(workers_ready=1, idle_workers=1)))
                elif isinstance(msg, VoteRequest):
                    self.votes_asked += 1
                    reply = self._vote(msg)
                elif isinstance(msg, PeersRequest):
                    self.peers_asked += 1
                    reply = codec.encode(PeersReply(request_id=msg.request_id, node=self.card,
                                                    peers=self.peer_list))
                else:
                    continue
                if reply:
                    await self.rpc.send([ident, reply])

    def _vote(self, msg: VoteRequest) -> bytes:
        cand = Candidate(text="fake", finish_reason="stop", mean_logprob=-0.01)
        if self.vote == "too_many":
            return codec.encode(Vote(request_id=msg.request_id, node_id=self.card.node_id,
                                     name="a", candidates=[cand] * (msg.request.n + 3)))
        if self.vote == "nan":
            raw = msgspec.to_builtins(Vote(request_id=msg.request_id, node_id=self.card.node_id,
                                           name="fake", candidates=[cand]))
            raw["candidates"][0]["mean_logprob"] = float("inf")
            return msgspec.msgpack.encode(raw)
        if self.vote == "liar":  # a wrong answer, claimed certain
            sure = Candidate(text="41", finish_reason="stop", tokens=1, mean_logprob=0.0)
            return codec.encode(Vote(request_id=msg.request_id, node_id=self.card.node_id,
                                     name="fake", candidates=[sure] * msg.request.n))
        if self.vote in ("bloat", "huge"):  # logprobs nobody asked for: 1 MB, or 8 MB
            count = 40_000 if self.vote == "bloat" else 320_000
            bloated = msgspec.structs.replace(cand, token_logprobs=[
                TokenLogprob("x" * 20, -0.5)] * count)
            return codec.encode(Vote(request_id=msg.request_id, node_id=self.card.node_id,
                                     name="fake", candidates=[bloated]))
        return b""  # "silent": never answers

    async def _beat(self) -> None:
        seq = 0
        while True:
            seq += 1
            await self.pub.send([codec.encode(Heartbeat(
                card=self.card, seq=seq, load=Load(workers_ready=1, idle_workers=1),
                interval_ms=200))])
            await trio.sleep(0.1)

    def close(self) -> None:
        self.scope.cancel()
