"""The node's HTTP shim: a Starlette app, served by hypercorn's connection handler (http/server.py).

Owns the app (routes, Host check, API-key auth, CORS, request counting, error
handlers) and the small routes (/v1/models, /health, /metrics, the federation routes).
The completion routes live in http/completions.py, request and response shapes in
http/openai.py; what a request means is the Coordinator's.
"""

from __future__ import annotations

import hmac
import logging
import socket
from typing import Annotated

import msgspec
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zswarm.core import catalog
from zswarm.core.ids import new_request_id
from zswarm.core.messages import GenerateRequest
from zswarm.core.peers import count_states, endpoint_host
from zswarm.errors import Overloaded, ZswarmError
from zswarm.http import openai, responses
from zswarm.http.base import HttpNode, error_response, from_zswarm, read_body, retry_after
from zswarm.http.completions import chat_completions, completions
from zswarm.http.metrics import metrics_text, registry
from zswarm.http.openai import ApiError
from zswarm.http.status import PAGE_FILES, page, status
from zswarm.net.addresses import interfaces
from zswarm.net.guard import QuietLog
from zswarm.net.security import http_token
from zswarm.runtime.serving import serve_vote

log = logging.getLogger(__name__)
#: clients' mistakes are logged at most once per route and status every 10 s
quiet = QuietLog(log)

# --- middleware -------------------------------------------------------------------------


#: paths served without the API key: /health (for load balancers) and the status page's
#: own files (no data: the page fetches /v1/status with the key)
OPEN_PATHS = frozenset({"/health", *PAGE_FILES})


class ApiKeyAuth:
    """401 without ``Authorization: Bearer <key>`` when keys are configured (OPEN_PATHS stay open)."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = [f"Bearer {k}".encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if any(hmac.compare_digest(given, key) for key in self.keys):
            await self.app(scope, receive, send)
            return
        err = ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>: "
                       "one of [http] api_keys, or in a keyed swarm the token "
                       "`zswarm http-token --config swarm.toml` prints)", code="invalid_api_key")
        await error_response(err)(scope, receive, send)


class HostCheck:
    """403 for a request whose Host header names none of this node's names.

    A web page the user opens can make the browser send requests to a LAN address
    under the page's own host name (DNS rebinding); those name a foreign host and stop
    here. Requests without a Host header (HTTP/1.0 tools) pass.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"host")
        host = None if raw is None else host_name(raw.decode("latin-1"))
        if host is None or host in self.allowed:
            await self.app(scope, receive, send)
            return
        err = ApiError(403, f"Host {host[:100]!r} is not one of this node's names; add it to "
                       "[http] allowed_hosts if this node is reached by it", code="bad_host")
        await error_response(err)(scope, receive, send)


def host_name(header: str) -> str:
    """'Example.local.:8080' -> 'example.local'; '[::1]:80' -> '::1'."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0].rstrip(".") if ":" in text else text.rstrip(".")


def own_hosts(node: HttpNode) -> frozenset[str]:
    """The names a client of this node may use: its address (every interface's, when bound
    to 0.0.0.0), loopback, the machine's name."""
    machine = socket.gethostname().lower()
    bound = endpoint_host(node.ctx.card.rpc)
    addresses = [a for a, _ in interfaces().values()] if bound == "0.0.0.0" else [bound]
    return frozenset({*addresses, "127.0.0.1", "localhost", "::1", machine, f"{machine}.local",
                      *(host_name(h) if h != "*" else h
                        for h in node.config.http.allowed_hosts)})


def api_keys(node: HttpNode) -> frozenset[str]:
    """Accepted bearer tokens: the configured API keys and, in a keyed swarm, the token
    derived from the swarm key (``zswarm http-token``): a keyed node is never open."""
    keys = set(node.config.api_keys())
    if node.ctx.key is not None:
        keys.add(http_token(node.ctx.key))
    return frozenset(keys)


class FinishBody:
    """Read what is left of a request body before answering, so the connection stays usable.

    A route that answers without reading the body (404, 405, 415, 401) would otherwise
    leave bytes unread; hypercorn then closes the connection after the response without
    saying so, and a keep-alive client's next request fails with no response at all
    (found by bench/fuzz_node.py). Up to the body cap and the body timeout the rest is
    read and dropped; beyond that the response says ``Connection: close``.
    """

    def __init__(self, app: ASGIApp, cap: int, timeout_s: float) -> None:
        self.app = app
        self.cap = cap
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        done = False  # the whole body has been received (or the client is gone)

        async def tracking_receive() -> Message:
            nonlocal done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def finishing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                read = 0
                with trio.move_on_after(self.timeout_s):
                    while not done and read <= self.cap:
                        read += len((await tracking_receive()).get("body", b""))
                if not done:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracking_receive, finishing_send)


class CountRequests:
    """Counts answered HTTP requests by route and status for /metrics."""

    def __init__(self, app: ASGIApp, node: HttpNode) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope["path"] if scope["path"] in _KNOWN else "other"
            self.node.ctx.stats.http_requests[(route, status)] += 1


# --- helpers ----------------------------------------------------------------------------


async def models(request: Request) -> Response:
    """Every model of the swarm once (this node's first), in OpenAI's shape; ``zswarm``
    says its file name, the names nodes give it, and which nodes hold it in which state
    (core/catalog.py)."""
    node: HttpNode = request.app.state.node
    node.ready()
    return JSONResponse({"object": "list", "data": [
        {"id": model, "object": "model", "created": 0, "owned_by": f"zswarm:{holders[0].name}",
         "zswarm": {"name": catalog.file_name(model),
                    "names": sorted({h.model_name for h in holders if h.model_name}),
                    "holders": [{"node": h.name, "node_id": h.node_id, "state": h.state}
                                for h in holders]}}
        for model, holders in node.catalog().items()]})


async def health(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    refusal = node.ctx.refusal()
    load = node.ctx.load()
    if refusal is None and node.ctx.models.unavailable():
        refusal = Overloaded("no worker has the model loaded (starting or restarting)")
    if refusal is not None:
        status = "unavailable" if type(refusal) is Overloaded else refusal.kind
        return JSONResponse({"status": status, "reason": str(refusal)}, status_code=503,
                            headers={"Retry-After": retry_after(refusal)})
    return JSONResponse({"status": "ready", "workers_ready": load.workers_ready,
                         "queue_depth": load.queue_depth, "peers": _peer_counts(node)})


def _peer_counts(node: HttpNode) -> dict[str, int]:
    return count_states(p.state for p in node.peers.peers())


# --- federation routes ------------------------------------------------------------------


class VoteIn(msgspec.Struct):
    """POST /v1/federation/vote: the JSON form of a VoteRequest."""

    request: GenerateRequest
    #: None: the node's default ([scheduler] default_deadline_ms)
    deadline_ms: int | None = None
    request_id: Annotated[str, msgspec.Meta(max_length=256)] = ""
    #: the model the caller expects ("": the one this node serves)
    model_id: Annotated[str, msgspec.Meta(max_length=256)] = ""


async def federation_vote(request: Request) -> Response:
    """The VoteRequest of the ZMQ protocol as JSON: served like a ZeroMQ vote (runtime/serving.py)."""
    node: HttpNode = request.app.state.node
    body = await read_body(request, node.config.http)
    vote_in = openai.decode(body, VoteIn)
    assert isinstance(vote_in, VoteIn)
    coordinator = node.ready()
    try:
        with node.ctx.requests.hold():  # a drain waits for it, like any request
            vote = await serve_vote(node.ctx, coordinator,
                                    request_id=vote_in.request_id or new_request_id(),
                                    request=vote_in.request, deadline_ms=vote_in.deadline_ms,
                                    model_id=vote_in.model_id)
    except ZswarmError as exc:
        raise from_zswarm(exc) from None
    return JSONResponse(responses.json_safe(msgspec.to_builtins(vote)))


async def federation_health(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    return JSONResponse({"node": msgspec.to_builtins(node.ctx.card),
                         "load": msgspec.to_builtins(node.ctx.load()),
                         "peers": _peer_counts(node)})


async def federation_peers(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    return JSONResponse(msgspec.to_builtins(node.peers.peers()))


async def metrics(request: Request) -> Response:
    body, ctype = metrics_text(request.app.state.metrics)
    return Response(body, media_type=ctype)


# --- the app ------------------------------------------------------------------------------

ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/federation/vote", federation_vote, methods=["POST"]),
    Route("/v1/federation/health", federation_health, methods=["GET"]),
    Route("/v1/federation/peers", federation_peers, methods=["GET"]),
    Route("/v1/status", status, methods=["GET"]),
    *(Route(path, page, methods=["GET"]) for path in PAGE_FILES),
]
_KNOWN = {r.path for r in ROUTES}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status < 500 and exc.status not in (401, 404):
        quiet.info(f"{request.url.path} {exc.status}", "%s %s: %d %s", request.method,
                   request.url.path, exc.status, exc.message)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else None
    return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: "
                                   f"{exc.detail}", code=code))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s: internal error", request.method, request.url.path)
    return error_response(ApiError(500, "internal error (logged on the node)",
                                   type_="server_error", code="internal"))


def build_app(node: HttpNode) -> Starlette:
    middleware = [Middleware(FinishBody, cap=node.config.http.max_body_bytes,
                             timeout_s=node.config.http.body_timeout_s),
                  Middleware(CountRequests, node=node)]
    if node.config.http.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=node.config.http.cors_origins,
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    middleware.append(Middleware(HostCheck, allowed=own_hosts(node)))
    middleware.append(Middleware(ApiKeyAuth, keys=api_keys(node)))
    app = Starlette(routes=ROUTES, middleware=middleware, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected})
    app.state.node = node
    app.state.metrics = registry(node)
    return app
