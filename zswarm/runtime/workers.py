"""Supervised worker processes around engines, and the node side of their ipc link.

Owns: starting each worker (python -m zswarm.runtime.worker_process), waiting for
it to load its model, restarting it with exponential backoff when it dies
(SIGKILL, segfault, OOM), failing its in-flight requests at once with
WorkerCrashed, routing worker messages to the request that waits for them, and
leaving no child process behind on shutdown. Tells the Scheduler which workers
are ready. It must not: choose workers (scheduler) or combine candidates.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import trio
import zmq

from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.messages import (
    Error,
    GenerateRequest,
    Message,
    WorkCancel,
    WorkCandidate,
    WorkDone,
    WorkGenerate,
    WorkReady,
    WorkToken,
)
from zswarm.errors import (
    InferenceError,
    ModelNotFound,
    PeerUnavailable,
    RemoteProtocolError,
    WorkerCrashed,
    ZswarmError,
    error_from_kind,
)
from zswarm.net.guard import DropCounter, MessageGuard
from zswarm.net.zmq_trio import TrioSocket
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.stats import NodeStats

log = logging.getLogger(__name__)

WorkerEvent = WorkToken | WorkCandidate | WorkDone | Error


@dataclass
class _Worker:
    name: str
    pid: int | None = None
    ready: bool = False
    restarts: int = 0
    #: the requests it runs now (several when it batches)
    requests: set[str] = field(default_factory=set)
    ready_event: trio.Event = field(default_factory=trio.Event)
    load_error: ZswarmError | None = None


class WorkerPool:
    """The node's local workers. Start with ``await nursery.start(pool.serve)``."""

    def __init__(self, config: Config, scheduler: Scheduler, model_id: str, *,
                 drops: DropCounter | None = None, stats: NodeStats | None = None) -> None:
        self.config = config
        self.scheduler = scheduler
        self.drops = drops or DropCounter("workers")
        self.stats = stats
        count = config.node.workers
        self.workers = {f"w{i}": _Worker(f"w{i}") for i in range(count)}
        cfg_threads = config.model.threads
        self.threads = cfg_threads or max(1, (os.cpu_count() or 1) // count)
        self._routes: dict[str, trio.MemorySendChannel[WorkerEvent]] = {}
        self._sock: TrioSocket | None = None
        self._endpoint = ""
        #: what the node advertises (engines/loader.py model_id); workers must load just that
        self.model_id = model_id

    # --- lifecycle ----------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        with tempfile.TemporaryDirectory(prefix="zswarm-") as tmp:
            self._endpoint = f"ipc://{Path(tmp) / 'workers.sock'}"
            with TrioSocket.open(zmq.ROUTER) as sock:
                sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
                sock.bind(self._endpoint)
                self._sock = sock
                startup_error: ZswarmError | None = None
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._receive_loop, sock)
                        for name in self.workers:
                            nursery.start_soon(self._supervise, name)
                        try:
                            await self._wait_first_start()
                        except ZswarmError as exc:
                            startup_error = exc
                            nursery.cancel_scope.cancel()
                        else:
                            task_status.started(self)
                finally:
                    self._sock = None
                if startup_error is not None:
                    raise startup_error

    async def _wait_first_start(self) -> None:
        timeout_s = self.config.scheduler.worker_start_timeout_s
        with trio.move_on_after(timeout_s) as scope:
            for worker in self.workers.values():
                await worker.ready_event.wait()
        for worker in self.workers.values():
            if worker.load_error is not None:
                raise worker.load_error
        if scope.cancelled_caught:
            raise InferenceError(f"workers did not load the model within {timeout_s:.0f} s")

    def _command(self, name: str) -> list[str]:
        model_json = msgspec.json.encode(self.config.model).decode()
        return [
            sys.executable, "-m", "zswarm.runtime.worker_process",
            "--endpoint", self._endpoint, "--name", name,
            "--model", model_json, "--threads", str(self.threads),
            "--system", self.config.generation.system_prompt,
        ]

    async def _supervise(self, name: str) -> None:
        worker = self.workers[name]
        backoff_s, longest_s = self.config.scheduler.restart_backoff_s
        while True:
            proc = await trio.lowlevel.open_process(
                self._command(name), stdin=subprocess.DEVNULL,
                env={**os.environ, "ZSWARM_NODE_PID": str(os.getpid())},
            )
            worker.pid = proc.pid
            log.debug("worker %s started (pid %d)", name, proc.pid)
            try:
                rc = await proc.wait()
            finally:
                if proc.returncode is None:
                    await self._stop_process(proc)
            self._worker_gone(worker, rc)
            if worker.load_error is not None and not worker.ready_event.is_set():
                worker.ready_event.set()
                return
            if worker.load_error is not None:
                log.error("worker %s cannot load the model: %s", name, worker.load_error)
            else:
                log.warning("worker %s (pid %s) exited (%s); restarting in %.1f s",
                            name, proc.pid, _describe_exit(rc), backoff_s)
            await trio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, longest_s)
            worker.restarts += 1
            worker.load_error = None

    async def _stop_process(self, proc: trio.Process) -> None:
        with trio.CancelScope(shield=True):
            proc.kill()
            with trio.move_on_after(5):
                await proc.wait()

    def _worker_gone(self, worker: _Worker, rc: int) -> None:
        worker.ready = False
        worker.pid = None
        self.scheduler.worker_lost(worker.name)
        for rid in worker.requests:
            route = self._routes.get(rid)
            if route is not None:
                route.send_nowait(Error(request_id=rid, kind=WorkerCrashed.kind,
                                        message=f"worker {worker.name} died ({_describe_exit(rc)})"))
        worker.requests.clear()

    # --- messages from workers ----------------------------------------------------

    async def _receive_loop(self, sock: TrioSocket) -> None:
        while True:
            frames = await sock.recv_multipart()
            with MessageGuard(self.drops):
                self._handle(frames)

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            raise RemoteProtocolError(f"{len(frames) - 1} frames", reason="multi-frame")
        worker = self.workers.get(frames[0].decode(errors="replace"))
        if worker is None:
            raise RemoteProtocolError("a message from an unknown worker", reason="unexpected")
        self._on_message(worker, codec.decode(frames[1]))

    def _on_message(self, worker: _Worker, msg: Message) -> None:
        if isinstance(msg, WorkReady):
            if msg.model_id != self.model_id:  # the file changed after the node read it
                worker.load_error = InferenceError(
                    f"worker {worker.name} loaded {msg.model_id}, but the node advertises "
                    f"{self.model_id} (did the model file change?); restart the node")
                log.error("%s", worker.load_error)
                worker.ready_event.set()
                return
            worker.ready = True
            worker.ready_event.set()
            if worker.restarts:
                log.warning("worker %s is back (pid %d)", worker.name, msg.pid)
            self.scheduler.worker_ready(worker.name, msg.slots)
        elif isinstance(msg, Error) and msg.request_id is None:
            exc = error_from_kind(msg.kind, msg.message)
            worker.load_error = exc if isinstance(exc, ModelNotFound) else InferenceError(
                msg.message)
        elif isinstance(msg, (WorkToken, WorkCandidate, WorkDone, Error)):
            rid = msg.request_id
            route = self._routes.get(rid) if rid is not None else None
            if route is not None:
                route.send_nowait(msg)
            if isinstance(msg, WorkDone) and self.stats is not None:
                self.stats.prompt_cache_evictions += msg.cache_evictions
            if isinstance(msg, (WorkDone, Error)) and rid is not None:
                worker.requests.discard(rid)

    # --- requests -----------------------------------------------------------------

    async def run(
        self,
        worker_name: str,
        request_id: str,
        request: GenerateRequest,
        *,
        on_event: Callable[[WorkToken | WorkCandidate], None],
        stream: bool = False,
        score: tuple[str, ...] | None = None,
    ) -> None:
        """Run one request on one (acquired) worker; tokens and candidates go to on_event.

        With ``score``: the worker scores those texts as answers instead of generating
        (one candidate each, index = position, its mean_logprob the model's; Engine.score).

        Raises WorkerCrashed if the worker dies, or the engine's error. If the caller
        is cancelled, the worker is told to stop and the call returns once it has.
        """
        worker = self.workers[worker_name]
        sock = self._sock
        if sock is None or not worker.ready:
            raise WorkerCrashed(f"worker {worker_name} is not running")
        send, receive = trio.open_memory_channel[WorkerEvent](math.inf)
        self._routes[request_id] = send
        worker.requests.add(request_id)
        finished = False
        try:
            try:
                sock.send_multipart([worker_name.encode(), codec.encode(
                    WorkGenerate(request_id=request_id, request=request, stream=stream,
                                 score=score))])
            except PeerUnavailable as exc:
                finished = True
                raise WorkerCrashed(f"worker {worker_name} is not reachable: {exc}") from exc
            async for event in receive:
                if isinstance(event, WorkDone):
                    finished = True
                    return
                if isinstance(event, Error):
                    finished = True
                    raise error_from_kind(event.kind, event.message)
                on_event(event)
        finally:
            if not finished and request_id in worker.requests and self._sock is not None:
                await self._cancel_and_drain(worker, request_id, receive)
            self._routes.pop(request_id, None)
            worker.requests.discard(request_id)

    async def _cancel_and_drain(
        self, worker: _Worker, request_id: str, receive: trio.MemoryReceiveChannel[WorkerEvent]
    ) -> None:
        """Tell the worker to stop; wait (shielded, bounded) until it confirms."""
        with trio.CancelScope(shield=True):
            try:
                assert self._sock is not None
                self._sock.send_multipart([worker.name.encode(),
                                           codec.encode(WorkCancel(request_id=request_id))])
            except (ZswarmError, trio.ClosedResourceError):
                return
            with trio.move_on_after(5) as scope:
                async for event in receive:
                    if isinstance(event, (WorkDone, Error)):
                        break
            if scope.cancelled_caught:
                log.warning("worker %s did not stop within 5 s; killing it", worker.name)
                if worker.pid is not None:
                    try:
                        os.kill(worker.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"
