"""Resource floods against a live node (tests/federation/test_floods.py, bench/fuzz_node.py).

- ``mdns_flood(...)``: announce many ``_zswarm._tcp`` services on loopback that carry
  a swarm's name and key fingerprint (both public in any member's own record), each
  with its own node id and a port nobody answers on: what a hostile LAN host can send.
- ``idle_connections(...)``: open many TCP connections to a port and send nothing (no
  ZMTP greeting, no CURVE handshake, no HTTP request), until ``count`` are open or the
  connect fails.

Loopback only: these never send to any other address.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from zeroconf import IPVersion, ServiceInfo, Zeroconf

from zswarm.core.messages import PROTOCOL_VERSION
from zswarm.net.mdns import SERVICE_TYPE

LOOPBACK = "127.0.0.1"


def flood_record(i: int, *, swarm: str, key: str = "", port: int = 9,
                 tag: str = "flood") -> ServiceInfo:
    props = {"id": f"{tag[:4]}{i:012x}", "name": f"{tag}{i}", "proto": str(PROTOCOL_VERSION),
             "model": "scripted", "workers": "1", "pub": str(port), "rpc": str(port),
             "swarm": swarm, **({"key": key} if key else {})}
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
