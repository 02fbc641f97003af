"""OpenAI request and response shapes <-> zswarm requests and reports.

Owns: decoding request bodies (type errors name the field: 400), range checks
against the node's limits (422), turning a request into a GenerateRequest plus
the zswarm options (strategy, candidates, deadline, peers), and building
completion objects, stream chunks and OpenAI-shaped errors. Pure: no I/O.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from zswarm import asks
from zswarm.asks import choose_count, new_request
from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.messages import (
    MAX_MESSAGES,
    Report,
    ReportCandidate,
)
from zswarm.errors import RequestRefused


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code", "param"}}."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": self.param}}


# --- requests ------------------------------------------------------------------------


class ContentPart(msgspec.Struct):
    type: str = "text"
    text: str = ""


class MessageIn(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None


class ZswarmOptions(msgspec.Struct, forbid_unknown_fields=True):
    """The ``zswarm`` extension object of a request."""

    strategy: str | None = None
    n: int | None = None
    #: at most this many candidates, spent in waves until the winner is settled
    budget: int | None = None
    deadline_ms: int | None = None
    #: "all", "none", or the names or ids of the peers that may be asked
    peers: str | list[str] = "all"


class _Common(msgspec.Struct, kw_only=True):
    model: str = ""
    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    zswarm: ZswarmOptions | None = None


class ChatCompletionRequest(_Common, kw_only=True):
    messages: list[MessageIn]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    #: accepted; the engines report only the chosen token, so top_logprobs lists are empty
    top_logprobs: int | None = None


class CompletionRequest(_Common, kw_only=True):
    prompt: str | list[str]
    logprobs: int | None = None


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


#: which OpenAI route: /v1/chat/completions or /v1/completions
Kind = Literal["chat", "text"]

_Shape = TypeVar("_Shape", bound=msgspec.Struct)


def decode(body: bytes, kind: type[_Shape]) -> _Shape:
    """Bytes -> request struct; ApiError 400 naming the field for bad JSON or types."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        what, param = codec.invalid(exc)
        raise ApiError(400, f"invalid request: {param}: {what}" if param else
                       f"invalid request: {what}", param=param or None) from None
    except (msgspec.DecodeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"the body is not valid JSON (UTF-8): {str(exc)[:300]}") from None


@dataclass(frozen=True)
class ApiAsk:
    """One OpenAI request: the ask (zswarm/asks.py) and how its answer is shaped."""

    ask: asks.Ask
    #: OpenAI ``n``: how many choices the response carries
    choices: int
    stream: bool
    #: the model the client named (the response names it back)
    model: str
    #: zswarm.n was given (a refused n names it, not OpenAI's n)
    n_given: bool = False


#: core/limits.py's field names -> the OpenAI request's
_PARAMS = {"n": "n", "max_tokens": "max_tokens", "prompt": "messages", "messages": "messages",
           "strategy": "zswarm.strategy", "budget": "zswarm.budget", "deadline_ms": "zswarm.deadline_ms"}


def _unprocessable(message: str, param: str) -> ApiError:
    return ApiError(422, message, param=param, code="invalid_value")


def to_ask(req: ChatCompletionRequest | CompletionRequest, config: Config,
           model_id: str | None) -> ApiAsk:
    """Build the ask (422 naming the parameter for a value out of range; this node's
    limits are checked when it is served: runtime/serving.serve_ask). ``model_id``: the
    model the client named, when it is not this node's."""
    opts = req.zswarm or ZswarmOptions()
    max_tokens = req.max_tokens
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        max_tokens = req.max_completion_tokens
    if req.n < 1:
        raise _unprocessable("n must be at least 1", "n")
    if opts.budget is not None and req.n > 1:
        raise _unprocessable("zswarm.budget gives one answer; n > 1 asks for every candidate "
                             "(use zswarm.n)", "zswarm.budget")
    try:
        if opts.n is None and opts.budget is None and req.n > 1:
            n, adaptive = req.n, False
        else:
            n, adaptive = choose_count(config, opts.strategy, n=opts.n, budget=opts.budget,
                                       temperature=req.temperature)
    except RequestRefused as exc:
        raise _unprocessable(str(exc), "zswarm.n" if exc.field == "n" else "zswarm.budget"
                             ) from None
    if n < req.n:
        raise _unprocessable(f"zswarm.n must be at least n ({req.n})", "zswarm.n")
    if req.temperature is not None and not 0.0 <= req.temperature <= 2.0:  # OpenAI's range
        raise _unprocessable("temperature must be 0 to 2", "temperature")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    peers: list[str] | None
    if isinstance(opts.peers, list):
        peers = list(opts.peers)
    elif opts.peers in ("all", "none"):
        peers = None if opts.peers == "all" else []
    else:
        raise _unprocessable('zswarm.peers must be "all", "none" or a list of node ids',
                             "zswarm.peers")
    logprobs = bool(req.logprobs) if isinstance(req, ChatCompletionRequest) \
        else req.logprobs is not None
    messages, prompt = None, None
    if isinstance(req, ChatCompletionRequest):
        messages = _messages(req)
    elif isinstance(req.prompt, list):
        if len(req.prompt) != 1:
            raise _unprocessable("send one prompt per request (lists of prompts are not "
                                 "supported)", "prompt")
        prompt = req.prompt[0]
    else:
        prompt = req.prompt
    try:
        request = new_request(config, messages=messages, prompt=prompt, n=n,
                              max_tokens=max_tokens, temperature=req.temperature,
                              top_p=req.top_p, stop=stop, seed=req.seed, logprobs=logprobs)
    except RequestRefused as exc:  # a value out of the wire's range: the parameter named
        field = exc.field.removeprefix("params.").split("[")[0]
        param = "zswarm.n" if field == "n" and opts.n is not None else field or "messages"
        raise _unprocessable(f"{param} {str(exc).removeprefix(exc.field).strip()}",
                             param) from None
    try:
        ask = asks.build(config, request, strategy=opts.strategy, deadline_ms=opts.deadline_ms,
                         adaptive=adaptive, early_stop=req.n <= 1,  # n choices: each one
                         model_id=model_id, peers=peers)
    except RequestRefused as exc:
        raise refused(exc, opts.n is not None) from None
    return ApiAsk(ask, choices=req.n, stream=req.stream, model=req.model,
                  n_given=opts.n is not None)


def refused(exc: RequestRefused, n_given: bool) -> ApiError:
    """A request over this node's limits (runtime/serving.serve_ask): 422 naming the
    OpenAI parameter that set the field (``n_given``: zswarm.n did)."""
    return _unprocessable(str(exc), "zswarm.n" if n_given and exc.field == "n"
                          else _PARAMS.get(exc.field, exc.field))


def _messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    if not req.messages:
        raise _unprocessable("messages must not be empty", "messages")
    if len(req.messages) > MAX_MESSAGES:
        raise _unprocessable(f"at most {MAX_MESSAGES} messages per request, got "
                             f"{len(req.messages)}", "messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(req.messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise _unprocessable(f"messages[{i}].role {m.role!r} is not supported (system, "
                                 "developer, user, assistant)", f"messages[{i}].role")
        if isinstance(m.content, list):
            text = "".join(p.text for p in m.content if p.type == "text")
        else:
            text = m.content or ""
        out.append({"role": role, "content": text})
    return out  # the config's system prompt goes first unless there is one (asks.py)


# --- responses -----------------------------------------------------------------------


def _finish(c: ReportCandidate) -> str:
    return "length" if c.finish_reason == "length" else "stop"


def ordered_choices(report: Report, count: int) -> list[ReportCandidate]:
    """The winner first, then the other candidates in arrival order, at most ``count``."""
    rest = [c for i, c in enumerate(report.candidates) if i != report.winner]
    return [report.candidates[report.winner], *rest][:count]


def usage(report: Report) -> dict[str, int]:
    prompt = max((c.prompt_tokens for c in report.candidates), default=0)
    completion = sum(c.tokens for c in report.candidates)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def report_json(report: Report) -> dict[str, object]:
    out: dict[str, object] = json_safe(msgspec.to_builtins(report))
    out["nodes"] = sorted({c.node for c in report.candidates})
    return out


def json_safe(value: Any) -> Any:
    """NaN and infinities become None: JSON has no such numbers (a backstop; peers' scores
    are checked where they arrive)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def completion_object(kind: Kind, rid: str, model: str, report: Report, count: int
                      ) -> dict[str, object]:
    """A chat.completion or text_completion object with the zswarm report."""
    choices: list[dict[str, object]] = []
    for i, c in enumerate(ordered_choices(report, count)):
        if kind == "chat":
            choices.append({"index": i, "message": {"role": "assistant", "content": c.text},
                            "finish_reason": _finish(c), "logprobs": _chat_logprobs(c)})
        else:
            choices.append({"index": i, "text": c.text, "finish_reason": _finish(c),
                            "logprobs": _text_logprobs(c)})
    return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": usage(report), "zswarm": report_json(report)}


def _chat_logprobs(c: ReportCandidate) -> dict[str, object] | None:
    if c.token_logprobs is None:
        return None
    return {"content": [{"token": t.token, "logprob": json_safe(t.logprob),
                         "bytes": list(t.token.encode()), "top_logprobs": []}
                        for t in c.token_logprobs], "refusal": None}


def _text_logprobs(c: ReportCandidate) -> dict[str, object] | None:
    if c.token_logprobs is None:
        return None
    offsets, at = [], 0
    for t in c.token_logprobs:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in c.token_logprobs],
            "token_logprobs": [json_safe(t.logprob) for t in c.token_logprobs],
            "top_logprobs": None, "text_offset": offsets}


def chunk(kind: Kind, rid: str, model: str, index: int, *, text: str | None = None,
          role: bool = False, finish: str | None = None) -> dict[str, object]:
    """One server-sent event of a stream."""
    if kind == "chat":
        delta: dict[str, object] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice: dict[str, object] = {"index": index, "delta": delta, "finish_reason": finish,
                                     "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "finish_reason": finish,
                  "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice]}
