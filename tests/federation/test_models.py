"""Several real models on one node, loaded on demand within its memory budget, and a
model that only a peer holds, loaded there by a request at another node."""

from __future__ import annotations

import httpx
import openai
import pytest
import trio

from zswarm import client
from zswarm.cli.swarm import swarm_models
from zswarm.engines.models import resolve_model
from zswarm.testing.cluster import wait_until
from zswarm.testing.models import requantized

from .conftest import wait_peers

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def small_and_q8(q8: str, **q8_entry: object) -> list[dict[str, object]]:
    """The default model (loaded at start) and its Q8_0 requantization (on demand); one
    thread each (two llama.cpp workers of two threads on 2 cores crawl: they spin)."""
    common = {"threads": 1, "n_ctx": 1024}
    return [{"name": "small", "path": "default", "preload": True, **common},
            {"name": "q8", "path": q8, **common, **q8_entry}]


def ask(port: int, model: str) -> tuple[str, str]:
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                       max_retries=0, timeout=120) as c:
        r = c.chat.completions.create(model=model, messages=QUESTION, max_tokens=12,
                                      temperature=0)
    return r.model, r.choices[0].message.content or ""


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)


def states(port: int) -> dict[str, dict[str, str]]:
    """Model (its file name without .gguf) -> node -> its state there, from /v1/models."""
    data = get(port, "/v1/models").json()["data"]
    return {m["zswarm"]["name"].removesuffix(".gguf").split(".")[-1]:
            {h["node"]: h["state"] for h in m["zswarm"]["holders"]} for m in data}


async def test_a_node_loads_its_models_on_demand_within_its_budget(cluster):
    q8 = str(await trio.to_thread.run_sync(requantized, "Q8_0"))
    # the two take about 164 and 207 MiB (engines/models.estimate_mib): one fits at a time
    a = await cluster.start("a", models=small_and_q8(q8),
                            node={"memory_budget_mib": 300, "min_resident_s": 0},
                            federation={"enabled": False})
    port = a.http_port
    assert await trio.to_thread.run_sync(states, port) == {
        "Q4_1": {"a": "loaded"}, "Q8_0": {"a": "unloaded"}}

    model, text = await trio.to_thread.run_sync(ask, port, "q8")  # loads q8, unloads small
    assert model.startswith("SmolLM2-135M-Instruct.Q8_0.gguf@") and "Paris" in text
    assert await trio.to_thread.run_sync(states, port) == {
        "Q4_1": {"a": "unloaded"}, "Q8_0": {"a": "loaded"}}
    model, text = await trio.to_thread.run_sync(ask, port, "small")
    assert model == a.model_id and "Paris" in text

    status = (await trio.to_thread.run_sync(get, port, "/v1/status")).json()
    assert {m["name"]: (m["state"], m["loads"]) for m in status["models"]} == {
        "small": ("loaded", 2), "q8": ("unloaded", 1)}
    assert status["memory"]["estimate_mib"] <= status["memory"]["budget_mib"] == 300
    metrics = (await trio.to_thread.run_sync(get, port, "/metrics")).text
    assert 'zswarm_model_state{model="' in metrics and 'name="q8",state="unloaded"} 1.0' \
        in metrics

    with pytest.raises(openai.NotFoundError) as caught:  # a model nobody serves
        await trio.to_thread.run_sync(ask, port, "gpt-17")
    assert a.model_id in str(caught.value) and "Q8_0.gguf@" in str(caught.value)


async def test_a_model_only_a_peer_holds_is_loaded_there_by_a_request_here(cluster):
    q8 = str(await trio.to_thread.run_sync(requantized, "Q8_0"))
    a = await cluster.start("a", model={"threads": 1, "n_ctx": 1024},
                            federation={"discovery": "mdns"})
    b = await cluster.start("b", models=small_and_q8(q8), federation={"discovery": "mdns"})
    await wait_peers(a, lambda t: t.get("b") == "alive", timeout_s=60)
    listed = await trio.to_thread.run_sync(states, a.http_port)
    assert listed == {"Q4_1": {"a": "loaded", "b": "loaded"}, "Q8_0": {"b": "unloaded"}}

    model, text = await trio.to_thread.run_sync(ask, a.http_port, "q8")
    assert model.startswith("SmolLM2-135M-Instruct.Q8_0.gguf@") and "Paris" in text
    # b's heartbeats say it is loaded now: every node's catalog agrees within a few
    for node in (a, b):
        await trio.to_thread.run_sync(lambda n=node: wait_until(
            lambda: states(n.http_port)["Q8_0"] == {"b": "loaded"}, 30, what="q8 loaded"))

    # in a thread: swarm_models asks the holders over RPC (blocking the loop would stall
    # both nodes, and b would look silent to a)
    reply = await trio.to_thread.run_sync(lambda: client.peers(a.rpc_endpoint))
    listing = await trio.to_thread.run_sync(swarm_models, reply, None)
    rows = {m["name"]: m["states"] for m in listing}
    assert {h["node"]: h["state"] for h in rows["SmolLM2-135M-Instruct.Q8_0.gguf"]} == {
        "b": "loaded"}

    # a committee across the two models, asked at a (which holds one of them)
    def committee() -> dict:
        with openai.OpenAI(base_url=f"http://127.0.0.1:{a.http_port}/v1", api_key="unused",
                           max_retries=0, timeout=120) as c:
            r = c.chat.completions.create(
                model="swarm", messages=QUESTION, max_tokens=12, temperature=0.7,
                extra_body={"zswarm": {"n": 4, "strategy": "majority"}})
        return r.model_extra["zswarm"]

    report = await trio.to_thread.run_sync(committee)
    made = sorted(c["model_id"].split("@")[0] for c in report["candidates"])
    assert made == ["SmolLM2-135M-Instruct.Q4_1.gguf"] * 2 + \
        ["SmolLM2-135M-Instruct.Q8_0.gguf"] * 2, report


async def test_a_swarm_model_is_pulled_by_its_first_request_not_at_start(cluster):
    q8 = str(await trio.to_thread.run_sync(requantized, "Q8_0"))
    q8_id = (await trio.to_thread.run_sync(resolve_model, q8)).model_id
    a = await cluster.start("a", models=small_and_q8(q8), federation={"discovery": "static"})
    b = await cluster.start("b", federation={"discovery": "static", "peers": [a.rpc_endpoint]},
                            models=[small_and_q8(q8)[0],
                                    {"name": "q8", "path": f"swarm:{q8_id}", "threads": 1,
                                     "n_ctx": 1024}])
    await wait_peers(a, lambda t: t.get("b") == "alive", timeout_s=60)
    await trio.to_thread.run_sync(lambda: wait_until(  # b's card lists it: not pulled yet
        lambda: states(a.http_port)["Q8_0"] == {"a": "unloaded", "b": "unloaded"}, 30,
        what="b lists q8"))
    pulled_dir = cluster.directory / "b" / "state" / "models"
    assert not pulled_dir.exists() or not list(pulled_dir.glob("*.gguf"))

    model, text = await trio.to_thread.run_sync(ask, b.http_port, "q8")  # b pulls and loads
    assert model == q8_id and "Paris" in text
    (got,) = pulled_dir.glob("*.gguf")
    assert (await trio.to_thread.run_sync(resolve_model, str(got))).model_id == q8_id
    assert (await trio.to_thread.run_sync(states, b.http_port))["Q8_0"]["b"] == "loaded"
