"""What a node keeps of its recent requests stays small, whatever the requests were."""

from __future__ import annotations

from zswarm.core.messages import Report, ReportCandidate, TokenLogprob
from zswarm.runtime.stats import RECENT_REQUESTS, RECORD_CHARS, NodeStats


def test_kept_requests_are_bounded_and_slim():
    long = "word " * 2000
    cand = ReportCandidate(node="a", worker="w0", text=long, score=-0.1, finish_reason="length",
                           latency_ms=1.0, token_logprobs=[TokenLogprob("word", -0.1)] * 2000)
    report = Report(strategy="confidence", winner=0, agreement=1.0, candidates=[cand] * 4)
    stats = NodeStats()
    for i in range(RECENT_REQUESTS + 5):
        stats.asked(float(i), long, "confidence", 4, answer=long, report=report)
    assert len(stats.recent) == RECENT_REQUESTS and stats.recent[0].at == 5.0
    kept = stats.recent[-1]
    assert len(kept.question) == len(kept.answer) == RECORD_CHARS
    assert kept.report is not None and len(kept.report.candidates) == 4
    assert all(c.token_logprobs is None and len(c.text) == RECORD_CHARS
               for c in kept.report.candidates)
    assert kept.report.candidates[0].score == -0.1  # the rest of the report is kept
