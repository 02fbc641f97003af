from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zswarm.core import codec
from zswarm.core.messages import (
    PROTOCOL_VERSION,
    ChatMessage,
    ClientRequest,
    GenerateRequest,
    SamplingParams,
    WorkCancel,
)
from zswarm.errors import RemoteProtocolError

requests = st.builds(
    lambda rid, content, n, mt, temp, seed: ClientRequest(
        request_id=rid,
        request=GenerateRequest(messages=(ChatMessage(role="user", content=content),), n=n,
                                params=SamplingParams(max_tokens=mt, temperature=temp, seed=seed)),
        strategy="majority"),
    st.text(max_size=40), st.text(max_size=500), st.integers(1, 32), st.integers(1, 4096),
    st.floats(0, 5), st.one_of(st.none(), st.integers(0, 2**63 - 1)))


@settings(max_examples=200)
@given(requests)
def test_round_trip(msg):
    assert codec.decode(codec.encode(msg)) == msg


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_never_crashes(data):
    try:
        codec.decode(data)
    except RemoteProtocolError:
        pass


def test_wrong_version_is_named():
    raw = msgpack.packb({"type": "work_cancel", "v": PROTOCOL_VERSION + 1, "request_id": "x"})
    with pytest.raises(RemoteProtocolError, match="protocol version 2"):
        codec.decode(raw)
    raw = msgpack.packb({"type": "future_thing", "v": 99, "blob": [1, 2]})
    with pytest.raises(RemoteProtocolError, match="protocol version 99"):
        codec.decode(raw)


def test_unknown_fields_ignored_missing_fields_refused():
    raw = msgpack.packb({"type": "work_cancel", "v": PROTOCOL_VERSION, "request_id": "x",
                         "new_field": 1})
    assert codec.decode(raw) == WorkCancel(request_id="x")
    with pytest.raises(RemoteProtocolError, match="request_id"):
        codec.decode(msgpack.packb({"type": "work_cancel", "v": PROTOCOL_VERSION}))


def test_out_of_range_values_refused():
    msg = ClientRequest(request_id="r", request=GenerateRequest(prompt="hi", n=1))
    raw = msgpack.unpackb(codec.encode(msg))
    raw["request"]["n"] = 10_000
    with pytest.raises(RemoteProtocolError, match="n"):
        codec.decode(msgpack.packb(raw))


def test_oversize_frame_refused():
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        codec.decode(b"\x00" * 100, max_bytes=10)
