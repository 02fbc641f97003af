"""Resource floods against a live node (tests/federation/test_floods.py, bench/fuzz_node.py).

- ``mdns_flood(...)``: announce many ``_zswarm._tcp`` services on loopback that carry
  a swarm's name and key fingerprint (both public in any member's own record), each
  with its own node id and a port nobody answers on: what a hostile LAN host can send.
- ``idle_connections(...)``: open many TCP connections to a port and send nothing (no
  ZMTP greeting, no CURVE handshake, no HTTP request), until ``count`` are open or the
  connect fails.
- ``contact_flood(...)``: many "nodes" that each open a link to a node, say hello with a
  card of their own (at an endpoint nobody answers on, as a node behind a firewall
  would), and answer what the node asks back over the link as that card: what a
  member (or, in an open swarm, anyone) can make a node hold through contact.

Loopback only: these never send to any other address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import zmq
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from zswarm.core import codec
from zswarm.core.ids import node_id_of, unpinned
from zswarm.core.messages import (
    PROTOCOL_VERSION,
    Heartbeat,
    Load,
    NodeCard,
    Status,
    StatusRequest,
)
from zswarm.net.mdns import SERVICE_TYPE
from zswarm.net.security import SwarmKey, connect_as, one_off, pin

LOOPBACK = "127.0.0.1"


def flood_record(i: int, *, swarm: str, key: str = "", port: int = 9,
                 tag: str = "flood") -> ServiceInfo:
    public = one_off().node.public  # a key of its own: the id is the key's, as it must be
    props = {"id": node_id_of(public), "name": f"{tag}{i}", "proto": str(PROTOCOL_VERSION),
             "model": "scripted", "workers": "1", "pub": str(port), "rpc": str(port),
             "swarm": swarm, "pk": public, **({"key": key} if key else {})}
    return ServiceInfo(SERVICE_TYPE, f"{tag}{i}-{swarm}.{SERVICE_TYPE}",
                       addresses=[socket.inet_aton(LOOPBACK)], port=port, properties=props,
                       server=f"{tag}{i}.local.")


@contextmanager
def mdns_flood(count: int, *, swarm: str, key: str = "", port: int = 9,
               tag: str = "flood") -> Iterator[Zeroconf]:
    """``count`` records announced at once on loopback; withdrawn on exit."""
    zc = Zeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    try:
        async def register() -> None:
            for i in range(count):  # without waiting for each one's announcements
                await zc.async_register_service(flood_record(i, swarm=swarm, key=key,
                                                             port=port, tag=tag),
                                                cooperating_responders=True)
        loop = zc.loop
        assert loop is not None  # a started Zeroconf runs its loop
        asyncio.run_coroutine_threadsafe(register(), loop).result(timeout=60)
        yield zc
    finally:
        zc.close()


def open_fds(pid: int) -> int:
    """How many files a (node) process has open; -1 once it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Up to ``count`` silent TCP connections to ``127.0.0.1:port``; closed on exit."""
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.settimeout(2.0)
            try:
                s.connect((LOOPBACK, port))
            except OSError:
                s.close()
                break
            conns.append(s)
        yield conns
    finally:
        for s in conns:
            s.close()


def contact_flood(endpoint: str, count: int, *, swarm: str, key: SwarmKey | None,
                  seconds: float, port: int = 9) -> int:
    """``count`` links to ``endpoint``, each a node that says hello with its own card (at
    ``127.0.0.1:port``, where nothing answers) and answers, for ``seconds``, every
    StatusRequest the node sends back over the link, with a heartbeat every 0.5 s.
    Returns how many links were asked back at least once."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    socks: list[zmq.Socket[bytes]] = []
    cards = []
    asked: set[int] = set()
    try:
        target, public = unpinned(endpoint)
        for i in range(count):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            creds = one_off(key)  # each link a node of its own, with its own key
            connect_as(sock, creds, zmq.DEALER)
            pin(sock, public)
            sock.connect(target)
            card = NodeCard(node_id=creds.node.node_id, name=f"contact{i}",
                            model_id="scripted", workers=1, rpc=f"tcp://{LOOPBACK}:{port}",
                            pub=f"tcp://{LOOPBACK}:{port}", swarm=swarm,
                            key=key.fingerprint if key else "", public=creds.node.public)
            with contextlib.suppress(zmq.Again):
                sock.send(codec.encode(StatusRequest(request_id=f"h{i}", sender=card.node_id,
                                                     card=card, standing=True)), zmq.NOBLOCK)
            socks.append(sock)
            cards.append(card)
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        end = time.monotonic() + seconds
        beat = 0.0
        while time.monotonic() < end:
            if time.monotonic() >= beat:
                beat = time.monotonic() + 0.5
                for sock, card in zip(socks, cards, strict=True):
                    with contextlib.suppress(zmq.Again):  # not connected (no key): dropped
                        sock.send(codec.encode(Heartbeat(card=card, seq=1, load=Load())),
                                  zmq.NOBLOCK)
            for sock, _ in poller.poll(100):
                i = socks.index(sock)
                msg = codec.decode(sock.recv())
                if isinstance(msg, StatusRequest):
                    asked.add(i)
                    with contextlib.suppress(zmq.Again):
                        sock.send(codec.encode(Status(
                            request_id=msg.request_id, card=cards[i],
                            load=Load(workers_ready=1, idle_workers=1))), zmq.NOBLOCK)
        return len(asked)
    finally:
        for sock in socks:
            sock.close(linger=0)
