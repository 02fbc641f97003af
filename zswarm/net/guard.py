"""The one rule for input from outside: a bad message costs that message, never the loop.

Every loop that reads from the network or from a worker (RPC, heartbeat SUB, vote
links, the worker link, mDNS handlers) handles each message inside
``with MessageGuard(drops) as guard:``. Whatever the handling raises - the codec's
RemoteProtocolError, a library error on a peer's data, a bug - is caught there,
counted by socket and reason (``zswarm_frames_dropped_total{socket, reason}``) and
logged at most once per reason every ten seconds; the caller may then answer the
sender with ``guard.error``. Cancellation and other BaseExceptions pass through.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

from zswarm.errors import RemoteProtocolError

log = logging.getLogger(__name__)

#: at most this many distinct (socket, reason) pairs are counted (names come from us)
MAX_COUNTERS = 256


class FrameDrops:
    """A node's tally of dropped frames, by (socket, reason); read by /metrics."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, socket: str, reason: str) -> None:
        key = (socket, reason)
        if key in self.counts or len(self.counts) < MAX_COUNTERS:
            self.counts[key] += 1
        else:
            self.counts[(socket, "other")] += 1

    def counter(self, socket: str) -> DropCounter:
        return DropCounter(socket, sink=self)


@dataclass
class DropCounter:
    """Dropped frames of one socket by reason; logs each reason at most every ``every_s``."""

    where: str
    every_s: float = 10.0
    sink: FrameDrops | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._quiet = QuietLog(log, self.every_s)

    def drop(self, reason: str, detail: str = "", *, exc: BaseException | None = None) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.sink is not None:
            self.sink.add(self.where, reason)
        self._quiet.log(logging.WARNING, reason, "%s: dropped a %s frame%s", self.where, reason,
                        f": {detail[:300]}" if detail else "", exc_info=exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class MessageGuard:
    """``with MessageGuard(drops) as guard: handle(frame)``; then ``guard.error`` if it failed."""

    def __init__(self, drops: DropCounter) -> None:
        self.drops = drops
        self.error: Exception | None = None

    def __enter__(self) -> MessageGuard:
        self.error = None
        return self

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # nothing happened, or a cancellation: let it through
        self.error = exc
        if isinstance(exc, RemoteProtocolError):
            self.drops.drop(exc.reason, str(exc))
        else:  # a library error on a peer's data, or a bug: still only this message's loss
            self.drops.drop("handler-error", repr(exc), exc=exc)
        return True


class QuietLog:
    """Log lines about what outsiders did, at most one per ``key`` every ``every_s``.

    A flood of bad requests costs a line per reason every ten seconds (with the number
    suppressed meanwhile), not a line per request (zeroconf's QuietLogger idea): a
    ``Budget`` of one line per window.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._budget = Budget(1, every_s)

    def info(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.INFO, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: object,
            exc_info: BaseException | None = None) -> None:
        allowed, more = self._budget.allow(key, time.monotonic())
        if allowed:
            self.logger.log(level, msg + (f" (and {more} more like it)" if more else ""),
                            *args, exc_info=exc_info)


class Budget:
    """At most ``burst`` notes per key in any ``per_s`` window; the rest are counted.

    For what the swarm's changes write to the log and the status page's events: a flood
    of records or forged changes costs a few lines per kind, with the number left out
    said on the next line that is written.
    """

    def __init__(self, burst: int, per_s: float) -> None:
        self.burst = burst
        self.per_s = per_s
        self._times: dict[str, list[float]] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """(whether to write this one, how many were left out before it)."""
        times = [t for t in self._times.get(key, ()) if now - t < self.per_s]
        if len(times) >= self.burst:
            self._times[key] = times
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if key not in self._times and len(self._times) >= MAX_COUNTERS:
            self._times.clear()  # keys are ours, but never let them grow
            self._suppressed.clear()
        times.append(now)
        self._times[key] = times
        return True, self._suppressed.pop(key, 0)
