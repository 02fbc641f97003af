"""The node's HTTP shim: a Starlette app served by hypercorn's trio worker in the node's trio run.

Owns the routes (OpenAI API, /health, /metrics, the federation routes), API-key
auth, CORS, the body size cap, the mapping of zswarm errors to HTTP statuses,
and cancelling a request's generation when its client goes away. Request and
response shapes live in http/openai.py; what a request means is the Coordinator's.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import hypercorn.config
import hypercorn.trio
import msgspec
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zswarm.config import Config
from zswarm.core.ids import new_request_id
from zswarm.core.messages import GenerateRequest, Load, NodeCard, Report
from zswarm.errors import ZswarmError
from zswarm.http import openai
from zswarm.http.metrics import metrics_text
from zswarm.http.openai import ApiError, Ask

if TYPE_CHECKING:
    from zswarm.runtime.coordinator import Coordinator
    from zswarm.runtime.federation import Federation

log = logging.getLogger(__name__)

#: zswarm error kind -> HTTP status (anything else is a 500 server_error)
STATUS = {"protocol": 422, "overloaded": 503, "deadline": 504, "no_quorum": 503,
          "unavailable": 503, "model_not_found": 404}


@dataclass
class HttpNode:
    """What the HTTP routes need from the node (set up by runtime/node.py)."""

    config: Config
    #: None while the workers load the model
    coordinator: Coordinator | None
    load: Callable[[], Load]
    nursery: trio.Nursery
    card: NodeCard | None = None
    federation: Federation | None = None
    #: the Prometheus registry of this node's /metrics (made on first scrape)
    registry: Any = None
    draining: bool = False
    #: completion requests being answered (streams until their last event)
    in_flight: int = 0

    def ready(self) -> Coordinator:
        """The coordinator, or 503 while the model loads or the node drains."""
        if self.coordinator is None:
            raise ApiError(503, "the node is loading its model", type_="server_error",
                           code="loading", headers={"Retry-After": "2"})
        if self.draining:
            raise ApiError(503, "the node is draining (shutting down)", type_="server_error",
                           code="draining", headers={"Retry-After": "5"})
        return self.coordinator


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def from_zswarm(exc: ZswarmError) -> ApiError:
    status = STATUS.get(exc.kind, 500)
    headers = {}
    if status == 503:
        headers["Retry-After"] = str(max(1, math.ceil(getattr(exc, "retry_after_s", 1.0))))
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    return ApiError(status, str(exc), type_=type_, code=exc.kind, headers=headers)


# --- middleware -------------------------------------------------------------------------


class ApiKeyAuth:
    """401 without ``Authorization: Bearer <key>`` when keys are configured (/health stays open)."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = [f"Bearer {k}".encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if any(hmac.compare_digest(given, key) for key in self.keys):
            await self.app(scope, receive, send)
            return
        err = ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                       code="invalid_api_key")
        await error_response(err)(scope, receive, send)


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
            if self.node.coordinator is not None:
                self.node.coordinator.stats.http_requests[(route, status)] += 1


# --- helpers ----------------------------------------------------------------------------


async def read_body(request: Request, cap: int) -> bytes:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype.lower() != "application/json":
        raise ApiError(415, f"expected Content-Type: application/json, got {ctype!r}")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise ApiError(413, f"request body of {length} bytes exceeds the limit of {cap}")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > cap:
            raise ApiError(413, f"request body exceeds the limit of {cap} bytes")
    return bytes(body)


def resolve_model(node: HttpNode, name: str) -> str | None:
    """The model id to ask for (None = this node's), or 404 if nobody serves it."""
    local = node.ready().pool.model_id
    if name in ("", "default", "zswarm", local, local.split("@")[0]):
        return None
    if node.federation is not None:
        for peer in node.federation.table.alive():
            if name in (peer.card.model_id, peer.card.model_id.split("@")[0]):
                return peer.card.model_id
    raise ApiError(404, f"model {name!r} is not served by this swarm (GET /v1/models)",
                   code="model_not_found", param="model")


async def until_disconnect(request: Request, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _headers(report: Report) -> dict[str, str]:
    return {"x-zswarm-strategy": report.strategy,
            "x-zswarm-nodes": ",".join(sorted({c.node for c in report.candidates}))}


# --- the OpenAI routes -----------------------------------------------------------------


async def _completions(request: Request, kind: str) -> Response:
    node: HttpNode = request.app.state.node
    node.ready()
    node.in_flight += 1  # a stream's generation is counted by its own task (see _stream)
    try:
        return await _answer(request, node, kind)
    finally:
        node.in_flight -= 1


async def _answer(request: Request, node: HttpNode, kind: str) -> Response:
    body = await read_body(request, node.config.http.max_body_bytes)
    shape = openai.ChatCompletionRequest if kind == "chat" else openai.CompletionRequest
    req = openai.decode(body, shape)
    ask = openai.to_ask(req, node.config)  # type: ignore[arg-type]
    model_id = resolve_model(node, ask.model)
    model = model_id or node.ready().pool.model_id
    rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + new_request_id()
    if ask.stream:
        return await _stream(request, node, ask, kind, rid, model, model_id)
    result: list[tuple[str, Report]] = []
    errors: list[ZswarmError] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_disconnect, request, nursery.cancel_scope)

        async def work() -> None:
            try:
                result.append(await _ask(node, ask, model_id, None))
            except ZswarmError as exc:
                errors.append(exc)
            nursery.cancel_scope.cancel()

        nursery.start_soon(work)
    if errors:
        raise from_zswarm(errors[0])
    if not result:
        log.info("%s: the client went away; generation cancelled", rid)
        return Response(status_code=499)
    _, report = result[0]
    return JSONResponse(openai.completion_object(kind, rid, model, report, ask.choices),
                        headers=_headers(report))


async def _ask(node: HttpNode, ask: Ask, model_id: str | None,
               on_token: Callable[[int, str], None] | None) -> tuple[str, Report]:
    coordinator = node.ready()
    try:
        return await coordinator.ask(
            ask.request, strategy=ask.strategy, deadline_s=ask.deadline_ms / 1000,
            on_token=on_token, model_id=model_id, peers=ask.peers)
    except ZswarmError as exc:
        coordinator.stats.errors[exc.kind] += 1
        raise


async def _stream(request: Request, node: HttpNode, ask: Ask, kind: str, rid: str, model: str,
                  model_id: str | None) -> Response:
    """Server-sent events: tokens as they come (one candidate), else the choices at the end."""
    send, receive = trio.open_memory_channel[tuple[str, Any]](math.inf)
    scope = trio.CancelScope()
    live = ask.request.n == 1

    def on_token(index: int, text: str) -> None:
        try:
            send.send_nowait(("token", text))
        except trio.BrokenResourceError:
            pass

    async def work() -> None:
        node.in_flight += 1  # until the generation ends, even after the response is sent
        try:
            with scope:
                try:
                    event: tuple[str, Any] = ("done", await _ask(node, ask, model_id,
                                                                 on_token if live else None))
                except ZswarmError as exc:
                    event = ("error", exc)
                with contextlib.suppress(trio.BrokenResourceError):  # the stream is gone
                    send.send_nowait(event)
        finally:
            send.close()
            node.in_flight -= 1

    node.nursery.start_soon(work)
    first: tuple[str, Any] | None = None
    with trio.CancelScope() as wait_scope:  # until the first event, or the client leaves
        async with trio.open_nursery() as nursery:
            nursery.start_soon(until_disconnect, request, wait_scope)
            try:
                first = await receive.receive()
            except trio.EndOfChannel:
                first = None
            nursery.cancel_scope.cancel()
    if first is None:
        scope.cancel()
        return Response(status_code=499)
    if first[0] == "error":
        raise from_zswarm(first[1])

    async def events() -> AsyncIterator[str]:
        try:
            yield _sse(openai.chunk(kind, rid, model, 0, role=True, text="" if kind == "chat"
                                    else None))
            event: tuple[str, Any] | None = first
            while event is not None:
                what, value = event
                if what == "token":
                    yield _sse(openai.chunk(kind, rid, model, 0, text=value))
                elif what == "error":  # after the stream began: an error event, then the end
                    err = from_zswarm(value)
                    yield _sse(err.body())
                else:
                    yield from_report(value[1])
                try:
                    event = await receive.receive()
                except trio.EndOfChannel:
                    event = None
            yield "data: [DONE]\n\n"
        finally:
            scope.cancel()  # the client went away (or we are done): stop the generation

    def from_report(report: Report) -> str:
        out = []
        for i, c in enumerate(openai.ordered_choices(report, ask.choices)):
            if not live:
                out.append(_sse(openai.chunk(kind, rid, model, i, text=c.text)))
            last = openai.chunk(kind, rid, model, i, finish="length"
                                if c.finish_reason == "length" else "stop")
            if i == 0:
                last["usage"] = openai.usage(report)
                last["zswarm"] = openai.report_json(report)
            out.append(_sse(last))
        return "".join(out)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "x-zswarm-strategy": ask.strategy})


def _sse(obj: dict[str, object]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def chat_completions(request: Request) -> Response:
    return await _completions(request, "chat")


async def completions(request: Request) -> Response:
    return await _completions(request, "text")


async def models(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    seen = {node.ready().pool.model_id: node.config.node.name}
    if node.federation is not None:
        for peer in node.federation.table.alive():
            seen.setdefault(peer.card.model_id, peer.card.name)
    return JSONResponse({"object": "list", "data": [
        {"id": model, "object": "model", "created": 0, "owned_by": f"zswarm:{owner}"}
        for model, owner in seen.items()]})


async def health(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    load = node.load()
    if node.coordinator is None:
        return JSONResponse({"status": "loading", "reason": "the workers are loading the model"},
                            status_code=503, headers={"Retry-After": "2"})
    if node.draining:
        return JSONResponse({"status": "draining", "reason": "the node is shutting down"},
                            status_code=503, headers={"Retry-After": "5"})
    if load.workers_ready == 0:
        return JSONResponse({"status": "unavailable", "reason": "no worker has the model loaded "
                             "(starting or restarting)"}, status_code=503,
                            headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "workers_ready": load.workers_ready,
                         "queue_depth": load.queue_depth})


# --- federation routes ------------------------------------------------------------------


class VoteIn(msgspec.Struct):
    """POST /v1/federation/vote: the JSON form of a VoteRequest."""

    request: GenerateRequest
    deadline_ms: int = 30_000
    request_id: str = ""


async def federation_vote(request: Request) -> Response:
    """The VoteRequest of the ZMQ protocol as JSON: served locally, never fanned out."""
    node: HttpNode = request.app.state.node
    body = await read_body(request, node.config.http.max_body_bytes)
    vote = openai.decode(body, VoteIn)
    assert isinstance(vote, VoteIn)
    from zswarm.runtime.rpc import check_request

    coordinator = node.ready()
    try:
        check_request(node.config, vote.request)
        candidates = await coordinator.gather_local(
            vote.request, deadline_s=min(vote.deadline_ms, 3_600_000) / 1000)
    except ZswarmError as exc:
        raise from_zswarm(exc) from None
    card = node.card
    return JSONResponse({"type": "vote", "request_id": vote.request_id or new_request_id(),
                         "node_id": card.node_id if card else "", "name": node.config.node.name,
                         "candidates": msgspec.to_builtins(candidates)})


async def federation_health(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    return JSONResponse({"node": msgspec.to_builtins(node.card), "load": msgspec.to_builtins(
        node.load())})


async def federation_peers(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    peers = node.federation.peers() if node.federation is not None else []
    return JSONResponse(msgspec.to_builtins(peers))


async def metrics(request: Request) -> Response:
    node: HttpNode = request.app.state.node
    body, ctype = metrics_text(node)
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
]
_KNOWN = {r.path for r in ROUTES}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status < 500 and exc.status not in (401, 404):
        log.info("%s %s: %d %s", request.method, request.url.path, exc.status, exc.message)
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
    middleware = [Middleware(CountRequests, node=node)]
    if node.config.http.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=node.config.http.cors_origins,
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    middleware.append(Middleware(ApiKeyAuth, keys=node.config.api_keys()))
    app = Starlette(routes=ROUTES, middleware=middleware, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected})
    app.state.node = node
    return app


async def serve_http(node: HttpNode, host: str, port: int, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; reports the bound port."""
    config = hypercorn.config.Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("zswarm.http.server")
    config.read_timeout = 60  # a client that stalls mid-request is dropped
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, build_app(node), config,
                                            mode="asgi"))
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
