"""Bytes <-> messages (msgpack via msgspec). Bad bytes raise RemoteProtocolError, never crash."""

from __future__ import annotations

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
        raise RemoteProtocolError(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        version = _peek_version(data)
        if version is not None and version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})"
            ) from exc
        raise RemoteProtocolError(f"malformed message: {exc}") from exc
    if msg.v != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"protocol version {msg.v} is not supported (this node speaks {PROTOCOL_VERSION})"
        )
    return msg


def _peek_version(data: bytes) -> int | None:
    try:
        return _envelope_decoder.decode(data).v
    except msgspec.DecodeError:
        return None
