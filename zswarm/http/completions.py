"""POST /v1/chat/completions and /v1/completions: answers, streams and disconnects.

Owns: turning one OpenAI request into one coordinator ask (shapes in http/openai.py),
server-sent events (tokens as they come for one candidate, else the choices once
decided, the report in the final chunk), and cancelling the ask - locally and on the
peers - when the client goes away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from zswarm.core.ids import new_request_id
from zswarm.core.messages import Report
from zswarm.errors import InternalError, RequestRefused, ZswarmError
from zswarm.http import openai
from zswarm.http.base import HttpNode, from_zswarm, read_body
from zswarm.http.openai import ApiError, Ask
from zswarm.runtime.votes import serve_ask

log = logging.getLogger(__name__)


def resolve_model(node: HttpNode, name: str) -> str | None:
    """The model id to ask for (None = this node's), or 404 if nobody serves it."""
    local = node.ctx.card.model_id
    if name in ("", "default", "zswarm", local, local.split("@")[0]):
        return None
    for model_id in node.peers.models():
        if name in (model_id, model_id.split("@")[0]):
            return model_id
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
    """Headers carry ASCII only: node names (peer-chosen text) are percent-encoded."""
    nodes = sorted({c.node for c in report.candidates})
    return {"x-zswarm-strategy": quote(report.strategy, safe=""),
            "x-zswarm-nodes": ",".join(quote(n, safe=" -_.:@()") for n in nodes)}


# --- the OpenAI routes -----------------------------------------------------------------


async def _completions(request: Request, kind: str) -> Response:
    node: HttpNode = request.app.state.node
    with node.ctx.requests.hold():  # a stream's generation is held by its own task (_stream)
        return await _answer(request, node, kind)


async def _answer(request: Request, node: HttpNode, kind: str) -> Response:
    body = await read_body(request, node.config.http)
    shape = openai.ChatCompletionRequest if kind == "chat" else openai.CompletionRequest
    req = openai.decode(body, shape)
    ask = openai.to_ask(req, node.config)  # type: ignore[arg-type]
    model_id = resolve_model(node, ask.model)
    model = model_id or node.ctx.card.model_id
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
        raise _api_error(errors[0], ask)
    if not result:
        log.info("%s: the client went away; generation cancelled", rid)
        return Response(status_code=499)
    _, report = result[0]
    return JSONResponse(openai.completion_object(kind, rid, model, report, ask.choices),
                        headers=_headers(report))


async def _ask(node: HttpNode, ask: Ask, model_id: str | None,
               on_token: Callable[[int, str], None] | None) -> tuple[str, Report]:
    return await serve_ask(
        node.ctx, node.coordinator, ask.request, strategy=ask.strategy,
        deadline_ms=ask.deadline_ms, on_token=on_token, model_id=model_id,
        peers=ask.peers, early_stop=ask.choices <= 1)  # n choices: every candidate is one


def _api_error(exc: ZswarmError, ask: Ask) -> ApiError:
    """A request over this node's limits names the OpenAI parameter (422); the rest map
    by kind (base.from_zswarm)."""
    return openai.refused(exc, ask) if isinstance(exc, RequestRefused) else from_zswarm(exc)


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
        node.ctx.requests.enter()  # until the generation ends, even after the response is sent
        try:
            with scope:
                try:
                    event: tuple[str, Any] = ("done", await _ask(node, ask, model_id,
                                                                 on_token if live else None))
                except ZswarmError as exc:
                    event = ("error", exc)
                except Exception:  # a bug costs this stream (an error event), never the node
                    log.exception("%s: internal error", rid)
                    event = ("error", InternalError("internal error (logged on the node)"))
                with contextlib.suppress(trio.BrokenResourceError):  # the stream is gone
                    send.send_nowait(event)
        finally:
            send.close()
            node.ctx.requests.leave()

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
        raise _api_error(first[1], ask)

    streamed = False  # did any token go out? (not when the answer came from a peer)

    async def events() -> AsyncIterator[str]:
        nonlocal streamed
        try:
            yield _sse(openai.chunk(kind, rid, model, 0, role=True, text="" if kind == "chat"
                                    else None))
            event: tuple[str, Any] | None = first
            while event is not None:
                what, value = event
                if what == "token":
                    streamed = True
                    yield _sse(openai.chunk(kind, rid, model, 0, text=value))
                elif what == "error":  # after the stream began: an error event, then the end
                    err = _api_error(value, ask)
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
            if not streamed:  # the text arrives whole: consensus over n, or a peer's vote
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
