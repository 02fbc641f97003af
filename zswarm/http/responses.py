"""zswarm reports -> OpenAI response objects and stream chunks.

Owns: the choices of a response (the winner first), a choice's message (text, or
``tool_calls`` with ``content`` null and finish_reason "tool_calls" when the answer is
calls of the request's tools), log-probabilities with their top alternatives, usage,
the zswarm report as JSON, and the stream's chunks in OpenAI's delta shape (a call's
id and name first, then its arguments in fragments; a last usage-only chunk when asked).
Pure: no I/O.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

import msgspec

from zswarm.core import structured
from zswarm.core.messages import Report, ReportCandidate, Structure
from zswarm.http.openai import Kind

#: a streamed call's arguments go out in pieces of this many characters
ARGUMENT_PIECE = 32


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


def calls_of(structure: Structure | None, c: ReportCandidate) -> list[dict[str, object]] | None:
    """The candidate's tool calls in OpenAI's shape (each with a new id); None: it is text."""
    if structure is None or not structured.active_tools(structure):
        return None
    calls = structured.parse_calls(structure, c.text)
    if calls is None:
        return None
    return [{"id": "call_" + secrets.token_hex(12), "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}} for call in calls]


def finish_reason(c: ReportCandidate, calls: list[dict[str, object]] | None) -> str:
    if calls:
        return "tool_calls"
    return "length" if c.finish_reason == "length" else "stop"


def completion_object(kind: Kind, rid: str, model: str, report: Report, count: int,
                      structure: Structure | None = None) -> dict[str, object]:
    """A chat.completion or text_completion object with the zswarm report."""
    choices: list[dict[str, object]] = []
    for i, c in enumerate(ordered_choices(report, count)):
        if kind == "chat":
            calls = calls_of(structure, c)
            message: dict[str, object] = {"role": "assistant",
                                          "content": None if calls else c.text,
                                          "refusal": None}
            if calls:
                message["tool_calls"] = calls
            choices.append({"index": i, "message": message,
                            "finish_reason": finish_reason(c, calls),
                            "logprobs": _chat_logprobs(c)})
        else:
            choices.append({"index": i, "text": c.text, "finish_reason": finish_reason(c, None),
                            "logprobs": _text_logprobs(c)})
    return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices,
            "usage": usage(report), "zswarm": report_json(report)}


def _entry(token: str, logprob: float) -> dict[str, object]:
    return {"token": token, "logprob": json_safe(logprob), "bytes": list(token.encode())}


def _chat_logprobs(c: ReportCandidate) -> dict[str, object] | None:
    if c.token_logprobs is None:
        return None
    return {"content": [{**_entry(t.token, t.logprob),
                         "top_logprobs": [_entry(tok, lp) for tok, lp in t.top]}
                        for t in c.token_logprobs], "refusal": None}


def _text_logprobs(c: ReportCandidate) -> dict[str, object] | None:
    if c.token_logprobs is None:
        return None
    offsets, at = [], 0
    for t in c.token_logprobs:
        offsets.append(at)
        at += len(t.token)
    tops = [{tok: json_safe(lp) for tok, lp in t.top} for t in c.token_logprobs]
    return {"tokens": [t.token for t in c.token_logprobs],
            "token_logprobs": [json_safe(t.logprob) for t in c.token_logprobs],
            "top_logprobs": tops if any(tops) else None, "text_offset": offsets}


def chunk(kind: Kind, rid: str, model: str, index: int, *, text: str | None = None,
          role: bool = False, finish: str | None = None,
          tool_calls: list[dict[str, object]] | None = None) -> dict[str, object]:
    """One server-sent event of a stream."""
    if kind == "chat":
        delta: dict[str, object] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        if tool_calls is not None:
            delta["tool_calls"] = tool_calls
        choice: dict[str, object] = {"index": index, "delta": delta, "finish_reason": finish,
                                     "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "finish_reason": finish,
                  "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model,
            "choices": [choice]}


def call_chunks(rid: str, model: str, index: int, calls: list[dict[str, object]]
                ) -> list[dict[str, object]]:
    """A choice's calls as OpenAI streams them: per call, its index, id, type and name
    with empty arguments, then the arguments in pieces."""
    out = []
    for k, call in enumerate(calls):
        function = call["function"]
        assert isinstance(function, dict)
        out.append(chunk("chat", rid, model, index, tool_calls=[{
            "index": k, "id": call["id"], "type": "function",
            "function": {"name": function["name"], "arguments": ""}}]))
        arguments = str(function["arguments"])
        for at in range(0, len(arguments), ARGUMENT_PIECE):
            out.append(chunk("chat", rid, model, index, tool_calls=[{
                "index": k, "function": {"arguments": arguments[at:at + ARGUMENT_PIECE]}}]))
    return out


def usage_chunk(kind: Kind, rid: str, model: str, report: Report) -> dict[str, object]:
    """The last chunk of a stream with stream_options.include_usage: no choices, the usage."""
    return {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": usage(report)}
