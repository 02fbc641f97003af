"""Counters and histograms a node keeps about itself (rendered by http/metrics.py).

Plain numbers, no Prometheus import: the runtime records events here and the HTTP
shim turns them into Prometheus text at scrape time.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import msgspec

from zswarm.core.messages import Report

#: the status page shows this many recent requests and swarm events
RECENT_REQUESTS = 20
RECENT_EVENTS = 50
#: a recorded question or answer is cut to this many characters
RECORD_CHARS = 300


@dataclass
class Histogram:
    """Cumulative-bucket histogram (Prometheus style); ``buckets`` are upper bounds."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, c in zip(self.buckets, self.counts, strict=True):
            running += c
            out.append((bound, running))
        return out


class RateMeter:
    """Tokens generated per second over the last ``window_s`` seconds (for heartbeats)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()

    def add(self, tokens: int) -> None:
        now = time.monotonic()
        self._trim(now)  # bounded even when nobody asks for the rate
        self._events.append((now, tokens))

    def rate(self) -> float:
        self._trim(time.monotonic())
        return round(sum(t for _, t in self._events) / self.window_s, 2)

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()


@dataclass(frozen=True)
class RequestRecord:
    """One answered (or failed) request, for the status page."""

    at: float  # unix time it started
    question: str
    strategy: str
    n: int
    answer: str = ""
    report: Report | None = None
    error: str = ""


@dataclass(frozen=True)
class SwarmEvent:
    """A peer joined, died, left, was refused...: what the log says, for the status page."""

    at: float  # unix time
    level: str  # "info", "warning", "error"
    text: str


def _cut(text: str) -> str:
    return text if len(text) <= RECORD_CHARS else text[:RECORD_CHARS - 1] + "…"


def _slim(report: Report) -> Report:
    """The report as kept: candidates' text cut, no per-token log-probabilities (which
    can be thousands per candidate), so the kept requests stay small."""
    return msgspec.structs.replace(report, candidates=[
        msgspec.structs.replace(c, text=_cut(c.text), token_logprobs=None)
        for c in report.candidates])


@dataclass
class NodeStats:
    #: (route, status code) -> requests answered over HTTP
    http_requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: error kind -> requests that failed with it (HTTP and ZMQ clients)
    errors: Counter[str] = field(default_factory=Counter)
    tokens_generated: int = 0
    #: prompt tokens of the local candidates, and how many the workers' caches held
    prompt_tokens: int = 0
    prompt_tokens_cached: int = 0
    #: local candidates whose prompt began with a cached prefix; prompts the caches dropped
    prompt_cache_hits: int = 0
    prompt_cache_evictions: int = 0
    #: the recent rate of tokens_generated
    tokens: RateMeter = field(default_factory=RateMeter)
    votes_sent: int = 0
    votes_received: int = 0
    #: candidates of structured asks that were cut short or not of the shape (not counted)
    misshapen: int = 0
    #: outcome (timeout, failed, cancelled) -> votes sent that did not answer
    votes_unanswered: Counter[str] = field(default_factory=Counter)
    agreement: Histogram = field(default_factory=lambda: Histogram(
        (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)))
    vote_rtt_s: Histogram = field(default_factory=lambda: Histogram(
        (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)))

    recent: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))
    events: deque[SwarmEvent] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    started_at: float = field(default_factory=time.time)

    def asked(self, t0: float, question: str, strategy: str, n: int, *, answer: str = "",
              report: Report | None = None, error: str = "") -> None:
        self.recent.append(RequestRecord(t0, _cut(question), strategy, n, _cut(answer),
                                         _slim(report) if report is not None else None,
                                         _cut(error)))

    def event(self, level: str, text: str) -> None:
        self.events.append(SwarmEvent(time.time(), level, _cut(text)))

    def generated(self, tokens: int, *, prompt_tokens: int = 0, cached_tokens: int = 0) -> None:
        self.tokens_generated += tokens
        self.prompt_tokens += prompt_tokens
        self.prompt_tokens_cached += cached_tokens
        self.prompt_cache_hits += cached_tokens > 0
        self.tokens.add(tokens)
