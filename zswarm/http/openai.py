"""OpenAI request bodies: their shapes, decoding them, and OpenAI's error object.

Owns: the request shapes (every field OpenAI documents is either here and works as
documented, or is refused by name: the bodies forbid unknown fields), decoding them
(bad JSON, a wrong type, an unknown or missing field: 400 ``invalid_request_error``
naming ``param``) and ``ApiError``. What a decoded request asks for is
http/contract.py's; responses are http/responses.py's. Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

import msgspec

from zswarm.core import codec


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


def invalid(message: str, param: str | None, code: str | None = "invalid_value") -> ApiError:
    """OpenAI's answer to an invalid request: 400 ``invalid_request_error`` naming ``param``."""
    return ApiError(400, message, param=param, code=code)


# --- requests ------------------------------------------------------------------------


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A part of a request body: a field not declared here is refused by name."""


class ContentPart(msgspec.Struct, kw_only=True):
    """A part of a message's content; only text parts can be read by a text model."""

    type: str
    text: str | None = None


class FunctionCallIn(_Body):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Body):
    function: FunctionCallIn
    id: str = ""
    type: Literal["function"] = "function"


class MessageIn(_Body):
    role: str
    content: str | list[ContentPart] | None = None
    #: the participant's name (shown to the model before the content)
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    #: an assistant message's refusal, as OpenAI returns it (null)
    refusal: str | None = None


class JsonSchemaIn(_Body):
    name: str
    description: str | None = None
    schema: dict[str, Any] | None = None
    #: enforced either way: every answer follows the schema (constrained decoding)
    strict: bool | None = None


class ResponseFormatIn(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaIn | None = None


class FunctionIn(_Body):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolIn(_Body):
    type: Literal["function"]
    function: FunctionIn


class NamedFunction(_Body):
    name: str


class ToolChoiceIn(_Body):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Body):
    #: a last chunk with ``usage`` and no choices
    include_usage: bool = False


class ZswarmOptions(_Body):
    """The ``zswarm`` extension object of a request."""

    strategy: str | None = None
    n: int | None = None
    #: at most this many candidates, spent in waves until the winner is settled
    budget: int | None = None
    deadline_ms: int | None = None
    #: "all", "none", or the names or ids of the peers that may be asked
    peers: str | list[str] = "all"
    #: a committee: the swarm's models (names or ids) that share the candidates
    models: list[str] | None = None


class _Common(_Body, kw_only=True):
    model: str = ""
    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    #: token id (as a string, JSON's keys) -> -100 to 100
    logit_bias: dict[str, float] | None = None
    #: an end user's id, for the caller's own abuse monitoring: zswarm keeps none
    user: str | None = None
    zswarm: ZswarmOptions | None = None


class ChatCompletionRequest(_Common, kw_only=True):
    messages: list[MessageIn]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormatIn | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceIn | None = None
    #: true: an answer may make several calls; absent or false: one
    parallel_tool_calls: bool | None = None
    #: storing completions is OpenAI's service; only false (or null) is accepted
    store: bool | None = None
    metadata: dict[str, str] | None = None
    #: a hint for OpenAI's cache; zswarm's prompt cache finds prefixes itself
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    #: "auto" and "default" only: a node has one tier
    service_tier: str | None = None
    #: ["text"] only: the model writes text
    modalities: list[str] | None = None


class CompletionRequest(_Common, kw_only=True):
    prompt: str | list[str]
    #: the most likely tokens per place, 0 to 5 (OpenAI's legacy range)
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


#: which OpenAI route: /v1/chat/completions or /v1/completions
Kind = Literal["chat", "text"]

_Shape = TypeVar("_Shape", bound=msgspec.Struct)
_UNKNOWN = re.compile(r"Object contains unknown field `(.+?)`")
_MISSING = re.compile(r"Object missing required field `(.+?)`")


def decode(body: bytes, kind: type[_Shape]) -> _Shape:
    """Bytes -> request struct; 400 naming the field for bad JSON, a type or an unknown field."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        what, param = codec.invalid(exc)
        unknown = _UNKNOWN.match(what)
        if unknown:
            param = f"{param}.{unknown.group(1)}" if param else unknown.group(1)
            raise invalid(f"unrecognized request argument supplied: {param} (this server "
                          "does not support it)", param, code="unknown_parameter") from None
        missing = _MISSING.match(what)
        if missing:
            param = f"{param}.{missing.group(1)}" if param else missing.group(1)
        raise invalid(f"invalid request: {param}: {what}" if param else
                      f"invalid request: {what}", param or None, code="invalid_type") from None
    except (msgspec.DecodeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise invalid(f"the body is not valid JSON (UTF-8): {str(exc)[:300]}", None,
                      code="invalid_json") from None
