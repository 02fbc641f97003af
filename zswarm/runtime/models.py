"""The models of one node: which are loaded, loading them on demand, unloading idle ones.

Owns: ``Resident`` - one configured model (its name, id, the memory it is estimated
to take, its state: unloaded -> loading -> loaded -> unloading -> unloaded, or
loading -> failed) and, while loaded, its worker pool and that pool's scheduler;
``Models`` - every resident of the node under one memory budget. ``use(model_id)``
is how a request gets a loaded model: it loads one that is not (the request waits
within its own deadline; requests for other models go on), and while a request uses
a model it is never unloaded. One load runs at a time (a load is where memory is
decided); to make room it unloads the least recently used model that is idle, not
pinned and loaded for at least ``[node] min_resident_s`` (so a flood of requests
for every model cannot make the node reload them in turn); a model that cannot fit
even with every unpinned model unloaded is refused at once, saying so. Idle models
are unloaded after their ``keep_alive_s``.

It loads only what the node's config named (the residents are built at start by
the composition root from ``[model]``, ``[[models]]`` and ``[node] models_dir``):
never a path a request or a peer chooses. It must not: choose workers (the
scheduler does) or talk to worker processes (runtime/workers.py does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from zswarm.config import ModelEntry
from zswarm.core.messages import (
    GenerateRequest,
    HeldModel,
    Load,
    ModelState,
    WorkCandidate,
    WorkToken,
)
from zswarm.engines.models import ModelFile
from zswarm.errors import ModelNotFound, Overloaded, ZswarmError
from zswarm.runtime.scheduler import Scheduler

log = logging.getLogger(__name__)

#: how often idle models are looked at for their keep_alive
IDLE_CHECK_S = 1.0
#: a model that failed to load is not tried again for this long (requests fail at once)
RETRY_FAILED_S = 10.0


class Pool(Protocol):
    """One model's workers (runtime/workers.py; zswarm.testing.inline for benches and
    tests), with the scheduler that hands them requests.

    ``run`` generates; with ``score`` it scores those texts as answers instead (one
    candidate each, index = position, whose mean_logprob is the model's: Engine.score)."""

    scheduler: Scheduler

    @property
    def workers(self) -> Mapping[str, object]: ...

    async def serve(self, *, task_status: trio.TaskStatus[object] = ...) -> None: ...

    async def run(self, worker_name: str, request_id: str, request: GenerateRequest, *,
                  on_event: Callable[[WorkToken | WorkCandidate], None],
                  stream: bool = False, score: tuple[str, ...] | None = None) -> None: ...


@dataclass(eq=False)
class Resident:
    """One configured model and, while it is loaded, its workers."""

    name: str
    model_id: str
    entry: ModelEntry
    #: memory it takes once loaded (engines/models.estimate_mib)
    estimate_mib: int
    #: builds its workers (a new pool and scheduler each load)
    make_pool: Callable[[], Pool]
    #: its file, checked and hashed at start (None: a plugin backend without one, or a
    #: model not pulled yet)
    file: ModelFile | None = None
    #: a model not here yet: brings its file and sets file, estimate and make_pool
    #: (runtime/local.remote_resident); run by its first load, then None
    fetch: Callable[[Resident], Awaitable[None]] | None = None
    pool: Pool | None = None
    state: ModelState = "unloaded"
    #: why the last load failed
    error: str = ""
    #: requests using it now (waiting for it to load, queued or generating)
    users: int = 0
    last_used: float = -math.inf
    loaded_at: float = -math.inf
    loads: int = 0
    #: how long its last load took (its workers started and the model read), seconds
    load_s: float = 0.0
    failed_at: float = -math.inf
    #: a load of it is under way or waiting for its turn
    pending: bool = False
    #: set when its state changes (then replaced)
    changed: trio.Event = field(default_factory=trio.Event)
    _scope: trio.CancelScope | None = None
    _stopped: trio.Event | None = None

    @property
    def workers(self) -> int:
        return len(self.pool.workers) if self.pool is not None else self.entry.workers

    @property
    def scheduler(self) -> Scheduler:
        if self.pool is None:
            raise ModelNotFound(f"model {self.name} is not loaded")
        return self.pool.scheduler

    def held(self) -> HeldModel:
        return HeldModel(model_id=self.model_id, name=self.name)

    def idle_s(self, now: float) -> float:
        """How long since it was last used, or loaded if it was not used since."""
        return now - max(self.last_used, self.loaded_at)

    def _set(self, state: ModelState) -> None:
        self.state = state
        self.changed.set()
        self.changed = trio.Event()


class Models:
    """Every model of the node. Run ``await nursery.start(models.serve)``: it returns
    once the models to preload are loaded."""

    def __init__(self, residents: list[Resident], *, budget_mib: int, min_resident_s: float,
                 max_waiting: int) -> None:
        if not residents:
            raise ValueError("a node serves at least one model")
        self.residents = {r.model_id: r for r in residents}
        self.default = residents[0]
        self.budget_mib = budget_mib
        self.min_resident_s = min_resident_s
        #: requests that may wait for one model ([scheduler] max_queue: each model's
        #: scheduler queues as many)
        self.max_waiting = max_waiting
        self._nursery: trio.Nursery | None = None
        self._load_lock = trio.Lock()
        #: set when any model is released or changes state (a load waiting for room)
        self._freed = trio.Event()
        for r in residents:  # said from the start: heartbeats carry it, so peers ask
            never = self._never_fits(r)  # the holders where it fits
            if never and not r.entry.pinned:
                r.state, r.error = "failed", never

    @classmethod
    def fixed(cls, pool: Pool, model_id: str, *, name: str = "") -> Models:
        """One pinned model served by ``pool`` (tests and benches)."""
        entry = ModelEntry(pinned=True, preload=True, keep_alive_s=0)
        return cls([Resident(name or model_id, model_id, entry, 0, lambda: pool)],
                   budget_mib=0, min_resident_s=0, max_waiting=pool.scheduler.max_queue)

    # --- what the node reads ----------------------------------------------------------

    def find(self, model_id: str | None) -> Resident | None:
        return self.default if model_id is None else self.residents.get(model_id)

    def files(self) -> dict[str, ModelFile]:
        """The model files here now, by id (what runtime/sharing.py serves to pullers)."""
        return {r.model_id: r.file for r in self.residents.values() if r.file is not None}

    def loaded(self) -> list[Resident]:
        return [r for r in self.residents.values() if r.state == "loaded"]

    def held(self) -> list[HeldModel]:
        return [r.held() for r in self.residents.values()]

    def states(self) -> list[ModelState]:
        """Each model's state, in the order ``held`` lists them (what heartbeats carry)."""
        return [r.state for r in self.residents.values()]

    def loaded_mib(self) -> int:
        """The estimated memory of the models that have workers (loading, loaded or
        unloading: a load counts once room was made for it)."""
        return sum(r.estimate_mib for r in self.residents.values() if r.pool is not None)

    def load(self, state: str, tokens_per_s: float) -> Load:
        """The node's load: the sum over its loaded models' workers."""
        schedulers = [r.scheduler for r in self.loaded()]
        return Load(state=state,  # type: ignore[arg-type]
                    workers_ready=sum(s.workers_ready for s in schedulers),
                    idle_workers=sum(s.idle_workers for s in schedulers),
                    queue_depth=sum(s.queue_depth for s in schedulers),
                    max_queue=self.max_waiting,
                    tokens_per_s=tokens_per_s,
                    models=self.states() if len(self.residents) > 1 else [])

    def unavailable(self) -> bool:
        """A pinned model has no worker ready (starting, or its workers restarting): the
        node cannot answer for it now."""
        return any(r.entry.pinned and (r.state != "loaded" or not r.scheduler.workers_ready)
                   for r in self.residents.values())

    def busy(self) -> bool:
        """Some loaded model has a request running (its file is not served to peers then)."""
        return any(r.scheduler.idle_workers < r.scheduler.workers_ready for r in self.loaded())

    # --- the life of the models ---------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Models] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for r in self.residents.values():
                    if r.entry.pinned:  # the node cannot start without it
                        await self._load(r, starting=True, raise_errors=True)
                    elif r.entry.preload:  # else it is loaded by its first request
                        await self._load(r, starting=True)
                task_status.started(self)
                while True:
                    await trio.sleep(IDLE_CHECK_S)
                    await self._unload_idle()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def use(self, model_id: str | None) -> AsyncIterator[Resident]:
        """The model, loaded, for the duration of the block (never unloaded meanwhile)."""
        r = self.find(model_id)
        if r is None:
            raise ModelNotFound(f"this node does not serve the model {model_id!r}")
        if r.state != "loaded" and r.users >= self.max_waiting:
            raise Overloaded(f"model {r.name} is loading and {r.users} requests wait for it",
                             retry_after_s=1.0)
        r.users += 1
        r.last_used = trio.current_time()
        try:
            while r.state != "loaded":
                if self._nursery is None:
                    raise ModelNotFound(f"model {r.name} is not loaded (the node is stopping)")
                if r.state == "failed" and trio.current_time() - r.failed_at < RETRY_FAILED_S:
                    raise ModelNotFound(f"model {r.name} failed to load: {r.error}")
                if r.state in ("unloaded", "failed") and not r.pending:
                    r.pending = True
                    self._nursery.start_soon(self._load, r)
                await r.changed.wait()
                if r.state == "failed":
                    raise ModelNotFound(f"model {r.name} failed to load: {r.error}")
            yield r
        finally:
            r.users -= 1
            r.last_used = trio.current_time()
            self._wake()

    def _wake(self) -> None:
        self._freed.set()
        self._freed = trio.Event()

    async def _load(self, r: Resident, *, starting: bool = False,
                    raise_errors: bool = False) -> None:
        """Load ``r`` within the budget (one load at a time; a model not here yet is
        pulled first, beside other loads); failures are its state."""
        try:
            if r.fetch is not None:
                r._set("loading")
                try:
                    await r.fetch(r)
                except ZswarmError as exc:
                    self._failed(r, exc, raise_errors)
                    return
                r.fetch = None
            async with self._load_lock:
                await self._load_locked(r, starting, raise_errors)
        finally:
            r.pending = False

    def _failed(self, r: Resident, exc: ZswarmError, raise_errors: bool) -> None:
        r.pool, r.error, r.failed_at = None, str(exc), trio.current_time()
        r._set("failed")
        self._wake()
        log.warning("model %s failed to load: %s", r.name, exc)
        if raise_errors:
            raise exc

    async def _load_locked(self, r: Resident, starting: bool, raise_errors: bool) -> None:
        if r.state == "loaded":
            return
        r._set("loading")
        try:
            if not await self._make_room(r, starting):
                r._set("unloaded")  # every request for it went away meanwhile
                return
            r.pool = r.make_pool()
            r._stopped = trio.Event()
            assert self._nursery is not None
            started = trio.current_time()
            await self._nursery.start(self._run, r)
            r.load_s = trio.current_time() - started
        except ZswarmError as exc:
            self._failed(r, exc, raise_errors)
            return
        r.loads += 1
        r.loaded_at = trio.current_time()
        r.error = ""
        r._set("loaded")
        self._wake()
        log.info("model %s loaded (%d worker(s), about %d MiB of a budget of %s)", r.name,
                     r.workers, r.estimate_mib, self._budget_text())

    def _budget_text(self) -> str:
        return f"{self.budget_mib} MiB" if self.budget_mib else "none"

    async def _run(self, r: Resident, *, task_status: trio.TaskStatus[object]) -> None:
        """Its workers, until unloaded (the scope is cancelled) or the node stops."""
        assert r.pool is not None and r._stopped is not None
        stopped = r._stopped
        try:
            with trio.CancelScope() as scope:
                r._scope = scope
                await r.pool.serve(task_status=task_status)
        except ZswarmError as exc:
            if r.state != "loaded":
                raise  # before start: the load fails (_load_locked)
            r.error, r.failed_at = str(exc), trio.current_time()
            log.warning("model %s stopped: %s", r.name, exc)
        finally:
            stopped.set()
            if r.state == "loaded":  # not unloaded by us: it failed
                r.pool = None
                r._set("failed")
                self._wake()

    async def _make_room(self, r: Resident, starting: bool = False) -> bool:
        """Unload idle models (least recently used first) until ``r`` fits the budget;
        False if nobody wants ``r`` any more while it waits for room. ``starting`` (the
        models loaded at start): ModelNotFound if it does not fit beside those loaded
        before it, instead of waiting."""
        if not self.budget_mib:
            return True
        never = self._never_fits(r)
        if never:
            raise ModelNotFound(never)
        while self.loaded_mib() + r.estimate_mib > self.budget_mib:
            victim = self._evictable(r)
            if victim is not None:
                log.info("unloading model %s (idle for %.0f s) to make room for %s",
                         victim.name, victim.idle_s(trio.current_time()), r.name)
                await self._unload(victim)
                continue
            if starting:
                raise ModelNotFound(
                    f"model {r.name} needs about {r.estimate_mib} MiB: it does not fit in "
                    f"the memory budget of {self.budget_mib} MiB beside the models loaded "
                    f"at start before it ({self.loaded_mib()} MiB)")
            if r.users == 0:
                return False
            # a model in use or loaded only just: look again when one is released, or
            # when a model loaded only just may go
            with trio.move_on_after(IDLE_CHECK_S):
                await self._freed.wait()
        return True

    def _never_fits(self, r: Resident) -> str:
        """Why ``r`` can never be loaded within the budget beside the pinned models ("":
        it can, or its size is not known yet)."""
        pinned = sum(o.estimate_mib for o in self.residents.values()
                     if o is not r and o.entry.pinned)
        if not self.budget_mib or r.estimate_mib + pinned <= self.budget_mib:
            return ""
        return (f"model {r.name} needs about {r.estimate_mib} MiB and cannot fit in this "
                f"node's memory budget of {self.budget_mib} MiB ({pinned} MiB held by pinned "
                "models): raise [node] memory_budget_mib, lower its n_ctx or workers, or "
                "unpin a model")

    def _evictable(self, r: Resident) -> Resident | None:
        now = trio.current_time()
        idle = [o for o in self.residents.values()
                if o is not r and o.state == "loaded" and not o.entry.pinned and o.users == 0
                and now - o.loaded_at >= self.min_resident_s]
        return min(idle, key=lambda o: max(o.last_used, o.loaded_at), default=None)

    async def _unload(self, r: Resident) -> None:
        started = trio.current_time()
        r._set("unloading")
        if r._scope is not None:
            r._scope.cancel()
        if r._stopped is not None:
            await r._stopped.wait()
        r.pool, r._scope, r._stopped = None, None, None
        r._set("unloaded")
        log.debug("model %s unloaded in %.3f s", r.name, trio.current_time() - started)
        self._wake()

    async def _unload_idle(self) -> None:
        now = trio.current_time()
        for r in list(self.residents.values()):
            keep = r.entry.keep_alive_s
            if r.state == "loaded" and keep and not r.entry.pinned and r.users == 0 \
                    and r.idle_s(now) >= keep and now - r.loaded_at >= self.min_resident_s:
                log.info("unloading model %s: idle for %.0f s (keep_alive_s = %d)", r.name,
                         r.idle_s(now), keep)
                await self._unload(r)
