"""Tools, structured output and OpenAI's request contract, through the `openai` client,
on a node with the real default model."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
PERSON_FORMAT = {"type": "json_schema",
                 "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time now in a timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                   "required": ["timezone"]}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(real_node):
    with openai.OpenAI(base_url=real_node.base, api_key="unused", max_retries=0) as c:
        yield c


def chat(client, **kw):
    kw.setdefault("model", "default")
    kw.setdefault("messages", ASK_WEATHER)
    return client.chat.completions.create(**kw)


@pytest.mark.parametrize("temperature", [0.2, 0.8, 1.2])
def test_json_schema_answers_validate(client, temperature):
    for seed in range(4):
        r = chat(client, messages=[{"role": "user", "content": "Make up a person."}],
                 response_format=PERSON_FORMAT, temperature=temperature, seed=seed,
                 max_tokens=80)
        choice = r.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), PERSON)


@pytest.mark.parametrize("temperature", [0.2, 0.8])
def test_json_object_answers_parse(client, temperature):
    for seed in range(3):
        r = chat(client, messages=[{"role": "user", "content": "Give the capital of France "
                                    "and its population as JSON."}],
                 response_format={"type": "json_object"}, temperature=temperature, seed=seed,
                 max_tokens=120)
        choice = r.choices[0]
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
        else:  # cut by max_tokens mid-JSON: said so, as OpenAI does
            assert choice.finish_reason == "length"


def test_structured_candidates_are_voted_by_value(client):
    r = chat(client, messages=[{"role": "user",
                                "content": "Alice is 30 years old. Give her name and age."}],
             response_format=PERSON_FORMAT, temperature=0.8, seed=4, max_tokens=60,
             extra_body={"zswarm": {"n": 5, "strategy": "majority"}})
    report = r.model_extra["zswarm"]
    keys = [c["answer_key"] for c in report["candidates"]]
    assert len(keys) >= 3 and all(k.startswith("json:") for k in keys)  # 3 alike: stop
    winner = json.loads(r.choices[0].message.content)
    assert keys[report["winner"]] == "json:" + json.dumps(winner, sort_keys=True,
                                                          separators=(",", ":"))
    assert keys.count(keys[report["winner"]]) == max(keys.count(k) for k in keys)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function",
                                                      "function": {"name": "get_weather"}}])
def test_a_required_call_has_openais_shape(client, tool_choice):
    r = chat(client, tools=[WEATHER, TIME], tool_choice=tool_choice, temperature=0.7, seed=1,
             max_tokens=80)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in ("get_weather", "get_time")
    if tool_choice != "required":
        assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, (WEATHER if call.function.name == "get_weather" else TIME)
                        ["function"]["parameters"])


def test_tool_choice_none_and_auto(client):
    r = chat(client, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=24)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    for seed in range(3):  # text or a valid call: the model's choice
        r = chat(client, tools=[WEATHER], tool_choice="auto", temperature=0.8, seed=seed,
                 max_tokens=60)
        m = r.choices[0].message
        if m.tool_calls:
            assert r.choices[0].finish_reason == "tool_calls"
            assert json.loads(m.tool_calls[0].function.arguments)["city"]
        else:
            assert m.content and "<tool_call>" not in m.content


def test_a_streamed_call_reassembles_to_the_answer(client):
    kw = {"tools": [WEATHER], "tool_choice": "required", "temperature": 0, "max_tokens": 80}
    whole = chat(client, **kw).choices[0].message.tool_calls[0]
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}, **kw))
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for c in chunks[:-1]:
        assert c.usage is None
        delta = c.choices[0].delta
        assert delta.content is None
        for tc in delta.tool_calls or ():
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:  # the id and name come first, once
                assert not entry["id"] and tc.function.name
                entry["id"], entry["name"] = tc.id, tc.function.name
            entry["arguments"] += tc.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert [(v["name"], v["arguments"]) for v in calls.values()] == \
        [(whole.function.name, whole.function.arguments)]


def test_a_two_turn_tool_loop(client):
    first = chat(client, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=80)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK_WEATHER, first.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id,
                "content": json.dumps({"city": "Paris", "sky": "sunny", "celsius": 21})}]
    second = chat(client, messages=history, tools=[WEATHER], temperature=0, max_tokens=40)
    answer = second.choices[0].message
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert answer.content or answer.tool_calls


def test_top_logprobs_are_filled(client):
    r = chat(client, messages=[{"role": "user", "content": "Name a colour."}], logprobs=True,
             top_logprobs=3, temperature=0, max_tokens=4)
    for t in r.choices[0].logprobs.content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
    text = client.completions.create(model="default", prompt="Red, green and", max_tokens=2,
                                     logprobs=2, temperature=0)
    assert all(len(d) == 2 for d in text.choices[0].logprobs.top_logprobs)


def test_include_usage_gives_a_last_usage_chunk(client):
    chunks = list(chat(client, messages=[{"role": "user", "content": "Say hi."}], stream=True,
                       max_tokens=8, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(chat(client, messages=[{"role": "user", "content": "Say hi."}], stream=True,
                      max_tokens=8))
    assert all(c.usage is None and c.choices for c in plain)


BAD = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"top_logprobs": 25, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"n": 0}, "n"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "array", "uniqueItems": True}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "wat"}}}}, "response_format.json_schema.schema"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"store": True}, "store"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     "messages[0].content[1].type"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "c9"}]},
     "messages[0].tool_call_id"),
]


@pytest.mark.parametrize(("extra", "param"), BAD)
def test_invalid_requests_are_400_naming_the_parameter(real_node, extra, param):
    body = {"model": "default", "messages": ASK_WEATHER, "max_tokens": 4, **extra}
    r = httpx.post(f"{real_node.base}/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param, error


def test_a_keyword_that_cannot_be_enforced_is_named(real_node):
    body = {"model": "default", "messages": ASK_WEATHER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "not": {"required": ["a"]}, "dependentRequired": {"a": ["b"]}}}}}
    r = httpx.post(f"{real_node.base}/chat/completions", json=body, timeout=60)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert message.startswith("response_format.json_schema.schema uses keywords this server "
                              "cannot enforce: ") and "not" in message
    assert "dependentRequired" in message and "%json" not in message


def test_an_unknown_model_is_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, model="gpt-17")
    assert caught.value.body["code"] == "model_not_found"


def test_schema_bombs_are_refused_and_the_node_keeps_answering(real_node, client):
    deep: dict[str, object] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "array", "items": deep}
    wide = {"type": "object", "properties": {f"p{i}": {"enum": [f"v{j}" for j in range(40)]}
                                             for i in range(400)}}
    nested_any: dict[str, object] = {"type": "integer"}
    for _ in range(12):
        nested_any = {"anyOf": [nested_any, {"type": "array", "items": nested_any}]}
    for schema in (deep, wide, nested_any):
        body = {"model": "default", "messages": ASK_WEATHER, "max_tokens": 8,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "bomb", "schema": schema}}}
        r = httpx.post(f"{real_node.base}/chat/completions", json=body, timeout=60)
        assert r.status_code in (400, 413), r.text  # refused: never a hang, never a 500
    r = chat(client, messages=[{"role": "user", "content": "What is the capital of France?"}],
             temperature=0, max_tokens=16)
    assert "Paris" in r.choices[0].message.content
