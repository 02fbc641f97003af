"""Two real models on two nodes: every node lists both, and answers for both."""

from __future__ import annotations

import httpx
import pytest
import trio

from zswarm.testing.models import requantized

from .conftest import wait_peers

pytestmark = [pytest.mark.model, pytest.mark.timeout(240)]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)


def chat(port: int, model: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
        "model": model, "messages": QUESTION, "max_tokens": 16, "temperature": 0})


async def test_one_endpoint_for_the_models_of_two_nodes(cluster):
    q8 = await trio.to_thread.run_sync(requantized, "Q8_0")
    # one thread each: two llama.cpp workers of two threads on 2 cores crawl (they spin)
    a = await cluster.start("a", model={"threads": 1}, federation={"discovery": "mdns"})
    b = await cluster.start("b", model={"path": str(q8), "threads": 1},
                            federation={"discovery": "mdns"})
    await wait_peers(a, lambda t: t.get("b") == "alive", timeout_s=60)
    await wait_peers(b, lambda t: t.get("a") == "alive", timeout_s=60)
    assert a.model_id != b.model_id

    listed = {}
    for node in (a, b):
        data = (await trio.to_thread.run_sync(get, node.http_port, "/v1/models")).json()["data"]
        listed[node.name] = {m["id"]: [h["node"] for h in m["zswarm"]["holders"]] for m in data}
        assert data[0]["id"] == node.model_id  # this node's own model first
    assert listed["a"] == listed["b"] == {a.model_id: ["a"], b.model_id: ["b"]}

    for name in (b.model_id, "SmolLM2-135M-Instruct.Q8_0.gguf", "SmolLM2-135M-Instruct.Q8_0"):
        r = await trio.to_thread.run_sync(chat, a.http_port, name)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == b.model_id and body["zswarm"]["nodes"] == ["b"]
        assert "Paris" in body["choices"][0]["message"]["content"]
    r = await trio.to_thread.run_sync(chat, b.http_port, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert r.status_code == 200 and r.json()["zswarm"]["nodes"] == ["a"]

    r = await trio.to_thread.run_sync(chat, a.http_port, "gpt-17")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert a.model_id in error["message"] and b.model_id in error["message"]
