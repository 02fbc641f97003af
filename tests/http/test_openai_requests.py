"""The OpenAI request decoder and the ask it builds, over hostile bodies (no node needed):
every body is an ask or a 400 naming a parameter, never another exception."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from zswarm.config import parse_config
from zswarm.http import contract, openai
from zswarm.http.openai import ApiError

CONFIG = parse_config({})
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=16)
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
BASE = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "tools": [TOOL],
        "tool_choice": "auto", "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object"}}}, "logprobs": True, "top_logprobs": 2,
        "stream": True, "stream_options": {"include_usage": True}}
FIELDS = [*BASE, "parallel_tool_calls", "logit_bias", "presence_penalty", "n", "max_tokens",
          "temperature", "top_p", "stop", "seed", "user", "store", "zswarm"]


def build(body: bytes) -> None:
    refused: ApiError | None = None
    try:
        contract.to_ask(openai.decode(body, openai.ChatCompletionRequest), CONFIG, None)
    except ApiError as exc:
        refused = exc
    if refused is not None:
        assert refused.status == 400 and refused.type == "invalid_request_error"
        assert refused.message


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4), st.data())
def test_hostile_values_of_every_field_are_an_ask_or_a_400(replace, data):
    body = {**BASE, **replace}
    if data.draw(st.booleans()):  # the same inside a tool and the schema
        body["tools"] = [{"type": "function", "function": {
            "name": "f", "parameters": data.draw(JSON)}}]
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "x", "schema": data.draw(JSON)}}
    build(json.dumps(body).encode())


@settings(max_examples=200)
@given(st.lists(st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "name",
                                                 "tool_call_id", "refusal"]), JSON,
                                max_size=4), max_size=4))
def test_hostile_messages_are_an_ask_or_a_400(messages):
    build(json.dumps({**BASE, "messages": messages}).encode())


@given(st.binary(max_size=200))
def test_any_bytes_are_an_ask_or_a_400(body):
    build(body)


def test_a_committee_that_cannot_be_one_is_refused_naming_zswarm_models():
    def ask(**zswarm: object) -> ApiError:
        body = json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}],
                           "zswarm": zswarm}).encode()
        req = openai.decode(body, openai.ChatCompletionRequest)
        try:
            contract.to_ask(req, CONFIG, None, ("a@1", "b@2", "c@3"))
        except ApiError as exc:
            return exc
        raise AssertionError("not refused")

    for options, why in (({"budget": 8}, "not a budget"), ({"n": 2}, "fewer than the models"),
                         ({"n": 4, "strategy": "route"}, "one node")):
        refused = ask(**options)
        assert refused.status == 400 and refused.param == "zswarm.models", refused.message
        assert why in refused.message
    req = openai.decode(json.dumps({"messages": [{"role": "user", "content": "hi"}],
                                    "zswarm": {"n": 4}}).encode(), openai.ChatCompletionRequest)
    ask_ = contract.to_ask(req, CONFIG, None, ("a@1", "b@2")).ask
    assert ask_.models == ("a@1", "b@2") and ask_.request.n == 4
