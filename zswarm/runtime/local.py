"""A node's local part: workers loaded, a scheduler, a coordinator (no network).

``serving(ctx, pool)`` runs the workers for the duration of a block and marks the
node ready once they have the model; the composition root (zswarm/node.py) builds
its servers around it. ``local_node(config)`` is the whole local part on its own,
for ``zswarm ask --local``, tests and benches. ``single_errors`` unwraps the one
error a failed start-up leaves in trio's exception groups, so callers see a
ConfigError or ModelNotFound, not a group.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from zswarm.config import Config
from zswarm.core.messages import NodeCard
from zswarm.engines.loader import model_id
from zswarm.errors import ZswarmError
from zswarm.runtime.context import NodeContext, NoPeers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.workers import WorkerPool


class Servable(Protocol):
    async def serve(self, *, task_status: trio.TaskStatus[object] = ...) -> None: ...


@dataclass
class LocalNode:
    ctx: NodeContext
    pool: WorkerPool
    coordinator: Coordinator

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def scheduler(self) -> Scheduler:
        return self.ctx.scheduler


@contextmanager
def single_errors() -> Iterator[None]:
    """Unwrap an exception group that holds exactly one ZswarmError (trio wraps nursery errors)."""
    try:
        yield
    except BaseExceptionGroup as group:
        matched, rest = group.split(ZswarmError)
        if matched is not None and rest is None and len(matched.exceptions) == 1:
            leaf = matched.exceptions[0]
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if isinstance(leaf, ZswarmError):
                raise leaf from None
        raise


@asynccontextmanager
async def serving(ctx: NodeContext, pool: Servable) -> AsyncIterator[None]:
    """The workers running for the duration of the block; the node is ready inside it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        ctx.ready()
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def local_node(config: Config) -> AsyncIterator[LocalNode]:
    """Workers loaded and a scheduler running, for the duration of the block."""
    with single_errors():
        model = await trio.to_thread.run_sync(model_id, config.model)
        card = NodeCard(node_id="local", name=config.node.name, model_id=model,
                        workers=config.node.workers, rpc="", pub="",
                        swarm=config.federation.swarm)
        ctx = NodeContext(config, card, Scheduler(max_queue=config.scheduler.max_queue))
        pool = WorkerPool(config, ctx.scheduler, model, drops=ctx.drops.counter("workers"),
                          stats=ctx.stats)
        async with serving(ctx, pool):
            yield LocalNode(ctx, pool, Coordinator(ctx, pool, NoPeers()))
