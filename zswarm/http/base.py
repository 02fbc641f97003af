"""What every HTTP route shares: the node's handles, reading bodies, mapping errors to statuses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse

from zswarm.config import Config, HttpConfig
from zswarm.errors import ZswarmError
from zswarm.http.openai import ApiError
from zswarm.runtime.context import NodeContext, Peers
from zswarm.runtime.coordinator import Coordinator

#: zswarm error kind -> HTTP status (anything else is a 500 server_error)
STATUS = {"protocol": 422, "overloaded": 503, "loading": 503, "draining": 503,
          "deadline": 504, "no_quorum": 503,
          "unavailable": 503, "model_not_found": 404, "duplicate_request": 409,
          "worker_crashed": 503}


@dataclass(eq=False)
class HttpNode:
    """What the HTTP routes need from the node (built by the composition root, zswarm/node.py)."""

    ctx: NodeContext
    coordinator: Coordinator
    peers: Peers
    #: runs streams' generations, which outlive the request handler
    nursery: trio.Nursery
    #: the Prometheus registry of this node's /metrics (made on first scrape)
    registry: Any = None

    @property
    def config(self) -> Config:
        return self.ctx.config

    def ready(self) -> Coordinator:
        """The coordinator, or 503 while the model loads or the node drains."""
        refusal = self.ctx.refusal()
        if refusal is not None:
            raise from_zswarm(refusal)
        return self.coordinator


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def from_zswarm(exc: ZswarmError) -> ApiError:
    status = STATUS.get(exc.kind, 500)
    headers = {}
    if status == 503:
        headers["Retry-After"] = str(max(1, math.ceil(getattr(exc, "retry_after_s", 1.0))))
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    return ApiError(status, str(exc), type_=type_, code=exc.kind, headers=headers,
                    param=getattr(exc, "field", None))


async def read_body(request: Request, limits: HttpConfig) -> bytes:
    """The JSON body: 415 for another type, 413 above the cap, 408 if it takes too long."""
    cap, timeout_s = limits.max_body_bytes, limits.body_timeout_ms / 1000
    # no default: a cross-site "simple" POST (text/plain, or none) must not be read as JSON
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype.lower() != "application/json":
        raise ApiError(415, f"expected Content-Type: application/json, got {ctype!r}")
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > cap:
        raise ApiError(413, f"request body of {length} bytes exceeds the limit of {cap}")
    body = bytearray()
    with trio.move_on_after(timeout_s):
        async for part in request.stream():
            body += part
            if len(body) > cap:
                raise ApiError(413, f"request body exceeds the limit of {cap} bytes")
        return bytes(body)
    raise ApiError(408, f"the request body did not arrive within {timeout_s:.0f} s",
                   headers={"Connection": "close"})
