"""POST /v1/chat/completions and /v1/completions: answers, streams and disconnects.

Owns: turning one OpenAI request into one coordinator ask (shapes in http/openai.py, the
ask in http/contract.py), server-sent events (tokens as they come for one candidate
without tools, else the choices once decided, the report in the final chunk), and
cancelling the ask - locally and on the peers - when the client goes away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from typing_extensions import assert_never

from zswarm.core import catalog
from zswarm.core.committee import MAX_COMMITTEE
from zswarm.core.ids import new_request_id
from zswarm.core.messages import Report
from zswarm.core.structured import active_tools
from zswarm.errors import (
    InternalError,
    ModelNotFound,
    RemoteProtocolError,
    RequestRefused,
    ZswarmError,
)
from zswarm.http import contract, openai, responses
from zswarm.http.base import HttpNode, from_zswarm, read_body
from zswarm.http.contract import ApiAsk
from zswarm.http.openai import ApiError, invalid
from zswarm.runtime.serving import serve_ask

log = logging.getLogger(__name__)

#: ``"model": "swarm"``: a committee of every model of the swarm
COMMITTEE_NAME = "swarm"


def resolve_model(node: HttpNode, name: str) -> str | None:
    """The model id to ask for (None = this node's default): by id, file name, file name
    without .gguf or the name a node's config gives it (core/catalog.py); 404
    ``model_not_found`` listing the swarm's models if nobody serves it, 400 if the name
    fits several."""
    model_id = _resolve(node, name, node.catalog(), "model")
    return None if model_id == node.ctx.card.model_id else model_id


def _resolve(node: HttpNode, name: str, found: dict[str, list[catalog.Holder]],
             param: str) -> str:
    """The model id ``name`` names in the catalog ``found``; the names this node's own
    config gives its models win over names peers give theirs (a claim)."""
    own = {r.name: r.model_id for r in node.ctx.models.residents.values()}
    try:
        return catalog.resolve(name, node.ctx.card.model_id, found, own=own)
    except ModelNotFound as exc:
        raise ApiError(404, f"{exc} (GET /v1/models)", code="model_not_found",
                       param=param) from None
    except RequestRefused as exc:
        raise invalid(str(exc), param, code="model_ambiguous") from None


def resolve_committee(node: HttpNode,
                      req: openai.ChatCompletionRequest | openai.CompletionRequest
                      ) -> tuple[str, ...]:
    """The models of a committee (core/committee.py): ``zswarm.models`` (each resolved
    as ``model`` is), or every model of the swarm for ``"model": "swarm"``; () for none."""
    names = req.zswarm.models if req.zswarm is not None else None
    if names is None and req.model != COMMITTEE_NAME:
        return ()
    found = node.catalog()
    if names is None:
        if len(found) > MAX_COMMITTEE:
            raise invalid(f'"model": "{COMMITTEE_NAME}" asks every model of the swarm, and '
                          f"it has {len(found)}: at most {MAX_COMMITTEE} vote together "
                          "(name them in zswarm.models)", "model")
        return tuple(found)
    if not names or len(names) > MAX_COMMITTEE:
        raise invalid(f"zswarm.models names {len(names)} models: a committee is 1 to "
                      f"{MAX_COMMITTEE}", "zswarm.models")
    return tuple(_resolve(node, name, found, "zswarm.models") for name in names)


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


async def _completions(request: Request, kind: openai.Kind) -> Response:
    node: HttpNode = request.app.state.node
    with node.ctx.requests.hold():  # a stream's generation is held by its own task (_stream)
        return await _answer(request, node, kind)


async def _answer(request: Request, node: HttpNode, kind: openai.Kind) -> Response:
    body = await read_body(request, node.config.http)
    req: openai.ChatCompletionRequest | openai.CompletionRequest = (
        openai.decode(body, openai.ChatCompletionRequest) if kind == "chat"
        else openai.decode(body, openai.CompletionRequest))
    committee = resolve_committee(node, req)
    model_id = None if committee else resolve_model(node, req.model)
    ask = contract.to_ask(req, node.config, model_id, committee)
    sse = _Sse(kind, ("chatcmpl-" if kind == "chat" else "cmpl-") + new_request_id(),
               model_id or node.ctx.card.model_id, ask)
    if ask.stream:
        return await _stream(request, node, sse)
    result: list[tuple[str, Report]] = []
    errors: list[ZswarmError] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_disconnect, request, nursery.cancel_scope)

        async def work() -> None:
            try:
                result.append(await serve_ask(node.ctx, node.coordinator, ask.ask))
            except ZswarmError as exc:
                errors.append(exc)
            nursery.cancel_scope.cancel()

        nursery.start_soon(work)
    if errors:
        raise _api_error(errors[0], ask)
    if not result:
        log.info("%s: the client went away; generation cancelled", sse.rid)
        return Response(status_code=499)
    _, report = result[0]
    return JSONResponse(responses.completion_object(kind, sse.rid, sse.model, report,
                                                    ask.choices, ask.ask.request.structure),
                        headers=_headers(report))


def _api_error(exc: ZswarmError, ask: ApiAsk) -> ApiError:
    """A request refused (over this node's limits, or a worker's) names the OpenAI
    parameter (400); the rest map by kind (base.from_zswarm)."""
    return contract.refused(exc, ask.n_given) if isinstance(exc, RemoteProtocolError) \
        else from_zswarm(exc)


# --- streams ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    text: str


@dataclass(frozen=True)
class _Done:
    report: Report


@dataclass(frozen=True)
class _Failed:
    error: ZswarmError


#: what the generation sends the stream: tokens as they come, then the report or an error
_Event = _Token | _Done | _Failed


@dataclass
class _Sse:
    """One response's server-sent events (the chunks' id, model and shape)."""

    kind: openai.Kind
    rid: str
    model: str
    ask: ApiAsk
    #: did any token go out? (not when the answer came from a peer, or for n > 1)
    streamed: bool = False

    @property
    def live(self) -> bool:
        """Do tokens stream as they come? One candidate, and no tools (an answer that turns
        out to be a call must not have gone out as text)."""
        structure = self.ask.ask.request.structure
        return self.ask.ask.request.n == 1 and not (structure and active_tools(structure))

    def opening(self, first: _Event) -> str:
        """The first chunk: the role (and empty content, unless the answer is calls)."""
        calls = None
        if isinstance(first, _Done):
            winner = first.report.candidates[first.report.winner]
            calls = responses.calls_of(self.ask.ask.request.structure, winner)
        text = "" if self.kind == "chat" and not calls else None
        return _sse(responses.chunk(self.kind, self.rid, self.model, 0, role=True, text=text))

    def event(self, event: _Event) -> str:
        match event:
            case _Token(text):
                self.streamed = True
                return _sse(responses.chunk(self.kind, self.rid, self.model, 0, text=text))
            case _Failed(error):  # after the stream began: an error event, then the end
                return _sse(_api_error(error, self.ask).body())
            case _Done(report):
                return self.choices(report)
            case _:
                assert_never(event)

    def choices(self, report: Report) -> str:
        out = []
        structure = self.ask.ask.request.structure
        for i, c in enumerate(responses.ordered_choices(report, self.ask.choices)):
            calls = responses.calls_of(structure, c) if self.kind == "chat" else None
            if calls:
                out += [_sse(x) for x in responses.call_chunks(self.rid, self.model, i, calls)]
            elif not self.streamed:  # the text arrives whole: consensus over n, a peer's
                out.append(_sse(responses.chunk(self.kind, self.rid, self.model, i,  # vote
                                                text=c.text)))
            last = responses.chunk(self.kind, self.rid, self.model, i,
                                   finish=responses.finish_reason(c, calls))
            if i == 0:
                last["zswarm"] = responses.report_json(report)
            out.append(_sse(last))
        if self.ask.include_usage:
            out.append(_sse(responses.usage_chunk(self.kind, self.rid, self.model, report)))
        return "".join(out)


async def _stream(request: Request, node: HttpNode, sse: _Sse) -> Response:
    """Server-sent events: tokens as they come (one candidate), else the choices at the end.

    The generation runs in the node's nursery (it outlives this handler, which returns
    the response once the first event is in: an error before it is a plain HTTP error).
    """
    send, receive = trio.open_memory_channel[_Event](math.inf)
    scope = trio.CancelScope()
    node.nursery.start_soon(_generate, node, sse, send, scope)
    first = await _first(request, receive)
    if first is None:
        scope.cancel()
        return Response(status_code=499)
    if isinstance(first, _Failed):
        raise _api_error(first.error, sse.ask)

    async def events() -> AsyncIterator[str]:
        try:
            yield sse.opening(first)
            yield sse.event(first)
            async for event in receive:
                yield sse.event(event)
            yield "data: [DONE]\n\n"
        finally:
            scope.cancel()  # the client went away (or we are done): stop the generation

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache",
                                      "x-zswarm-strategy": sse.ask.ask.strategy})


async def _generate(node: HttpNode, sse: _Sse, send: trio.MemorySendChannel[_Event],
                    scope: trio.CancelScope) -> None:
    """The ask behind a stream: its tokens (one candidate only) and its end, into ``send``."""

    def on_token(index: int, text: str) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            send.send_nowait(_Token(text))

    node.ctx.requests.enter()  # until the generation ends, even after the response is sent
    try:
        with scope:
            event: _Event
            try:
                ask = sse.ask.ask
                _, report = await serve_ask(node.ctx, node.coordinator, ask,
                                            on_token=on_token if sse.live else None)
                event = _Done(report)
            except ZswarmError as exc:
                event = _Failed(exc)
            except Exception:  # a bug costs this stream (an error event), never the node
                log.exception("%s: internal error", sse.rid)
                event = _Failed(InternalError("internal error (logged on the node)"))
            with contextlib.suppress(trio.BrokenResourceError):  # the stream is gone
                send.send_nowait(event)
    finally:
        send.close()
        node.ctx.requests.leave()


async def _first(request: Request, receive: trio.MemoryReceiveChannel[_Event]
                 ) -> _Event | None:
    """The stream's first event; None if the client left first (or nothing came)."""
    first: _Event | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_disconnect, request, nursery.cancel_scope)
        with contextlib.suppress(trio.EndOfChannel):
            first = await receive.receive()
        nursery.cancel_scope.cancel()
    return first


def _sse(obj: dict[str, object]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def chat_completions(request: Request) -> Response:
    return await _completions(request, "chat")


async def completions(request: Request) -> Response:
    return await _completions(request, "text")
