"""The inside of one worker process: load an engine, serve WorkGenerate over zmq ipc.

Run as ``python -m zswarm.runtime.worker_process``; started and supervised by
runtime/workers.py. Blocking code on purpose (no trio). An engine with a batcher
(llama.cpp; engines/batching.py) runs many requests at once: between decode steps
the worker takes every waiting message, so a new request joins the running batch
and a WorkCancel stops its request within one token. Other engines serve one
request at a time, looking at the socket between tokens. WorkReady says how many
requests the worker takes at once (its slots); the node's scheduler keeps to it.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from zswarm.config import ModelConfig
from zswarm.core import codec
from zswarm.core.messages import (
    Candidate,
    Error,
    GenerateRequest,
    WorkCancel,
    WorkCandidate,
    WorkDone,
    WorkGenerate,
    WorkReady,
    WorkToken,
    error,
)
from zswarm.engines.base import Engine
from zswarm.errors import RemoteProtocolError, ZswarmError

#: streamed text is batched for at most this long (a few tokens) per message
TOKEN_FLUSH_S = 0.02

log = logging.getLogger("zswarm.worker")


def _parent_gone(parent_pid: int) -> bool:
    """True once the node that started us has died (we were re-parented).

    (PR_SET_PDEATHSIG is not used: it fires when the parent *thread* that forked
    us exits, and trio starts processes from a worker thread that comes and goes.)
    """
    return os.getppid() != parent_pid


class _Link:
    def __init__(self, endpoint: str, name: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.ROUTING_ID, name.encode())
        self.sock.connect(endpoint)

    def send(self, msg: Any) -> None:
        self.sock.send(codec.encode(msg))

    def recv(self, timeout_ms: int | None) -> Any | None:
        if timeout_ms is not None and not self.sock.poll(timeout_ms):
            return None
        data = self.sock.recv()
        try:
            return codec.decode(data)
        except RemoteProtocolError as exc:
            # Never drop a request silently: whoever waits for it gets an error at once.
            rid = _request_id_of(data)
            log.warning("worker: cannot decode a message from the node (request %s): %s",
                        rid, exc)
            if rid is not None:
                self.send(error(rid, exc.kind, f"the worker cannot decode the request: {exc}"))
            return None


class _RequestId(msgspec.Struct):
    request_id: str | None = None


def _request_id_of(data: bytes) -> str | None:
    """The request id of a frame that did not decode as a whole, if it has a readable one."""
    try:
        rid = msgspec.msgpack.decode(data, type=_RequestId).request_id
    except Exception:  # only a best effort to answer the right request
        return None
    return rid if rid is not None and len(rid) <= 256 else None


class _Output:
    """Where one request's tokens, candidates and end go: messages to the node.

    Streamed text is sent at most every TOKEN_FLUSH_S per request (and always before a
    candidate ends), except a candidate's first text, which leaves at once (time to
    first token): one message per token costs the node more CPU than it is worth.
    """

    def __init__(self, link: _Link, msg: WorkGenerate) -> None:
        self.link = link
        self.rid = msg.request_id
        self.stream = msg.stream
        self._pending: dict[int, list[str]] = {}
        self._started: set[int] = set()
        self._last_flush = time.monotonic()

    def _flush(self, index: int) -> None:
        parts = self._pending.pop(index, None)
        if parts:
            self.link.send(WorkToken(request_id=self.rid, index=index, text="".join(parts)))

    def on_token(self, index: int, text: str) -> None:
        self._pending.setdefault(index, []).append(text)
        if index not in self._started:
            self._started.add(index)
            self._flush(index)
            return
        now = time.monotonic()
        if now - self._last_flush >= TOKEN_FLUSH_S:
            for i in list(self._pending):
                self._flush(i)
            self._last_flush = now

    def on_candidate(self, index: int, cand: Candidate) -> None:
        self._flush(index)
        self.link.send(WorkCandidate(request_id=self.rid, index=index, candidate=cand))

    def on_done(self, exc: ZswarmError | None, evictions: int = 0) -> None:
        self.link.send(WorkDone(request_id=self.rid, cache_evictions=evictions) if exc is None
                       else error(self.rid, exc.kind, str(exc)))

    def failed(self, exc: BaseException) -> None:
        """The engine raised something of its own (a bug or a library error)."""
        self.link.send(error(self.rid, "inference", f"engine failed: {exc}"))


def _serve_one(link: _Link, engine: Engine, msg: WorkGenerate, parent_pid: int) -> None:
    """One request at a time (an engine without a batcher); between tokens, a look at
    the socket for WorkCancel, and other requests are refused as busy. A node that died
    stops the request too (nobody is left to read it)."""
    rid = msg.request_id
    cancelled = False

    def should_stop() -> bool:
        nonlocal cancelled
        if _parent_gone(parent_pid):
            cancelled = True
        while not cancelled:
            other = link.recv(0)
            if other is None:
                return False
            if isinstance(other, WorkCancel) and other.request_id in (rid, "*"):
                cancelled = True
            elif isinstance(other, WorkGenerate):
                link.send(Error(request_id=other.request_id, kind="overloaded",
                                message="worker is busy"))
        return cancelled

    out = _Output(link, msg)
    try:
        if msg.score is not None:
            _score(link, engine, msg.request, msg.score, rid)
            return
        engine.generate(msg.request, on_token=out.on_token if msg.stream else None,
                        on_candidate=out.on_candidate, should_stop=should_stop)
    except ZswarmError as exc:
        out.on_done(exc)
        return
    except (RuntimeError, ValueError, MemoryError) as exc:
        out.failed(exc)
        return
    out.on_done(None)


def _serve_batched(link: _Link, engine: Any, parent_pid: int) -> None:
    """Many requests at once (engines/batching.py): between steps, every message waiting
    on the socket is taken (new requests join the batch, cancels stop theirs), then
    one step decodes a token of every running request."""
    batcher = engine.batcher
    outputs: dict[str, _Output] = {}
    reported = [engine.cache.evictions]

    def ended(out: _Output) -> Callable[[ZswarmError | None], None]:
        def done(exc: ZswarmError | None) -> None:
            outputs.pop(out.rid, None)
            evictions = engine.cache.evictions - reported[0]
            reported[0] = engine.cache.evictions
            out.on_done(exc, evictions)
        return done

    while not _parent_gone(parent_pid):
        timeout = 0 if batcher.busy else 1000
        while link.sock.poll(timeout):
            timeout = 0
            msg = link.recv(None)
            if isinstance(msg, WorkGenerate):
                if msg.score is not None:
                    _serve_one(link, engine, msg, parent_pid)
                elif msg.request_id in outputs or len(outputs) >= batcher.max_jobs:
                    link.send(Error(request_id=msg.request_id, kind="overloaded",
                                    message=f"worker is busy ({len(outputs)} requests)"))
                else:
                    out = outputs[msg.request_id] = _Output(link, msg)
                    engine.submit(msg.request_id, msg.request,
                                  on_token=out.on_token if msg.stream else None,
                                  on_candidate=out.on_candidate, on_done=ended(out))
            elif isinstance(msg, WorkCancel):
                if msg.request_id == "*shutdown*":
                    return
                batcher.cancel(msg.request_id)
        if batcher.busy:
            try:
                batcher.step()
            except (RuntimeError, ValueError, MemoryError) as exc:
                log.error("worker: the batch failed: %s", exc)
                for out in list(outputs.values()):
                    out.failed(exc)
                outputs.clear()
                batcher.reset()
                engine.clear_cache()


def _score(link: _Link, engine: Engine, request: GenerateRequest, texts: tuple[str, ...],
           rid: str) -> None:
    """Score each text as the answer: a WorkCandidate each with its mean log-probability
    (the first pass leaves the prompt in the prompt cache; the others decode their
    answers only)."""
    score = getattr(engine, "score", None)  # a plugin engine may not score: None
    for k, text in enumerate(texts):
        mean = score(request, text) if score is not None else None
        link.send(WorkCandidate(request_id=rid, index=k, candidate=Candidate(
            text=text, finish_reason="stop", mean_logprob=mean)))
    link.send(WorkDone(request_id=rid))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zswarm-worker")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True, help="ModelConfig as JSON")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--system", default="",
                        help="the node's default system prompt (the warm-up's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s {args.name}: %(message)s")
    parent_pid = int(os.environ.get("ZSWARM_NODE_PID", os.getppid()))
    if _parent_gone(parent_pid):
        return 0
    model_cfg = msgspec.json.decode(args.model.encode(), type=ModelConfig)
    if model_cfg.memory_limit_mib > 0:
        limit = model_cfg.memory_limit_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    link = _Link(args.endpoint, args.name)
    from zswarm.engines.loader import load_engine

    try:
        engine = load_engine(model_cfg, threads=args.threads)
    except ZswarmError as exc:
        link.send(error(None, exc.kind, str(exc)))
        link.sock.close(linger=1000)
        return 3
    warm = getattr(engine, "warm", None)  # optional (engines/llamacpp.py has one)
    if warm is not None:
        warm(args.system)
    batcher = getattr(engine, "batcher", None)
    link.send(WorkReady(worker=args.name, model_id=engine.model_id, pid=os.getpid(),
                        slots=batcher.max_jobs if batcher is not None else 1))
    if getattr(engine, "batcher", None) is not None:
        _serve_batched(link, engine, parent_pid)
    else:
        while not _parent_gone(parent_pid):
            msg = link.recv(1000)
            if isinstance(msg, WorkGenerate):
                _serve_one(link, engine, msg, parent_pid)
            elif isinstance(msg, WorkCancel) and msg.request_id == "*shutdown*":
                break
    engine.close()
    link.sock.close(linger=1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
