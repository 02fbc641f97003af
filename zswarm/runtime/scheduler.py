"""Admission and dispatch of requests to local workers (trio).

Owns: the bounded admission queue (FIFO),
the free slots of each worker (a worker that batches runs several requests at once),
and backpressure: when the queue is full a request
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
        #: ready workers -> how many requests each runs at once (its slots: WorkReady)
        self._slots: dict[str, int] = {}
        #: requests each worker holds now
        self._load: dict[str, int] = {}
        #: requests handed to a worker before it was lost, not yet released
        self._stale: dict[str, int] = {}
        self._given: dict[str, int] = {}  # when each worker was last handed a request
        self._clock = 0
        self._queue: deque[_Waiter] = deque()
        self.admitted = 0
        self.rejected = 0

    # --- worker side ----------------------------------------------------------------

    def worker_ready(self, name: str, slots: int = 1) -> None:
        self._slots[name] = max(1, slots)
        self._load.setdefault(name, 0)
        self._hand_over()

    def worker_lost(self, name: str) -> None:
        self._slots.pop(name, None)
        held = self._load.pop(name, 0)
        if held:
            self._stale[name] = self._stale.get(name, 0) + held

    def _free(self, prefer: str | None = None) -> str | None:
        """A worker with a free slot: ``prefer`` if it has one, else the least loaded
        (ties: the one handed a request longest ago)."""
        free = [w for w, cap in self._slots.items() if self._load[w] < cap]
        if not free:
            return None
        if prefer in free:
            return prefer
        return min(free, key=lambda w: (self._load[w], self._given.get(w, 0)))

    def _take(self, name: str) -> None:
        self._load[name] += 1
        self._clock += 1
        self._given[name] = self._clock

    def _hand_over(self) -> None:
        while self._queue:
            name = self._free()
            if name is None:
                return
            waiter = self._queue.popleft()
            self._take(name)
            waiter.worker = name
            waiter.event.set()

    # --- request side ---------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def workers_ready(self) -> int:
        return len(self._slots)

    @property
    def idle_workers(self) -> int:
        """Ready workers running no request."""
        return sum(1 for w in self._slots if self._load[w] == 0)

    async def acquire(self, *, prefer: str | None = None) -> str:
        """Wait for a worker with a free slot (first come, first served); Overloaded if
        the queue is full.

        ``prefer``: the worker whose prompt cache holds this conversation, taken if it
        has a free slot (else the least loaded: a free worker wins over a cache).
        """
        name = self._free(prefer) if self.queue_depth == 0 else None
        if name is not None:
            self._take(name)
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
        self._queue.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.worker is not None:
                self.release(waiter.worker)
            else:
                self._queue.remove(waiter)
            raise
        assert waiter.worker is not None
        self.admitted += 1
        return waiter.worker

    def release(self, name: str) -> None:
        if self._stale.get(name):
            self._stale[name] -= 1  # held since before the worker was lost and came back
            return
        if self._load.get(name):
            self._load[name] -= 1
        self._hand_over()

    @asynccontextmanager
    async def slot(self, *, prefer: str | None = None) -> AsyncIterator[str]:
        name = await self.acquire(prefer=prefer)
        try:
            yield name
        finally:
            self.release(name)
