from __future__ import annotations

import msgpack
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zswarm.core import codec
from zswarm.core import messages as m
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
    lambda rid, content, n, mt, temp, seed, adaptive: ClientRequest(
        request_id=rid,
        request=GenerateRequest(messages=(ChatMessage(role="user", content=content),), n=n,
                                params=SamplingParams(max_tokens=mt, temperature=temp, seed=seed)),
        strategy="majority", adaptive=adaptive),
    st.text(max_size=40), st.text(max_size=500), st.integers(1, 32), st.integers(1, 4096),
    st.floats(0, 5), st.one_of(st.none(), st.integers(0, 2**63 - 1)), st.booleans())


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
    with pytest.raises(RemoteProtocolError, match=f"protocol version {PROTOCOL_VERSION + 1}"):
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


# --- every message type, and hostile mutations of each -------------------------------

CARD = m.NodeCard(node_id="n1", name="one", model_id="m", workers=1, rpc="tcp://10.0.0.1:1",
                  pub="tcp://10.0.0.1:2")
GEN = m.GenerateRequest(messages=(m.ChatMessage(role="user", content="hi"),), n=2)
#: a structured request: a schema, tools, a call and a tool's result in the history
STRUCTURED = m.GenerateRequest(
    messages=(m.ChatMessage(role="user", content="weather?"),
              m.ChatMessage(role="assistant", content="", tool_calls=(
                  m.ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}'),)),
              m.ChatMessage(role="tool", content="sunny", tool_call_id="c1")),
    params=m.SamplingParams(logprobs=True, top_logprobs=3, presence_penalty=0.5,
                            logit_bias={42: -100.0}),
    structure=m.Structure(format="schema", schema='{"type": "object"}', tools=(
        m.ToolSpec(name="get_weather", parameters='{"type": "object"}'),),
        tool_choice="required"))
CAND = m.Candidate(text="42", finish_reason="stop", tokens=1, mean_logprob=-0.5,
                   token_logprobs=[m.TokenLogprob("42", -0.5, (("42", -0.5), ("41", -2.0)))])
REPORT = m.Report(strategy="majority", winner=0, agreement=1.0, candidates=[
    m.ReportCandidate(node="a", worker="w0", text="42", score=1.0, finish_reason="stop",
                      latency_ms=1.0)], participants=[
    m.Participant(node="a", requested=1, received=1, outcome="answered")])
EVERY_MESSAGE = [
    m.ClientRequest(request_id="r", request=GEN, strategy="majority", deadline_ms=1000),
    m.ClientRequest(request_id="r", request=GEN, strategy="confidence", adaptive=True),
    m.ClientRequest(request_id="r", request=STRUCTURED, stream=True),
    m.ClientToken(request_id="r", text="Par"),
    m.ClientProgress(request_id="r", node="a"),
    m.ClientReply(request_id="r", answer="42", report=REPORT),
    m.ClientReply(request_id="r", answer="42", report=msgspec.structs.replace(
        REPORT, budget=16, waves=2, stop="settled")),
    m.StatusRequest(request_id="r"),
    m.StatusRequest(request_id="r", sender="n1", card=CARD, standing=True),
    m.Status(request_id="r", card=CARD, load=m.Load()),
    m.Error(request_id=None, kind="protocol", message="bad"),
    m.PeersRequest(request_id="r"),
    m.PeersReply(request_id="r", node=CARD, peers=[m.PeerInfo(
        node_id="n2", name="two", address="10.0.0.2", state="alive", model_id="m",
        load=m.Load(), last_seen_s=0.1, rtt_ms=0.2, source="mdns")]),
    m.Heartbeat(card=CARD, seq=1, load=m.Load(workers_ready=1)),
    m.VoteRequest(request_id="r", request=GEN, deadline_ms=1000, origin="a"),
    m.VoteRequest(request_id="r", request=STRUCTURED, deadline_ms=1000, origin="a",
                  model_id="m@1"),
    m.Vote(request_id="r", node_id="n1", name="one", candidates=[CAND]),
    m.Cancel(request_id="r"),
    m.ModelRequest(request_id="r", model_id="a.gguf@0123456789abcdef", chunks=True),
    m.ModelOffer(request_id="r", model_id="a.gguf@0123456789abcdef", name="a.gguf",
                 size=70_000, sha256="0123456789abcdef" * 4, chunk_bytes=65_536,
                 chunk_sha256=[b"\x01" * 32, b"\x02" * 32]),
    m.ChunkRequest(request_id="r", model_id="a.gguf@0123456789abcdef", index=1),
    m.Chunk(request_id="r", index=1, data=b"GGUF" * 100),
    m.WorkGenerate(request_id="r", request=GEN, stream=True),
    m.WorkCancel(request_id="r"),
    m.WorkReady(worker="w0", model_id="m", pid=1),
    m.WorkToken(request_id="r", index=0, text="4"),
    m.WorkCandidate(request_id="r", index=0, candidate=CAND),
    m.WorkDone(request_id="r"),
]


def test_every_message_type_is_covered_and_round_trips():
    assert {type(msg) for msg in EVERY_MESSAGE} == set(m.Message.__args__)
    for msg in EVERY_MESSAGE:
        assert codec.decode(codec.encode(msg)) == msg


def test_the_frame_that_once_killed_nodes():
    with pytest.raises(RemoteProtocolError):
        codec.decode(bytes.fromhex("81a474797065a2dfdf"))


# hostile values: wrong types, out-of-range and non-finite numbers, strings that are not
# UTF-8 (as raw msgpack str bytes), deep nesting, long containers
HOSTILE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
              st.binary(max_size=30), st.just("x" * 300)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _encode_any(obj) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return msgpack.packb(repr(obj))


def _check(data: bytes) -> None:
    try:
        msg = codec.decode(data)
    except RemoteProtocolError:
        return
    assert isinstance(msg, m.Message.__args__)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(EVERY_MESSAGE), st.data())
def test_mutated_messages_decode_or_raise_remote_protocol_error(msg, data):
    raw = msgspec.to_builtins(msg)
    paths = [p for p in _paths(raw) if p]
    action = data.draw(st.sampled_from(["replace", "delete", "truncate", "flip", "bad-utf8"]))
    if action in ("replace", "delete") and paths:
        path = data.draw(st.sampled_from(paths))
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        if action == "replace":
            parent[path[-1]] = data.draw(HOSTILE)
        elif isinstance(parent, dict):
            del parent[path[-1]]
    encoded = _encode_any(raw)
    if action == "truncate":
        encoded = encoded[: data.draw(st.integers(0, max(0, len(encoded) - 1)))]
    elif action == "flip" and encoded:
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded = encoded[:i] + bytes([encoded[i] ^ data.draw(st.integers(1, 255))]) + \
            encoded[i + 1:]
    elif action == "bad-utf8":  # every str becomes a str header over bytes that are not UTF-8
        encoded = encoded.replace(b"\xa1r", b"\xa1\xdf")
    _check(encoded)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 200_000), st.sampled_from([b"\x91", b"\x81\xa1k"]))
def test_deep_nesting_never_escapes(depth, opener):
    _check(opener * depth + b"\xc0")


def test_a_card_or_load_claiming_more_models_than_a_node_may_serve_is_refused():
    held = [m.HeldModel(model_id=f"x{i}.gguf@{i}", name=f"x{i}") for i in range(m.MAX_MODELS)]
    fine = m.Heartbeat(card=msgspec.structs.replace(CARD, models=held), seq=1,
                       load=m.Load(models=["loaded"] * m.MAX_MODELS))
    assert codec.decode(codec.encode(fine)) == fine
    for too_many in (
            msgspec.structs.replace(fine, card=msgspec.structs.replace(
                CARD, models=[*held, m.HeldModel(model_id="y")])),
            msgspec.structs.replace(fine, load=m.Load(models=["loaded"] * (m.MAX_MODELS + 1))),
            msgspec.structs.replace(fine, card=msgspec.structs.replace(
                CARD, models=[m.HeldModel(model_id="z", name="n" * 65)]))):
        with pytest.raises(RemoteProtocolError):
            codec.decode(msgspec.msgpack.encode(too_many))
