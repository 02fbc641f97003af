"""An OpenAI request -> a zswarm ask, under OpenAI's request contract.

Owns: value checks (400 ``invalid_request_error`` naming the parameter), the fields
accepted only in their no-op form, messages (tool calls and tool results in the history;
content parts a text model cannot read refused), the answer's structure
(``response_format``, ``tools``, ``tool_choice``: core/structured.py, and
engines/grammar.check for what the grammar library can enforce), sampling extras
(penalties, logit_bias, top_logprobs), the ask itself (asks.py) and how a refusal from
this node or its worker is named. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from zswarm import asks
from zswarm.asks import choose_count, new_request
from zswarm.config import Config
from zswarm.core import codec, structured
from zswarm.core.messages import MAX_MESSAGES, MAX_TOP_LOGPROBS, Structure
from zswarm.engines import grammar
from zswarm.errors import RemoteProtocolError, RequestRefused
from zswarm.http.openai import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    MessageIn,
    ToolChoiceIn,
    ZswarmOptions,
    invalid,
)

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool"}


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
    #: a last stream chunk with the usage (stream_options.include_usage)
    include_usage: bool = False


#: core/limits.py's and the wire's field names -> the OpenAI request's
_PARAMS = {"n": "n", "max_tokens": "max_tokens", "prompt": "messages", "messages": "messages",
           "strategy": "zswarm.strategy", "budget": "zswarm.budget",
           "deadline_ms": "zswarm.deadline_ms", "models": "zswarm.models"}


def _refuse_unsupported(req: ChatCompletionRequest | CompletionRequest) -> None:
    """Fields OpenAI documents that this server accepts only in their no-op form."""
    if isinstance(req, CompletionRequest):
        if req.echo:
            raise invalid("echo is not supported (send the prompt again yourself)", "echo")
        if req.best_of not in (None, 1):
            raise invalid("best_of is not supported: use n with zswarm.strategy "
                          "\"best_of_n\"", "best_of")
        if req.suffix:
            raise invalid("suffix (fill in the middle) is not supported", "suffix")
        return
    if req.store:
        raise invalid("store: this server stores no completions", "store")
    if req.service_tier not in (None, "auto", "default"):
        raise invalid(f"service_tier {req.service_tier!r}: a node has one tier (auto)",
                      "service_tier")
    if req.modalities not in (None, ["text"]):
        raise invalid("modalities: this node's model writes text only", "modalities")


def _sampling(req: ChatCompletionRequest | CompletionRequest) -> dict[str, object]:
    """SamplingParams' fields beyond asks.new_request's own (checked in range)."""
    out: dict[str, object] = {}
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value is not None:
            if not -2.0 <= value <= 2.0:
                raise invalid(f"{name} must be -2 to 2, not {value}", name)
            out[name] = value
    if req.logit_bias:
        bias: dict[int, float] = {}
        for key, value in req.logit_bias.items():
            if not key.isdigit() or not -100 <= value <= 100:
                raise invalid(f"logit_bias maps token ids to -100 to 100; got {key!r}: "
                              f"{value}", "logit_bias")
            bias[int(key)] = value
        out["logit_bias"] = bias
    if isinstance(req, ChatCompletionRequest):
        top = req.top_logprobs
        if top is not None:
            if not 0 <= top <= MAX_TOP_LOGPROBS:
                raise invalid(f"top_logprobs must be 0 to {MAX_TOP_LOGPROBS}, not {top}",
                              "top_logprobs")
            if top and not req.logprobs:
                raise invalid("top_logprobs needs logprobs: true", "top_logprobs")
            out["top_logprobs"] = top
    elif req.logprobs is not None:
        if not 0 <= req.logprobs <= 5:
            raise invalid(f"logprobs must be 0 to 5, not {req.logprobs}", "logprobs")
        out["top_logprobs"] = req.logprobs
    return out


def _structure(req: ChatCompletionRequest, config: Config) -> Structure | None:
    """The answer's shape from response_format, tools and tool_choice; 400 naming the
    field for one that is malformed or cannot be enforced."""
    fmt, schema = "text", ""
    rf = req.response_format
    if rf is not None and rf.type == "json_object":
        fmt = "json"
    elif rf is not None and rf.type == "json_schema":
        if rf.json_schema is None or rf.json_schema.schema is None:
            raise invalid("response_format json_schema needs json_schema.schema",
                          "response_format.json_schema")
        fmt, schema = "schema", msgspec.json.encode(rf.json_schema.schema).decode()
    tools = [{"name": t.function.name, "description": t.function.description or "",
              "parameters": msgspec.json.encode(t.function.parameters or {"type": "object"}
                                                ).decode()} for t in req.tools or ()]
    choice = req.tool_choice
    if choice is not None and not tools:
        raise invalid("tool_choice is only allowed when tools are given", "tool_choice")
    name = choice.function.name if isinstance(choice, ToolChoiceIn) else (choice or "auto")
    if req.parallel_tool_calls is not None and not tools:
        raise invalid("parallel_tool_calls is only allowed when tools are given",
                      "parallel_tool_calls")
    if fmt == "text" and not tools:
        return None
    try:
        # one call per answer unless several are asked for (true): allowed either way by
        # OpenAI's default, and a small model free to call again loops on calls
        parallel = req.parallel_tool_calls is True
        structure = msgspec.convert({"format": fmt, "schema": schema, "tools": tools,
                                     "tool_choice": name, "parallel_tool_calls": parallel},
                                    Structure)
    except msgspec.ValidationError as exc:
        what, path = codec.invalid(exc)
        param = {"schema": "response_format.json_schema.schema"}.get(path, "tools")
        raise invalid(f"{param}: {path} {what}", param) from None
    if config.model.backend != "llamacpp":
        raise invalid(f"{'tools' if tools else 'response_format'}: this node's backend "
                      f"({config.model.backend}) cannot constrain answers; structured "
                      "output and tools need the llamacpp backend",
                      "tools" if tools else "response_format")
    try:
        structured.check(structure)
        if structured.constrains(structure):
            grammar.check(structure)
    except RequestRefused as exc:
        raise invalid(str(exc), exc.field or "response_format") from None
    return structure


def to_ask(req: ChatCompletionRequest | CompletionRequest, config: Config,
           model_id: str | None, committee: tuple[str, ...] = ()) -> ApiAsk:
    """Build the ask (400 naming the parameter for a value out of range; this node's
    limits are checked when it is served: runtime/serving.serve_ask). ``model_id``: the
    model the client named, when it is not this node's; ``committee``: the models of a
    committee the client asked for (``zswarm.models`` or ``"model": "swarm"``)."""
    _refuse_unsupported(req)
    opts = req.zswarm or ZswarmOptions()
    max_tokens = req.max_tokens
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        max_tokens = req.max_completion_tokens
    if req.n < 1:
        raise invalid("n must be at least 1", "n")
    if max_tokens is not None and max_tokens < 1:
        raise invalid(f"max_tokens must be at least 1, not {max_tokens}", "max_tokens")
    if req.top_p is not None and not 0.0 < req.top_p <= 1.0:
        raise invalid(f"top_p must be above 0 and at most 1, not {req.top_p}", "top_p")
    if opts.budget is not None and req.n > 1:
        raise invalid("zswarm.budget gives one answer; n > 1 asks for every candidate "
                      "(use zswarm.n)", "zswarm.budget")
    if req.temperature is not None and not 0.0 <= req.temperature <= 2.0:  # OpenAI's range
        raise invalid(f"temperature must be 0 to 2, not {req.temperature}", "temperature")
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options is only allowed with stream: true", "stream_options")
    try:
        if opts.n is None and opts.budget is None and req.n > 1:
            n, adaptive = req.n, False
        else:
            n, adaptive = choose_count(config, opts.strategy, n=opts.n, budget=opts.budget,
                                       temperature=req.temperature)
    except RequestRefused as exc:
        raise invalid(str(exc), "zswarm.n" if exc.field == "n" else "zswarm.budget") from None
    if n < req.n:
        raise invalid(f"zswarm.n must be at least n ({req.n})", "zswarm.n")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    peers: list[str] | None
    if isinstance(opts.peers, list):
        peers = list(opts.peers)
    elif opts.peers in ("all", "none"):
        peers = None if opts.peers == "all" else []
    else:
        raise invalid('zswarm.peers must be "all", "none" or a list of node ids',
                      "zswarm.peers")
    logprobs = bool(req.logprobs) if isinstance(req, ChatCompletionRequest) \
        else req.logprobs is not None
    messages, prompt, structure = None, None, None
    if isinstance(req, ChatCompletionRequest):
        messages = _messages(req)
        structure = _structure(req, config)
    elif isinstance(req.prompt, list):
        if len(req.prompt) != 1:
            raise invalid("send one prompt per request (lists of prompts are not "
                          "supported)", "prompt")
        prompt = req.prompt[0]
    else:
        prompt = req.prompt
    try:
        request = new_request(config, messages=messages, prompt=prompt, n=n,
                              max_tokens=max_tokens, temperature=req.temperature,
                              top_p=req.top_p, stop=stop, seed=req.seed, logprobs=logprobs,
                              sampling=_sampling(req), structure=structure)
    except RequestRefused as exc:  # a value out of the wire's range: the parameter named
        field = exc.field.removeprefix("params.").split("[")[0]
        param = "zswarm.n" if field == "n" and opts.n is not None else field or "messages"
        raise invalid(f"{param} {str(exc).removeprefix(exc.field).strip()}", param) from None
    try:
        ask = asks.build(config, request, strategy=opts.strategy, deadline_ms=opts.deadline_ms,
                         adaptive=adaptive, early_stop=req.n <= 1,  # n choices: each one
                         model_id=model_id, peers=peers, models=committee)
    except RequestRefused as exc:
        raise refused(exc, opts.n is not None) from None
    include_usage = req.stream_options is not None and req.stream_options.include_usage
    return ApiAsk(ask, choices=req.n, stream=req.stream, model=req.model,
                  n_given=opts.n is not None, include_usage=include_usage)


def refused(exc: RemoteProtocolError, n_given: bool) -> ApiError:
    """A request this node or its worker refused (runtime/serving.serve_ask; a refusal from
    a worker arrives without its field): 400 naming the OpenAI parameter that set the
    field (``n_given``: zswarm.n did); a prompt over the model's context is OpenAI's
    ``context_length_exceeded``."""
    message = str(exc)
    field = getattr(exc, "field", "") or next(
        (f for f in ("response_format", "tools") if message.startswith(f)),
        "messages" if "context" in message else "")
    param = "zswarm.n" if n_given and field == "n" else _PARAMS.get(field, field)
    code = "context_length_exceeded" if "context" in message else "invalid_value"
    return invalid(message, param or None, code=code)


def _text(i: int, m: MessageIn) -> str:
    """A message's text: its string, or its text parts; a part a text model cannot read
    (an image, audio, a file) is refused, not dropped."""
    if not isinstance(m.content, list):
        return m.content or ""
    texts = []
    for j, part in enumerate(m.content):
        if part.type not in ("text", "refusal") or part.text is None:
            raise invalid(f"messages[{i}].content[{j}] is of type {part.type!r}: this node's "
                          "model reads text only", f"messages[{i}].content[{j}].type",
                          code="unsupported_content")
        texts.append(part.text)
    return "".join(texts)


def _messages(req: ChatCompletionRequest) -> list[dict[str, object]]:
    if not req.messages:
        raise invalid("messages must not be empty", "messages", code="empty_array")
    if len(req.messages) > MAX_MESSAGES:
        raise invalid(f"at most {MAX_MESSAGES} messages per request, got "
                      f"{len(req.messages)}", "messages")
    out: list[dict[str, object]] = []
    call_ids: set[str] = set()
    for i, m in enumerate(req.messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise invalid(f"messages[{i}].role {m.role!r} is not one of system, developer, "
                          "user, assistant, tool", f"messages[{i}].role")
        text = _text(i, m)
        if m.name and role != "tool":
            text = f"{m.name}: {text}"
        msg: dict[str, object] = {"role": role, "content": text}
        if m.tool_calls:
            if role != "assistant":
                raise invalid(f"messages[{i}].tool_calls: only an assistant message makes "
                              "calls", f"messages[{i}].tool_calls")
            msg["tool_calls"] = [{"id": c.id, "name": c.function.name,
                                  "arguments": c.function.arguments} for c in m.tool_calls]
            call_ids.update(c.id for c in m.tool_calls)
        if role == "tool":
            if not m.tool_call_id:
                raise invalid(f"messages[{i}]: a tool message needs tool_call_id",
                              f"messages[{i}].tool_call_id")
            if m.tool_call_id not in call_ids:
                raise invalid(f"messages[{i}].tool_call_id {m.tool_call_id!r} answers no "
                              "earlier assistant tool call", f"messages[{i}].tool_call_id")
            msg["tool_call_id"] = m.tool_call_id
        elif m.tool_call_id:
            raise invalid(f"messages[{i}].tool_call_id belongs to tool messages",
                          f"messages[{i}].tool_call_id")
        out.append(msg)
    return out  # the config's system prompt goes first unless there is one (asks.py)
