"""A node's local part: workers loaded, a scheduler, a coordinator (no network).

``local_swarm(config)`` runs it for the duration of a block: the node (runtime/node.py)
builds its RPC, HTTP and federation around it, and ``zswarm ask --local``, tests and
benches use it alone. ``single_errors`` unwraps the one error a failed start-up leaves
in trio's exception groups, so callers see a ConfigError or ModelNotFound, not a group.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from zswarm.config import Config
from zswarm.errors import ZswarmError
from zswarm.net.guard import FrameDrops
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.workers import WorkerPool


@dataclass
class LocalSwarm:
    config: Config
    pool: WorkerPool
    scheduler: Scheduler
    coordinator: Coordinator


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
async def local_swarm(config: Config, drops: FrameDrops | None = None
                      ) -> AsyncIterator[LocalSwarm]:
    """Workers loaded and a scheduler running, for the duration of the block."""
    scheduler = Scheduler(max_queue=config.scheduler.max_queue)
    pool = WorkerPool(config, scheduler, drops=(drops or FrameDrops()).counter("workers"))
    with single_errors():
        async with _local_swarm(config, scheduler, pool) as swarm:
            yield swarm


@asynccontextmanager
async def _local_swarm(config: Config, scheduler: Scheduler, pool: WorkerPool
                       ) -> AsyncIterator[LocalSwarm]:
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        coordinator = Coordinator(node_name=config.node.name, pool=pool, scheduler=scheduler,
                                  weights=config.consensus.weights,
                                  allow_truncated=config.consensus.allow_truncated,
                                  vote_deadline_s=config.federation.deadline_ms / 1000)
        try:
            yield LocalSwarm(config, pool, scheduler, coordinator)
        finally:
            nursery.cancel_scope.cancel()
