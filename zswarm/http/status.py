"""The status page: this node, its peers and its recent requests, live in a browser.

Owns ``GET /`` and its two files (package data in http/static/: plain HTML, CSS and
JS, no build step, no CDN - the LAN may have no internet) and ``GET /v1/status``,
the JSON snapshot the page polls every second. The page's files hold no data and
are served without the API key; /v1/status is behind it like every other route,
and the page asks for the key when the node answers 401. ``[http] status_page =
false`` turns both off (404).

Everything shown comes from peers or clients and is untrusted: the page writes it
with ``textContent`` only, never as HTML, and the Content-Security-Policy allows
no script but the page's own.
"""

from __future__ import annotations

import time
from functools import cache
from importlib.resources import files
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from zswarm.core.messages import Report
from zswarm.core.peers import count_states, endpoint_host
from zswarm.http.base import HttpNode
from zswarm.http.openai import ApiError
from zswarm.http.responses import json_safe
from zswarm.runtime.stats import RequestRecord

#: the kinds of dropped frames /v1/status lists (the page shows the first three)
DROPS_SHOWN = 8
#: URL path -> (file in http/static/, media type); public: they hold no data
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


@cache
def _read(name: str) -> bytes:
    return (files("zswarm.http") / "static" / name).read_bytes()


def _enabled(node: HttpNode) -> None:
    if not node.config.http.status_page:
        raise ApiError(404, "the status page is off ([http] status_page = false)",
                       code="not_found")


async def page(request: Request) -> Response:
    _enabled(request.app.state.node)
    name, media_type = PAGE_FILES[request.url.path]
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


async def status(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    _enabled(node)
    # json_safe: a non-finite score must not turn the page into a 500 (JSON has no NaN)
    return JSONResponse(json_safe(snapshot(node)), headers={"Cache-Control": "no-store"})


def snapshot(node: HttpNode) -> dict[str, Any]:
    """What the page shows, as JSON: node, load, peers (with counts), requests, events."""
    ctx = node.ctx
    card = ctx.card
    stats = ctx.stats
    peers = node.peers.peers()
    return {
        "now": time.time(),
        "node": {**msgspec.to_builtins(card), "address": endpoint_host(card.rpc),
                 "state": ctx.state, "federation": bool(card.pub),
                 "discovery": ctx.config.federation.discovery if card.pub else "",
                 "strategy": ctx.config.consensus.strategy,
                 "uptime_s": round(time.time() - stats.started_at, 1)},
        "load": msgspec.to_builtins(ctx.load()),
        "models": [{"model_id": r.model_id, "name": r.name, "state": r.state,
                    "error": r.error, "estimate_mib": r.estimate_mib, "loads": r.loads,
                    "load_ms": round(r.load_s * 1000, 1),
                    "pinned": r.entry.pinned, "keep_alive_s": r.entry.keep_alive_s,
                    "in_use": r.users} for r in ctx.models.residents.values()],
        "memory": {"estimate_mib": ctx.models.loaded_mib(),
                   "budget_mib": ctx.models.budget_mib},
        "totals": {"tokens_generated": stats.tokens_generated,
                   "prompt_tokens": stats.prompt_tokens,
                   "prompt_tokens_cached": stats.prompt_tokens_cached,
                   "prompt_cache_hits": stats.prompt_cache_hits,
                   "prompt_cache_evictions": stats.prompt_cache_evictions,
                   "votes_sent": stats.votes_sent,
                   "votes_received": stats.votes_received,
                   "frames_dropped": sum(ctx.drops.counts.values()),
                   # what they were: (where, why, how many), most first
                   "frames_dropped_by": [
                       {"where": where, "reason": reason, "count": count}
                       for (where, reason), count in ctx.drops.counts.most_common(DROPS_SHOWN)]},
        # confidence's calibration: each model's learned lean on lettered questions
        "calibration": priors.snapshot() if (priors := node.coordinator.priors) else {},
        "peer_counts": count_states(p.state for p in peers),
        "peers": [msgspec.to_builtins(p) for p in peers],
        "requests": [_record(r) for r in reversed(stats.recent)],
        "events": [{"at": e.at, "level": e.level, "text": e.text}
                   for e in reversed(stats.events)],
    }


def _record(r: RequestRecord) -> dict[str, Any]:
    return {"at": r.at, "question": r.question, "strategy": r.strategy, "n": r.n,
            "answer": r.answer, "error": r.error,
            "report": _report(r.report) if r.report is not None else None}


def _report(report: Report) -> dict[str, Any]:
    """What the page shows of a report (kept slim by ``NodeStats.asked``)."""
    return {
        "strategy": report.strategy, "winner": report.winner, "agreement": report.agreement,
        "expected": report.expected, "budget": report.budget, "waves": report.waves,
        "stop": report.stop, "timings": report.timings, "note": report.note,
        "candidates": [{"node": c.node, "worker": c.worker, "text": c.text,
                        "score": c.score, "finish_reason": c.finish_reason,
                        "latency_ms": c.latency_ms, "tokens": c.tokens,
                        "answer_key": c.answer_key, "model_id": c.model_id}
                       for c in report.candidates],
        "participants": [msgspec.to_builtins(p) for p in report.participants],
    }
