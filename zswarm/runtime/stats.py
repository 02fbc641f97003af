"""Counters and histograms a node keeps about itself (rendered by http/metrics.py).

Plain numbers, no Prometheus import: the runtime records events here and the HTTP
shim turns them into Prometheus text at scrape time.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field


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


@dataclass
class NodeStats:
    #: (route, status code) -> requests answered over HTTP
    http_requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    #: error kind -> requests that failed with it (HTTP and ZMQ clients)
    errors: Counter[str] = field(default_factory=Counter)
    tokens_generated: int = 0
    votes_sent: int = 0
    votes_received: int = 0
    #: outcome (timeout, failed, cancelled) -> votes sent that did not answer
    votes_unanswered: Counter[str] = field(default_factory=Counter)
    agreement: Histogram = field(default_factory=lambda: Histogram(
        (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)))
    vote_rtt_s: Histogram = field(default_factory=lambda: Histogram(
        (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)))
