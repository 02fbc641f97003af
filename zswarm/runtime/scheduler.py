"""Admission and dispatch of requests to local workers (trio).

Owns: the bounded admission queue (FIFO within a priority; lower number first),
the set of idle workers, and backpressure: when the queue is full a request
fails at once with Overloaded, so memory stays bounded. Deadlines and
cancellation are the caller's cancel scope; a request cancelled while queued
leaves the queue, and a worker handed to a cancelled request goes back.
It must not: talk to worker processes (runtime/workers.py does).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from zswarm.errors import Overloaded


@dataclass(eq=False)
class _Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    worker: str | None = None


class Scheduler:
    def __init__(self, *, max_queue: int) -> None:
        self.max_queue = max_queue
        self._known: set[str] = set()
        self._idle: deque[str] = deque()
        self._busy: set[str] = set()
        self._queues: dict[int, deque[_Waiter]] = {}
        self.admitted = 0
        self.rejected = 0

    # --- worker side ----------------------------------------------------------------

    def worker_ready(self, name: str) -> None:
        self._known.add(name)
        if name not in self._idle and name not in self._busy:
            self._hand_over(name)

    def worker_lost(self, name: str) -> None:
        self._known.discard(name)
        try:
            self._idle.remove(name)
        except ValueError:
            pass

    def _hand_over(self, name: str) -> None:
        for prio in sorted(self._queues):
            queue = self._queues[prio]
            if queue:
                waiter = queue.popleft()
                waiter.worker = name
                self._busy.add(name)
                waiter.event.set()
                return
        self._idle.append(name)

    # --- request side ---------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def workers_ready(self) -> int:
        return len(self._known)

    @property
    def idle_workers(self) -> int:
        return len(self._idle)

    async def acquire(self, priority: int = 0, *, prefer: str | None = None) -> str:
        """Wait for an idle worker (FIFO per priority); Overloaded if the queue is full.

        ``prefer``: the worker whose prompt cache holds this conversation, taken if it
        is idle (else any idle worker: the least loaded wins over a cache).
        """
        if self._idle and self.queue_depth == 0:
            if prefer is not None and prefer in self._idle:
                self._idle.remove(prefer)
                name = prefer
            else:
                name = self._idle.popleft()
            self._busy.add(name)
            try:
                await trio.lowlevel.checkpoint()
            except BaseException:
                self.release(name)
                raise
            self.admitted += 1
            return name
        if self.queue_depth >= self.max_queue:
            self.rejected += 1
            raise Overloaded(
                f"queue full ({self.queue_depth} waiting, limit {self.max_queue})",
                retry_after_s=1.0,
            )
        waiter = _Waiter()
        queue = self._queues.setdefault(priority, deque())
        queue.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.worker is not None:
                self.release(waiter.worker)
            else:
                queue.remove(waiter)
            raise
        assert waiter.worker is not None
        self.admitted += 1
        return waiter.worker

    def release(self, name: str) -> None:
        self._busy.discard(name)
        if name in self._known:
            self._hand_over(name)

    @asynccontextmanager
    async def slot(self, priority: int = 0, *, prefer: str | None = None) -> AsyncIterator[str]:
        name = await self.acquire(priority, prefer=prefer)
        try:
            yield name
        finally:
            self.release(name)
