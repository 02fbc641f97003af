"""What every HTTP route shares: the node's handles, reading bodies, mapping errors to statuses."""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse

from zswarm.config import Config, HttpConfig
from zswarm.core import catalog
from zswarm.errors import (
    DeadlineExceeded,
    DuplicateRequest,
    ModelNotFound,
    NoQuorum,
    Overloaded,
    PeerUnavailable,
    RemoteProtocolError,
    WorkerCrashed,
    ZswarmError,
)
from zswarm.http.openai import ApiError
from zswarm.runtime.context import NodeContext, Peers
from zswarm.runtime.coordinator import Coordinator

#: zswarm error -> HTTP status; a subclass has its parent's (Loading and Draining are
#: Overloaded: 503) unless listed; anything else is a 500 server_error
STATUS: dict[type[ZswarmError], int] = {
    RemoteProtocolError: 422, Overloaded: 503, DeadlineExceeded: 504,
    NoQuorum: 503, PeerUnavailable: 503, ModelNotFound: 404, DuplicateRequest: 409,
    WorkerCrashed: 503}


def status_of(exc: ZswarmError) -> int:
    return next((STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS), 500)


@dataclass(eq=False)
class HttpNode:
    """What the HTTP routes need from the node (built by the composition root, zswarm/node.py)."""

    ctx: NodeContext
    coordinator: Coordinator
    peers: Peers
    #: runs streams' generations, which outlive the request handler
    nursery: trio.Nursery

    @property
    def config(self) -> Config:
        return self.ctx.config

    def catalog(self) -> dict[str, list[catalog.Holder]]:
        """Every model of the swarm with its holders, this node's models first
        (core/catalog.py)."""
        card = self.ctx.card
        mine = {r.model_id: catalog.Holder(card.node_id, card.name, r.state, r.name)
                for r in self.ctx.models.residents.values()}
        return catalog.catalog(mine, self.peers.models())

    def ready(self) -> Coordinator:
        """The coordinator, or 503 while the model loads or the node drains."""
        refusal = self.ctx.refusal()
        if refusal is not None:
            raise from_zswarm(refusal)
        return self.coordinator


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def retry_after(exc: ZswarmError) -> str:
    """The Retry-After header of a refusal: its own ``retry_after_s``, at least 1 s."""
    return str(max(1, math.ceil(getattr(exc, "retry_after_s", 1.0))))


def from_zswarm(exc: ZswarmError) -> ApiError:
    status = status_of(exc)
    headers = {}
    if status == 503:
        headers["Retry-After"] = retry_after(exc)
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    return ApiError(status, str(exc), type_=type_, code=exc.kind, headers=headers,
                    param=getattr(exc, "field", None))


async def read_body(request: Request, limits: HttpConfig) -> bytes:
    """The JSON body: 415 for another type, 413 above the cap, 408 if it takes too long."""
    cap, timeout_s = limits.max_body_bytes, limits.body_timeout_s
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
