"""Structured asks across the swarm: the vote request carries the constraint, peers decode
under it, candidates are voted by value, and a peer's answer of the wrong shape is dropped."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
import trio

from zswarm.engines.models import resolve_model

from .conftest import wait_peers

pytestmark = [pytest.mark.model, pytest.mark.timeout(240)]

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
ALICE = [{"role": "user", "content": "Alice is 30 years old. Give her name and age."}]


async def ask_person(port: int, *, strategy: str, choices: int, seed: int):
    """Four candidates under the PERSON schema, asked at ``port`` with the openai client."""

    def call():
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                           max_retries=0) as c:
            return c.chat.completions.create(
                model="default", messages=ALICE, max_tokens=60, temperature=0.8, seed=seed,
                n=choices, extra_body={"zswarm": {"n": 4, "strategy": strategy}},
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "p", "schema": PERSON}})

    return await trio.to_thread.run_sync(call)


async def test_two_real_nodes_vote_on_json_values(cluster):
    # one thread each: two llama.cpp workers of two threads on 2 cores crawl (they spin)
    a = await cluster.start("a", model={"threads": 1}, federation={"discovery": "mdns"})
    await cluster.start("b", model={"threads": 1}, federation={"discovery": "mdns"})
    await wait_peers(a, lambda t: t.get("b") == "alive", timeout_s=60)
    r = await ask_person(a.http_port, strategy="majority", choices=4, seed=3)
    report = r.model_extra["zswarm"]
    assert sorted({c["node"] for c in report["candidates"]}) == ["a", "b"], \
        (report["participants"], report["note"])
    for cand in report["candidates"]:  # b decoded under the same schema
        assert cand["answer_key"].startswith("json:")
        jsonschema.validate(json.loads(cand["text"]), PERSON)
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


async def test_a_peer_answering_the_wrong_shape_is_dropped_and_counted(cluster):
    model_id = resolve_model("default").model_id
    a = await cluster.start("a", model={"threads": 1}, federation={"discovery": "mdns"})
    await cluster.start("liar", answers=['{"name": "Mallory"', "Sure! Alice, 30."],
                        model_id=model_id, script={"mean_logprob": [-0.001]},
                        federation={"discovery": "mdns"})
    await wait_peers(a, lambda t: t.get("liar") == "alive", timeout_s=60)
    r = await ask_person(a.http_port, strategy="confidence", choices=1, seed=5)
    report = r.model_extra["zswarm"]
    liars = [c for c in report["candidates"] if c["node"] == "liar"]
    assert liars and all(c["answer_key"] is None for c in liars)
    assert report["candidates"][report["winner"]]["node"] == "a"
    assert "not of the requested shape" in report["note"]
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)
    # the drop is counted where an operator looks

    metrics = await trio.to_thread.run_sync(
        lambda: httpx.get(f"http://127.0.0.1:{a.http_port}/metrics").text)
    line = next(x for x in metrics.splitlines() if x.startswith("zswarm_candidates_misshapen"))
    assert float(line.split()[-1]) >= len(liars)
