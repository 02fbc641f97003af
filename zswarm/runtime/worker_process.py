"""The inside of one worker process: load an engine, serve WorkGenerate over zmq ipc.

Run as ``python -m zswarm.runtime.worker_process``; started and supervised by
runtime/workers.py. Blocking code on purpose (no trio): one request at a time,
and between tokens a non-blocking look at the socket for WorkCancel, so
cancellation stops the generation within one token.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
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


def _serve_one(link: _Link, engine: Engine, msg: WorkGenerate) -> None:
    rid = msg.request_id
    cancelled = False

    def should_stop() -> bool:
        nonlocal cancelled
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

    # Streamed text is sent at most every TOKEN_FLUSH_S per candidate (and always before
    # the candidate ends): one message per token costs the node more CPU than it is worth.
    pending: dict[int, list[str]] = {}
    last_flush = time.monotonic()

    def flush(index: int) -> None:
        parts = pending.pop(index, None)
        if parts:
            link.send(WorkToken(request_id=rid, index=index, text="".join(parts)))

    started: set[int] = set()  # candidates whose first text has gone out

    def on_token(index: int, text: str) -> None:
        nonlocal last_flush
        pending.setdefault(index, []).append(text)
        if index not in started:  # the first token leaves at once (time to first token)
            started.add(index)
            flush(index)
            return
        now = time.monotonic()
        if now - last_flush >= TOKEN_FLUSH_S:
            for i in list(pending):
                flush(i)
            last_flush = now

    def on_candidate(index: int, cand: Candidate) -> None:
        flush(index)
        link.send(WorkCandidate(request_id=rid, index=index, candidate=cand))

    try:
        if msg.score is not None:
            _score(link, engine, msg.request, msg.score, rid)
            return
        engine.generate(
            msg.request,
            on_token=on_token if msg.stream else None,
            on_candidate=on_candidate,
            should_stop=should_stop,
        )
    except ZswarmError as exc:
        link.send(error(rid, exc.kind, str(exc)))
        return
    except (RuntimeError, ValueError, MemoryError) as exc:
        link.send(error(rid, "inference", f"engine failed: {exc}"))
        return
    link.send(WorkDone(request_id=rid))


def _score(link: _Link, engine: Engine, request: GenerateRequest, text: str, rid: str) -> None:
    """Score ``text`` as the answer: one WorkCandidate with its mean log-probability."""
    score = getattr(engine, "score", None)  # a plugin engine may not score: None
    mean = score(request, text) if score is not None else None
    link.send(WorkCandidate(request_id=rid, index=0, candidate=Candidate(
        text=text, finish_reason="stop", mean_logprob=mean)))
    link.send(WorkDone(request_id=rid))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zswarm-worker")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True, help="ModelConfig as JSON")
    parser.add_argument("--threads", type=int, default=1)
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
    link.send(WorkReady(worker=args.name, model_id=engine.model_id, pid=os.getpid()))
    while not _parent_gone(parent_pid):
        msg = link.recv(1000)
        if isinstance(msg, WorkGenerate):
            _serve_one(link, engine, msg)
        elif isinstance(msg, WorkCancel) and msg.request_id == "*shutdown*":
            break
    engine.close()
    link.sock.close(linger=1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
