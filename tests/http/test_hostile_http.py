"""Hostile and slow HTTP clients against a `zswarm node` process (scripted engine, loopback)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.helpers import error_of
from zswarm.testing.cluster import wait_until

from .conftest import start_node

pytestmark = pytest.mark.timeout(120)

CHAT = {"model": "default", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # header and body timeouts far below the generation time: waiting for an answer is
    # not a read timeout; a non-ASCII node name must not break response headers
    with start_node(tmp_path_factory.mktemp("hostile"), name="nœud-ü", answers=["42"],
                    delay_ms=1500, http={"header_timeout_ms": 500, "body_timeout_ms": 500}
                    ) as n:
        yield n


def test_an_answer_slower_than_every_socket_timeout_still_arrives(node):
    r = httpx.post(f"{node.base}/chat/completions", json=CHAT, timeout=30)
    assert r.status_code == 200, r.text
    # the premise: the answer took longer than both socket timeouts (500 ms)
    assert r.json()["zswarm"]["timings"]["total_ms"] >= 1500
    assert r.json()["choices"][0]["message"]["content"] == "42"
    assert r.headers["x-zswarm-nodes"] == "n%C5%93ud-%C3%BC"
    assert r.headers["x-zswarm-nodes"].isascii()


@pytest.mark.parametrize(("body", "status", "param"), [
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),
    (json.dumps({"messages": [{"role": "user", "content": "x"}] * 300}).encode(), 400,
     "messages"),
    (json.dumps({**CHAT, "stop": ["a"] * 9}).encode(), 400, "stop"),
    (json.dumps({**CHAT, "n": 10_000}).encode(), 400, "n"),
    (json.dumps({**CHAT, "zswarm": {"n": 33}}).encode(), 400, "zswarm.n"),
    (json.dumps({**CHAT, "temperature": 0}).encode().replace(b": 0}", b": 1e999}"), 400,
     "temperature"),
])
def test_bodies_beyond_the_wire_limits_are_refused_naming_the_field(node, body, status, param):
    r = httpx.post(f"{node.base}/chat/completions", content=body, headers=JSON, timeout=30)
    assert r.status_code == status, r.text
    err = error_of(r)
    if param is not None:
        assert err["param"] == param, err


def test_a_slow_body_gets_408_and_slow_headers_are_cut(node):
    host, port = node.root.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
        assert s.recv(4096) == b""  # closed by the node (else the 10 s socket timeout)


def test_a_stream_whose_deadline_is_already_spent_is_an_error_not_a_crash(node):
    body = {**CHAT, "stream": True, "zswarm": {"deadline_ms": 1, "n": 2}}
    with httpx.stream("POST", f"{node.base}/chat/completions", json=body, timeout=30) as r:
        text = r.read().decode()
    assert r.status_code in (200, 503, 504), text
    assert "Traceback" not in text
    health = wait_until(lambda: httpx.get(f"{node.root}/health").status_code == 200, 10,
                        what="node healthy")
    assert health


@pytest.mark.parametrize(("method", "path", "ctype"), [
    ("POST", "/v1/models", "application/json"), ("POST", "/nope", "application/json"),
    ("POST", "/v1/chat/completions", "text/plain")])
def test_a_refused_body_does_not_break_the_next_request_on_the_connection(node, method, path,
                                                                          ctype):
    failures = 0
    with httpx.Client(timeout=30) as http:
        for _ in range(30):
            r = http.request(method, node.root + path, content=b"x" * 300_000,
                             headers={"content-type": ctype})
            assert r.status_code in (404, 405, 415)
            try:
                http.get(f"{node.root}/health")
            except httpx.HTTPError:
                failures += 1
    assert failures == 0
