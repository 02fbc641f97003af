"""The official `openai` package against a node with the real default model."""

from __future__ import annotations

import httpx
import openai
import pytest

from zswarm.client import NodeClient
from zswarm.testing.cluster import wait_until

pytestmark = [pytest.mark.model, pytest.mark.timeout(120)]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(real_node):
    with openai.OpenAI(base_url=real_node.base, api_key="unused", max_retries=0) as c:
        yield c


def test_chat(client):
    r = client.chat.completions.create(model="default", messages=QUESTION, temperature=0,
                                       max_tokens=24)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 24
    assert r.model.startswith("SmolLM2-135M-Instruct")
    report = r.model_extra["zswarm"]
    assert report["nodes"] == ["h"] and report["candidates"][0]["text"] == \
        r.choices[0].message.content


def test_chat_stream_ends_with_the_report(client):
    chunks = list(client.chat.completions.create(model="default", messages=QUESTION,
                                                 temperature=0, max_tokens=24, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert len(chunks) > 3  # tokens arrive as they are generated, not in one piece
    final = chunks[-1]
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.model_extra["zswarm"]["candidates"][0]["text"] == text


def test_completions(client):
    r = client.completions.create(model="default", prompt="The capital of France is",
                                  max_tokens=8, temperature=0)
    assert "Paris" in r.choices[0].text
    assert r.usage.completion_tokens == 8 or r.choices[0].finish_reason == "stop"


def test_models_lists_the_local_model(client):
    ids = [m.id for m in client.models.list()]
    assert len(ids) == 1 and ids[0].startswith("SmolLM2-135M-Instruct.Q4_1.gguf@")


def test_n_choices_with_the_zswarm_report_and_headers(client):
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "Name a colour."}], n=3,
        max_tokens=16, seed=3, extra_body={"zswarm": {"strategy": "weighted_vote"}})
    r = raw.parse()
    assert len(r.choices) == 3 and [c.index for c in r.choices] == [0, 1, 2]
    report = r.model_extra["zswarm"]
    assert report["strategy"] == "weighted_vote" and len(report["candidates"]) == 3
    assert r.choices[0].message.content == report["candidates"][report["winner"]]["text"]
    assert raw.headers["x-zswarm-strategy"] == "weighted_vote"
    assert raw.headers["x-zswarm-nodes"] == "h"


def test_n_choices_use_the_default_strategy_and_all_arrive(client):
    # four equal greedy answers: confidence could stop after three, but n choices were asked
    r = client.chat.completions.create(model="default", messages=QUESTION, n=4, max_tokens=8,
                                       temperature=0.0)
    assert len(r.choices) == 4 and r.model_extra["zswarm"]["strategy"] == "confidence"


def test_consensus_candidates_with_one_answer(client):
    r = client.chat.completions.create(
        model="default", messages=QUESTION, max_tokens=24, temperature=0.7, seed=1,
        extra_body={"zswarm": {"strategy": "majority", "n": 3}})
    assert len(r.choices) == 1 and "Paris" in r.choices[0].message.content
    assert len(r.model_extra["zswarm"]["candidates"]) >= 2


def test_a_budget_answers_once_with_what_it_spent(client):
    r = client.chat.completions.create(
        model="default", messages=QUESTION, max_tokens=12, temperature=0.7,
        extra_body={"zswarm": {"budget": 16}})
    report = r.model_extra["zswarm"]
    assert len(r.choices) == 1 and report["budget"] == 16
    assert 1 <= len(report["candidates"]) <= 16 and report["waves"] >= 1
    assert report["stop"] in ("cannot change", "settled", "no agreement", "budget spent")
    assert r.choices[0].message.content == report["candidates"][report["winner"]]["text"]


def test_the_default_is_one_candidate(client):
    r = client.chat.completions.create(model="default", messages=QUESTION, max_tokens=8,
                                       temperature=0.7)
    report = r.model_extra["zswarm"]
    assert report["budget"] == 0 and len(report["candidates"]) == 1


@pytest.mark.parametrize(("kwargs", "error", "param"), [
    ({"extra_body": {"zswarm": {"budget": 17}}}, openai.BadRequestError,
     "zswarm.budget"),
    ({"extra_body": {"zswarm": {"budget": 4, "n": 4}}}, openai.BadRequestError,
     "zswarm.budget"),
    ({"extra_body": {"zswarm": {"budget": 4, "strategy": "weighted_vote"}}},
     openai.BadRequestError, "zswarm.budget"),
    ({"n": 2, "extra_body": {"zswarm": {"budget": 4}}}, openai.BadRequestError,
     "zswarm.budget"),
    # within the node's characters, over the model's context in tokens: a limit, not a 500
    ({"messages": [{"role": "user", "content": "word " * 6000}]},
     openai.BadRequestError, None),
    ({"model": "gpt-17"}, openai.NotFoundError, "model"),
    ({"max_tokens": 100_000}, openai.BadRequestError, "max_tokens"),
    ({"n": 99}, openai.BadRequestError, "n"),
    ({"temperature": 7.0}, openai.BadRequestError, "temperature"),
    ({"extra_body": {"zswarm": {"strategy": "loudest"}}}, openai.BadRequestError,
     "zswarm.strategy"),
    ({"extra_body": {"zswarm": {"colour": "red"}}}, openai.BadRequestError, "zswarm.colour"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError,
     "messages[0].role"),
])
def test_errors_in_openai_shape(client, kwargs, error, param):
    args = {"model": "default", "messages": QUESTION, "max_tokens": 8, **kwargs}
    with pytest.raises(error) as caught:
        client.chat.completions.create(**args)
    body = caught.value.body
    assert set(body) >= {"message", "type", "code", "param"} and body["message"]
    if param is not None:
        assert body["param"] == param


def test_closing_a_stream_midway_frees_the_worker_within_a_second(real_node):
    body = {"model": "default", "stream": True, "max_tokens": 3000, "temperature": 1.0,
            "messages": [{"role": "user", "content": "Write a very long story about a ship."}]}
    with NodeClient(real_node.rpc) as rpc:
        with httpx.stream("POST", f"{real_node.base}/chat/completions", json=body,
                          timeout=30) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(10)]  # the stream is running
            assert sum(line.startswith("data: ") for line in got) >= 4
            assert rpc.status().load.idle_workers == 0
        # closed: the client is gone, and the generation with it (3000 tokens take this
        # model about 25 s here)
        wait_until(lambda: rpc.status().load.idle_workers == 1, 10.0, what="worker free")


def test_logprobs_per_token(client):
    r = client.chat.completions.create(model="default", messages=QUESTION, temperature=0,
                                       max_tokens=12, logprobs=True)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert all(t.logprob <= 0.0 for t in content) and len(content) == r.usage.completion_tokens
    t = client.completions.create(model="default", prompt="The capital of France is",
                                  max_tokens=6, temperature=0, logprobs=1)
    assert "".join(t.choices[0].logprobs.tokens) == t.choices[0].text
    assert t.choices[0].logprobs.text_offset[0] == 0
