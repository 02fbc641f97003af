"""Bytes <-> messages (msgpack via msgspec). Bad bytes raise RemoteProtocolError, never crash.

This is the one place where untrusted bytes become messages: every exception the
decoder can raise (msgspec's DecodeError and ValidationError, but also the
UnicodeDecodeError it raises for strings that are not UTF-8, recursion and
overflow errors) becomes a RemoteProtocolError whose ``reason`` labels the drop.
The property tests in tests/core/test_codec.py hold this to "any bytes".
"""

from __future__ import annotations

import re

import msgspec

from zswarm.core.messages import MAX_FRAME_BYTES, PROTOCOL_VERSION, Message
from zswarm.errors import RemoteProtocolError

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class _Envelope(msgspec.Struct):
    v: int | None = None
    type: str = ""


_envelope_decoder = msgspec.msgpack.Decoder(_Envelope)


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Decode and validate one frame.

    Raises RemoteProtocolError naming what is wrong: too big, not msgpack, another
    protocol version, unknown type, or a field of the wrong type or out of range.
    """
    if len(data) > max_bytes:
        raise RemoteProtocolError(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}",
                                  reason="too-big")
    try:
        msg = _decoder.decode(data)
    except Exception as exc:  # any decoder failure is the sender's (see the docstring)
        version = _peek_version(data)
        if version is not None and version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})",
                reason="wrong-version") from exc
        raise RemoteProtocolError(f"malformed message: {_describe(exc)}") from exc
    if msg.v != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"protocol version {msg.v} is not supported (this node speaks {PROTOCOL_VERSION})",
            reason="wrong-version")
    return msg


def _describe(exc: Exception) -> str:
    if isinstance(exc, msgspec.DecodeError):
        return str(exc)[:300]
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _peek_version(data: bytes) -> int | None:
    try:
        return _envelope_decoder.decode(data).v
    except Exception:  # only a hint for the error message
        return None


_EXPECTED = re.compile(r"Expected `(\w+)`( of length)? (<=|>=|<|>) (\S+)")
_IN_WORDS = {"<=": "at most", ">=": "at least", "<": "less than", ">": "more than"}


def invalid(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's error as (what is wrong, in words; the field's dotted path, "" for the
    whole value): ("must be at least 1", "n"), ("must be at most 4 items", "params.stop").

    The one reader of msgspec's error text: each door names the field its own way (an
    option of the CLI, a parameter of the OpenAI API)."""
    text, _, path = str(exc).partition(" - at `$")
    path = path.rstrip("`").lstrip(".")
    match = _EXPECTED.fullmatch(text)
    if match:
        kind, length, op, bound = match.groups()
        unit = (" characters" if kind == "str" else " items") if length else ""
        text = f"must be {_IN_WORDS[op]} {bound}{unit}"
    return text, path
