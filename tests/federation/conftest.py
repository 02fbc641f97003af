"""Nodes in this test process (real sockets, real mDNS on 127.0.0.1, scripted engines)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import question
from zswarm import client
from zswarm.config import load_config
from zswarm.core.messages import PeerInfo, Report
from zswarm.net.security import SwarmKey
from zswarm.node import run_node
from zswarm.statedir import NodeInfo
from zswarm.testing.cluster import node_config


class Cluster:
    """Start and stop in-process nodes of one private swarm."""

    def __init__(self, nursery: trio.Nursery, directory: Path) -> None:
        self.nursery = nursery
        self.directory = directory
        self.swarm = "test-" + secrets.token_hex(6)  # other test runs on this host stay apart
        self.scopes: dict[str, trio.CancelScope] = {}
        #: set once a node's run has returned (every socket closed, its ports free)
        self.ended: dict[str, trio.Event] = {}

    async def start(self, name: str, answers: list[str] | None = None, **kw: Any) -> NodeInfo:
        cfg = load_config(node_config(self.directory, name, swarm=self.swarm, answers=answers,
                                      **kw))
        scope = trio.CancelScope()
        ended = self.ended[name] = trio.Event()

        async def run(task_status: trio.TaskStatus[NodeInfo]) -> None:
            try:
                with scope:
                    await run_node(cfg, task_status=task_status)
            finally:
                ended.set()

        info: NodeInfo = await self.nursery.start(run)
        self.scopes[name] = scope
        return info

    def stop(self, name: str) -> None:
        self.scopes.pop(name).cancel()


async def peers_of(info: NodeInfo, key: SwarmKey | None = None) -> list[PeerInfo]:
    reply = await trio.to_thread.run_sync(lambda: client.peers(info.rpc_endpoint, key=key))
    return reply.peers


async def ask(info: NodeInfo, n: int, strategy: str, deadline_ms: int = 20_000, *,
              adaptive: bool = False, key: SwarmKey | None = None) -> tuple[str, Report]:
    """Ask the node ``n`` candidates of "What is 6 * 7?" over RPC (in a thread); with
    ``adaptive``, a budget of ``n``; ``key``: the swarm key (a keyed swarm's node)."""
    reply = await trio.to_thread.run_sync(
        lambda: client.ask(info.rpc_endpoint, question(n=n), strategy=strategy,
                           deadline_ms=deadline_ms, adaptive=adaptive, key=key))
    return reply.answer, reply.report


def alive(*names: str) -> Callable[[dict[str, str]], bool]:
    """A wait_peers check: these peers are ALIVE."""
    return lambda table: all(table.get(n) == "alive" for n in names)


async def wait_peers(info: NodeInfo, check: Callable[[dict[str, str]], bool],
                     timeout_s: float = 10.0, key: SwarmKey | None = None) -> dict[str, str]:
    """Wait until ``check({peer name: state})`` holds for the node's peer list."""
    table: dict[str, str] = {}
    with trio.move_on_after(timeout_s):
        while True:
            table = {p.name: p.state for p in await peers_of(info, key)}
            if check(table):
                return table
            await trio.sleep(0.02)
    raise TimeoutError(f"peer states not reached within {timeout_s} s; last seen {table}")


@pytest.fixture
async def cluster(tmp_path, nursery):
    c = Cluster(nursery, tmp_path)
    yield c
    for scope in c.scopes.values():
        scope.cancel()
