"""Hostile input for fuzzing a live node (bench/fuzz_node.py and its short test).

``FrameFuzzer(seed).frames()`` makes ZeroMQ messages: random bytes, valid messages
of every type mutated (a field replaced by a hostile value, deleted, bytes flipped,
truncated), strings that are not UTF-8, headers that declare huge lengths, deep
nesting, and messages of several parts. ``http_requests()`` makes HTTP requests at
every route: random methods, mutated JSON bodies, wrong content types, bad UTF-8.
Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import msgspec

from zswarm.core import codec
from zswarm.core import messages as m
from zswarm.core.ids import node_id_of

_KEY = "f00dfeed" * 8  # a card whose id is its key's: mutations start from a valid one
_CARD = m.NodeCard(node_id=node_id_of(_KEY), name="fuzz", model_id="scripted", workers=1,
                   rpc="tcp://127.0.0.1:9", pub="tcp://127.0.0.1:9", public=_KEY)
_GEN = m.GenerateRequest(messages=(m.ChatMessage(role="user", content="What is 6 * 7?"),),
                         params=m.SamplingParams(max_tokens=4), n=2)
_STRUCTURED = m.GenerateRequest(
    messages=(m.ChatMessage(role="user", content="Weather in Paris?"),),
    params=m.SamplingParams(max_tokens=4, logprobs=True, top_logprobs=2), structure=m.Structure(
        format="schema", schema='{"type": "object", "properties": {"a": {"type": "integer"}}}',
        tools=(m.ToolSpec(name="get_weather", parameters='{"type": "object"}'),)))
_CAND = m.Candidate(text="42", finish_reason="stop", tokens=1, mean_logprob=-0.5)
#: one valid message of each type that may reach a node's sockets
SEEDS: list[m.Message] = [
    m.ClientRequest(request_id="r", request=_GEN, strategy="majority", deadline_ms=2000),
    m.ClientRequest(request_id="r", request=_GEN, strategy="confidence", adaptive=True),
    m.ClientRequest(request_id="r", request=_GEN, stream=True),
    m.ClientToken(request_id="r", text="4"),
    m.StatusRequest(request_id="r"),
    m.StatusRequest(request_id="r", sender="f00dfeed", card=_CARD, standing=True),
    m.PeersRequest(request_id="r"),
    m.Cancel(request_id="r"),
    m.VoteRequest(request_id="r", request=_GEN, deadline_ms=2000, origin="fuzz"),
    m.VoteRequest(request_id="r", request=_STRUCTURED, deadline_ms=2000, origin="fuzz",
                  model_id="scripted"),
    m.Vote(request_id="r", node_id="f00dfeed", name="fuzz", candidates=[_CAND]),
    m.Heartbeat(card=_CARD, seq=1, load=m.Load(workers_ready=1)),
    m.Error(request_id="r", kind="protocol", message="x"),
    m.ClientReply(request_id="r", answer="42", report=m.Report(
        strategy="majority", winner=0, agreement=1.0, candidates=[])),
    m.WorkGenerate(request_id="r", request=_GEN), m.WorkToken(request_id="r", index=0, text="x"),
    m.WorkCandidate(request_id="r", index=0, candidate=_CAND), m.WorkDone(request_id="r"),
]

_PRE = [b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
        b"\xc6\xff\xff\xff\xff", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xc1", b"\xd4\x01"]


class FrameFuzzer:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def hostile_value(self, depth: int = 0) -> Any:
        r = self.rng
        choice = r.randrange(12 if depth < 3 else 9)
        if choice == 0:
            return None
        if choice == 1:
            return r.choice([0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 10**6, 2**31])
        if choice == 2:
            return r.choice([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 0.5])
        if choice == 3:
            return "".join(chr(r.randrange(0x20, 0x2FFF)) for _ in range(r.randrange(0, 20)))
        if choice == 4:
            return "x" * r.choice([0, 1, 255, 256, 257, 4097, 70_000])
        if choice == 5:
            return bytes(r.randrange(256) for _ in range(r.randrange(0, 20)))
        if choice == 6:
            return r.choice([True, False])
        if choice == 7:
            return r.choice(["", "tcp://127.0.0.1:-1", "ipc:///tmp/x", "leaving", "majority"])
        if choice == 8:
            return "\x00" * r.randrange(1, 10)
        if choice == 9:
            return [self.hostile_value(depth + 1) for _ in range(r.randrange(0, 5))]
        if choice == 10:
            return {str(self.hostile_value(depth + 1))[:20]: self.hostile_value(depth + 1)
                    for _ in range(r.randrange(0, 5))}
        return [[[[]]]] * r.randrange(0, 50)

    def mutate(self, msg: m.Message) -> bytes:
        r = self.rng
        raw = msgspec.to_builtins(msg)
        for _ in range(r.randrange(1, 4)):
            node: Any = raw
            while isinstance(node, (dict, list)) and node and r.random() < 0.6:
                key = r.choice(list(node)) if isinstance(node, dict) else r.randrange(len(node))
                child = node[key]
                if not isinstance(child, (dict, list)) or not child or r.random() < 0.4:
                    if isinstance(node, dict) and r.random() < 0.2:
                        del node[key]
                    else:
                        node[key] = self.hostile_value()
                    break
                node = child
            else:
                if isinstance(node, dict):
                    node[str(self.hostile_value())[:10]] = self.hostile_value()
        try:
            return msgspec.msgpack.encode(raw)
        except (OverflowError, TypeError, ValueError, msgspec.EncodeError):
            return codec.encode(msg)[: r.randrange(1, 40)]

    def frame(self) -> bytes:
        r = self.rng
        kind = r.randrange(10)
        if kind == 0:
            return bytes(r.randrange(256) for _ in range(r.randrange(0, 200)))
        if kind == 1:
            whole = codec.encode(r.choice(SEEDS))
            return whole[: r.randrange(0, len(whole))]
        if kind == 2:
            flipped = bytearray(codec.encode(r.choice(SEEDS)))
            for _ in range(r.randrange(1, 6)):
                flipped[r.randrange(len(flipped))] = r.randrange(256)
            return bytes(flipped)
        if kind == 3:  # a str header over bytes that are not UTF-8
            return b"\x81\xa4type" + bytes([0xA0 | 2]) + bytes([0xDF, r.randrange(0x80, 0xC0)])
        if kind == 4:
            return r.choice(_PRE) + bytes(r.randrange(256) for _ in range(r.randrange(0, 10)))
        if kind == 5:
            opener = r.choice([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"])
            return opener * r.randrange(1, 50_000) + b"\xc0"
        return self.mutate(r.choice(SEEDS))

    def frames(self) -> Iterator[list[bytes]]:
        """Messages for a DEALER: mostly one part, sometimes several or none."""
        while True:
            parts = 1 if self.rng.random() < 0.9 else self.rng.randrange(0, 5)
            yield [self.frame() for _ in range(parts)] or [b""]

    def http_requests(self) -> Iterator[tuple[str, str, dict[str, str], bytes]]:
        """(method, path, headers, body) at every route of the HTTP shim."""
        r = self.rng
        routes = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
                  "/metrics", "/v1/federation/vote", "/v1/federation/health",
                  "/v1/federation/peers", "/", "/status.js", "/status.css", "/v1/status",
                  "/v1/%ff", "/v1/chat/completions/../x"]
        chat = {"model": "default", "messages": [{"role": "user", "content": "What is 2+2?"}],
                "max_tokens": 4}
        structured = {**chat, "response_format": {"type": "json_schema", "json_schema": {
            "name": "n", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object"}}}], "tool_choice": "auto", "top_logprobs": 2, "logprobs": True}
        while True:
            method = r.choice(["GET", "POST", "POST", "POST", "PUT", "DELETE", "OPTIONS"])
            path = r.choice(routes)
            headers = {"content-type": r.choice(["application/json", "application/json",
                                                 "text/plain", "application/json; charset=x"])}
            base: Any = {"request": msgspec.to_builtins(r.choice([_GEN, _STRUCTURED])),
                         "deadline_ms": 2000} \
                if path.endswith("/vote") else json.loads(json.dumps(r.choice([chat, structured])))
            kind = r.randrange(5)
            if kind == 0:
                body = bytes(r.randrange(256) for _ in range(r.randrange(0, 300)))
            elif kind == 1:
                body = json.dumps(base).encode().replace(b"2+2", b"\xff\xfe")
            else:
                for _ in range(r.randrange(1, 4)):
                    key = r.choice(list(base) + ["n", "stream", "zswarm", "stop", "temperature",
                                                 "tools", "tool_choice", "response_format"])
                    base[key] = self.hostile_value()
                body = json.dumps(base, default=repr).encode()
            yield method, path, headers, body
