"""Raw HTTP against nodes with scripted engines: errors, limits, auth, cancellation, load."""

from __future__ import annotations

import json
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.helpers import error_of
from zswarm.client import NodeClient
from zswarm.core.messages import ChatMessage, GenerateRequest
from zswarm.errors import Draining
from zswarm.testing.cluster import NodeProcess, free_port, node_config, wait_until

from .conftest import start_node

pytestmark = pytest.mark.timeout(120)

CHAT = {"model": "default", "messages": [{"role": "user", "content": "What is 6 * 7?"}]}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with start_node(tmp_path_factory.mktemp("raw"), answers=["42"],
                    http={"max_body_bytes": 4096}) as n:
        yield n


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "not valid JSON"),
    (b'{"messages": "hi"}', 400, "invalid request: messages: Expected `array`"),
    (b'{"messages": [{"role": "user", "content": "x"}], "n": "two"}', 400,
     "invalid request: n: Expected `int`"),
    (b'{"messages": [{"role": "user", "content": "x"}], "stream": 3}', 400,
     "invalid request: stream: Expected `bool`"),
    (b'{"model": "default"}', 400, "messages"),
    (b'[1, 2]', 400, "Expected `object`"),
    (b'{"messages": []}', 400, "must not be empty"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400, "max_tokens"),
])
def test_malformed_bodies(node, body, status, needle):
    r = httpx.post(f"{node.base}/chat/completions", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == status
    assert needle in error_of(r)["message"] and "$." not in error_of(r)["message"]


def test_body_limits_and_content_types(node):
    big = json.dumps({**CHAT, "pad": "x" * 10_000}).encode()
    r = httpx.post(f"{node.base}/chat/completions", content=big,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in error_of(r)["message"]

    def chunks():  # no Content-Length: the cap applies while reading
        for _ in range(10):
            yield b" " * 1000
        yield json.dumps(CHAT).encode()

    r = httpx.post(f"{node.base}/chat/completions", content=chunks(),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = httpx.post(f"{node.base}/chat/completions", content=b"messages=hi",
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in error_of(r)["message"]
    huge_prompt = {"model": "default", "messages": [{"role": "user", "content": "y" * 3000}]}
    assert httpx.post(f"{node.base}/chat/completions", json=huge_prompt).status_code == 200


def test_unknown_routes_and_methods(node):
    r = httpx.get(f"{node.base}/engines")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = httpx.get(f"{node.base}/chat/completions")
    assert r.status_code == 405
    error_of(r)


def test_health_metrics_and_federation_routes(node):
    assert httpx.get(f"{node.root}/health").json()["status"] == "ready"
    httpx.post(f"{node.base}/chat/completions", json=CHAT)
    text = httpx.get(f"{node.root}/metrics").text
    for name in ("zswarm_http_requests_total", "zswarm_request_errors_total",
                 "zswarm_tokens_generated_total", "zswarm_queue_depth", "zswarm_votes_sent_total",
                 "zswarm_peers", "zswarm_consensus_agreement_bucket",
                 "zswarm_vote_rtt_seconds_bucket", "zswarm_tokens_per_second"):
        assert name in text, name
    assert 'zswarm_http_requests_total{code="200",route="/v1/chat/completions"}' in text
    health = httpx.get(f"{node.base}/federation/health").json()
    assert health["node"]["name"] == "h" and health["load"]["workers_ready"] == 1
    assert httpx.get(f"{node.base}/federation/peers").json() == []
    vote = httpx.post(f"{node.base}/federation/vote", json={
        "request": {"messages": [{"role": "user", "content": "q"}], "n": 2},
        "deadline_ms": 5000}).json()
    assert vote["type"] == "vote" and [c["text"] for c in vote["candidates"]] == ["42", "42"]
    # a vote for a model this node does not serve is refused (never answered by another)
    wrong = httpx.post(f"{node.base}/federation/vote", json={
        "request": {"messages": [{"role": "user", "content": "q"}]}, "deadline_ms": 5000,
        "model_id": "other.gguf@0123456789abcdef"})
    assert wrong.status_code == 422 and "not serve other.gguf@0123456789abcdef" in wrong.text
    assert wrong.json()["error"]["param"] == "model_id"


def test_slow_client_does_not_block_others(node):
    host, port = node.root.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Length: 500\r\nContent-Type: application/json\r\n\r\n{\"messa")
        r = httpx.post(f"{node.base}/chat/completions", json=CHAT, timeout=10)
        assert r.status_code == 200
        slow.setblocking(False)  # ... answered while the slow one still waits for its body
        with pytest.raises(BlockingIOError):
            slow.recv(1)


def test_api_keys(tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text("# one per line\nk-from-file\n")
    with start_node(tmp_path, answers=["42"], http={"api_keys": ["k1"],
                                                    "api_key_file": str(keyfile)}) as n:
        r = httpx.post(f"{n.base}/chat/completions", json=CHAT)
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
        assert "zswarm http-token --config" in error_of(r)["message"]  # where a token comes from
        assert httpx.get(f"{n.root}/metrics", headers={"authorization": "Bearer no"}
                         ).status_code == 401
        assert httpx.get(f"{n.root}/health").status_code == 200  # stays open
        for key in ("k1", "k-from-file"):
            with openai.OpenAI(base_url=n.base, api_key=key, max_retries=0) as c:
                assert c.chat.completions.create(**CHAT).choices[0].message.content == "42"
        with openai.OpenAI(base_url=n.base, api_key="wrong", max_retries=0) as c, \
                pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(**CHAT)


def test_cors_when_configured(tmp_path):
    with start_node(tmp_path, answers=["42"],
                    http={"cors_origins": ["http://localhost:3000"]}) as n:
        r = httpx.options(f"{n.base}/chat/completions", headers={
            "origin": "http://localhost:3000", "access-control-request-method": "POST"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = httpx.options(f"{n.base}/chat/completions", headers={
            "origin": "http://evil.example", "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in r.headers


def test_deadline_is_504_and_full_queue_is_503_with_retry_after(tmp_path):
    with start_node(tmp_path, answers=["42"], delay_ms=1500, scheduler={"max_queue": 1}) as n:
        r = httpx.post(f"{n.base}/chat/completions", timeout=10,
                       json={**CHAT, "zswarm": {"deadline_ms": 100}})
        assert r.status_code == 504 and error_of(r)["code"] == "deadline"
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: httpx.post(f"{n.base}/chat/completions",
                                                         json=CHAT, timeout=30), range(6)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and set(codes) <= {200, 503}, codes
        refused = [r for r in results if r.status_code == 503]
        assert refused and all(int(r.headers["retry-after"]) >= 1 for r in refused)
        assert all(error_of(r)["code"] == "overloaded" for r in refused)


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_frees_the_worker_within_a_second(tmp_path, stream):
    with start_node(tmp_path, answers=["42"], delay_ms=20_000) as n, NodeClient(n.rpc) as rpc:
        with pytest.raises(httpx.ReadTimeout):
            with httpx.stream("POST", f"{n.base}/chat/completions", timeout=1.0,
                              json={**CHAT, "stream": stream}) as r:
                r.read()
        assert rpc.status().load.idle_workers == 0  # still generating when the client left
        # free long before the 20 s answer was due: the generation was cancelled
        wait_until(lambda: rpc.status().load.idle_workers == 1, 10.0, what="worker free")


def test_50_concurrent_clients_are_answered_or_refused(tmp_path):
    with start_node(tmp_path, answers=["42"], delay_ms=50, scheduler={"max_queue": 10}) as n:
        rss_before = _rss_kib(n.proc.pid)

        def one(_: int) -> int:
            return httpx.post(f"{n.base}/chat/completions", json=CHAT, timeout=60).status_code

        for _ in range(3):
            with ThreadPoolExecutor(50) as pool:
                codes = list(pool.map(one, range(50)))
            assert len(codes) == 50 and set(codes) <= {200, 503}, codes
            assert codes.count(200) >= 11
        assert _rss_kib(n.proc.pid) - rss_before < 50_000  # KiB: no growth with the load


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_federated_request_over_http(tmp_path):
    with start_node(tmp_path, "a", answers=["42"], swarm="fed-http-x") as a, \
            start_node(tmp_path, "b", answers=["41"], swarm="fed-http-x"):
        wait_until(lambda: [p["state"] for p in httpx.get(f"{a.base}/federation/peers").json()]
                   == ["alive"], 10, what="b alive")
        r = httpx.post(f"{a.base}/chat/completions", json={**CHAT, "n": 2})
        body = r.json()
        assert body["zswarm"]["nodes"] == ["a", "b"], body["zswarm"]  # says why if not
        assert r.headers["x-zswarm-nodes"] == "a,b"
        assert sorted(c["message"]["content"] for c in body["choices"]) == ["41", "42"]
        alone = httpx.post(f"{a.base}/chat/completions",
                           json={**CHAT, "n": 2, "zswarm": {"peers": "none"}}).json()
        assert alone["zswarm"]["nodes"] == ["a"]
        models = httpx.get(f"{a.base}/models").json()["data"]
        assert [m["id"] for m in models] == ["scripted"]



def test_health_is_503_while_the_model_loads(tmp_path):
    port = free_port()
    proc = NodeProcess(node_config(tmp_path, "slow", swarm="load-" + str(port), answers=["42"],
                                   script={"load_delay_ms": 3000}, ports={"http": port}))
    try:
        def loading() -> dict | None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except httpx.TransportError:
                return None
            return r.json() if r.status_code == 503 else None

        assert wait_until(loading, 10, what="503 while loading")["status"] == "loading"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and error_of(r)["code"] == "loading"
        proc.wait_ready(30)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        proc.stop()


def test_sigterm_drains_then_leaves(tmp_path):
    with start_node(tmp_path, answers=["42"], delay_ms=1500) as n:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(httpx.post, f"{n.base}/chat/completions", json=CHAT,
                                  timeout=30)
            with NodeClient(n.rpc) as rpc:
                wait_until(lambda: rpc.status().load.idle_workers == 0, 5, what="busy")
            n.proc.signal(signal.SIGTERM)
            wait_until(lambda: httpx.get(f"{n.root}/health").status_code == 503, 5,
                       what="draining")
            assert httpx.get(f"{n.root}/health").json()["status"] == "draining"
            r = httpx.post(f"{n.base}/chat/completions", json=CHAT)
            assert r.status_code == 503 and error_of(r)["code"] == "draining"
            with NodeClient(n.rpc) as rpc, pytest.raises(Draining):  # the same over RPC
                rpc.ask(GenerateRequest(messages=(ChatMessage(role="user", content="hi"),)),
                        strategy=None, deadline_ms=5000)
            assert running.result().status_code == 200  # the request in flight finished
        assert n.proc.proc.wait(timeout=10) == 0


def test_client_disconnect_cancels_the_vote_on_the_peer(tmp_path):
    with start_node(tmp_path, "a", answers=["42"], swarm="fed-cancel-x") as a, \
            start_node(tmp_path, "b", answers=["41"], delay_ms=20_000, swarm="fed-cancel-x") as b, \
            NodeClient(b.rpc) as peer:
        wait_until(lambda: [p["state"] for p in httpx.get(f"{a.base}/federation/peers").json()]
                   == ["alive"], 10, what="b alive")
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{a.base}/chat/completions", timeout=1.0,
                       json={**CHAT, "n": 2, "zswarm": {"strategy": "best_of_n"}})
        assert peer.status().load.idle_workers == 0  # b is still working on its vote
        wait_until(lambda: peer.status().load.idle_workers == 1, 1.0, what="b's worker free")


def test_finished_streams_do_not_hold_up_a_drain(tmp_path):
    with start_node(tmp_path, answers=["42"]) as n:
        for _ in range(3):
            with httpx.stream("POST", f"{n.base}/chat/completions",
                              json={**CHAT, "stream": True}) as r:
                assert r.read().endswith(b"data: [DONE]\n\n")
        n.proc.signal(signal.SIGTERM)
        assert n.proc.proc.wait(timeout=10) == 0
        log = n.proc.log()
        assert "waiting up to 3 s for 0 in flight" in log, log  # nothing held the drain
        assert "drain timeout" not in log


def test_statuses_through_the_openai_client(tmp_path):
    with start_node(tmp_path, answers=["42"], delay_ms=1500, scheduler={"max_queue": 0},
                    http={"max_body_bytes": 4096}) as n, \
            openai.OpenAI(base_url=n.base, api_key="x", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(**CHAT, extra_body={"zswarm": {"deadline_ms": 50}})
        assert caught.value.status_code == 504 and caught.value.body["code"] == "deadline"
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="default", messages=[
                {"role": "user", "content": "z" * 5000}])
        assert caught.value.status_code == 413
        with ThreadPoolExecutor(2) as pool:  # one is served, the other finds the queue full
            futures = [pool.submit(client.chat.completions.create, **CHAT) for _ in range(2)]
            outcomes, refused = [], []
            for f in futures:
                try:
                    outcomes.append(f.result().choices[0].message.content)
                except openai.InternalServerError as exc:
                    refused.append(exc)
                    outcomes.append(exc.body["code"])
        assert sorted(outcomes) == ["42", "overloaded"]
        assert [(e.status_code, e.response.headers["retry-after"]) for e in refused] == [
            (503, "1")]


def test_a_peer_only_model_is_answered_by_the_peer_also_in_a_stream(tmp_path):
    with start_node(tmp_path, "a", answers=["from a"], model_id="model-a",
                    swarm="fed-model-x") as a, \
            start_node(tmp_path, "b", answers=["from b"], model_id="model-b",
                       swarm="fed-model-x"):
        wait_until(lambda: [p["state"] for p in httpx.get(f"{a.base}/federation/peers").json()]
                   == ["alive"], 10, what="b alive")
        assert sorted(m["id"] for m in httpx.get(f"{a.base}/models").json()["data"]) == [
            "model-a", "model-b"]
        body = httpx.post(f"{a.base}/chat/completions", json={**CHAT, "model": "model-b"}).json()
        assert body["choices"][0]["message"]["content"] == "from b" and body["model"] == "model-b"
        with openai.OpenAI(base_url=a.base, api_key="x", max_retries=0) as client:
            chunks = list(client.chat.completions.create(
                model="model-b", messages=CHAT["messages"], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "from b"
        assert chunks[-1].model_extra["zswarm"]["nodes"] == ["b"]
