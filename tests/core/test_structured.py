"""Structured answers: keys by value, calls parsed and checked, requests checked, votes on values."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zswarm.core import structured
from zswarm.core.consensus import Validation, decide
from zswarm.core.messages import Candidate, ChatMessage, Structure, ToolCall, ToolSpec
from zswarm.core.structured import Shape, check, parse_calls, repeated_call
from zswarm.errors import NoQuorum, RequestRefused

PERSON = json.dumps({"type": "object", "properties": {"name": {"type": "string"},
                                                      "age": {"type": "integer"}},
                     "required": ["name", "age"], "additionalProperties": False})
WEATHER = ToolSpec(name="get_weather", parameters=json.dumps(
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}))
TIME = ToolSpec(name="get_time", parameters='{"type": "object", "properties": {}}')
TOOLS = Structure(tools=(WEATHER, TIME), tool_choice="required", parallel_tool_calls=True)


def call(name: str, args: object) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12),
              st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)


@given(JSON_VALUES, st.randoms())
def test_equal_values_written_differently_have_one_key(value, rnd):
    shape = Shape(Structure(format="schema", schema="{}"))
    spaced = json.dumps(value, indent=rnd.choice([None, 1, 4]), sort_keys=rnd.random() < 0.5)
    compact = json.dumps(value, separators=(",", ":"))
    assert shape.key(spaced) == shape.key(compact) == "json:" + structured.canonical(value)
    assert structured.canonical(json.loads(structured.canonical(value))) == \
        structured.canonical(value)


def test_integral_floats_and_integers_are_one_value():
    shape = Shape(Structure(format="json"))
    assert shape.key('{"a": 1.0, "b": [2]}') == shape.key('{ "b" : [2.0], "a": 1 }')
    assert shape.key('{"a": 1.5}') != shape.key('{"a": 1}')


@given(st.text(max_size=300))
def test_any_text_has_a_key_or_none_never_an_error(text):
    for structure in (Structure(format="json"), Structure(format="schema", schema=PERSON),
                      TOOLS, Structure(tools=(WEATHER,), tool_choice="auto")):
        key = Shape(structure).key(text)
        assert key is None or isinstance(key, str)


def test_schema_decides_validity():
    shape = Shape(Structure(format="schema", schema=PERSON))
    assert shape.key('{"name": "Alice", "age": 30}') == 'json:{"age":30,"name":"Alice"}'
    assert shape.key('{"name": "Alice"}') is None  # required
    assert shape.key('{"name": "Alice", "age": "30"}') is None  # type
    assert shape.key('{"name": "Alice", "age": 30, "x": 1}') is None  # additional
    assert shape.key('{"name": "Alice", "age": 30') is None  # cut short
    assert Shape(Structure(format="json")).key("[1, 2]") is None  # json_object: an object


def test_calls_are_parsed_and_checked_against_their_tools():
    assert parse_calls(TOOLS, call("get_weather", {"city": "Paris"})) == \
        [structured.Call("get_weather", '{"city":"Paris"}')]
    two = call("get_weather", {"city": "Paris"}) + "\n" + call("get_time", {})
    assert [c.name for c in parse_calls(TOOLS, two)] == ["get_weather", "get_time"]
    one_only = Structure(tools=TOOLS.tools, tool_choice="required", parallel_tool_calls=False)
    assert parse_calls(one_only, two) is None
    assert parse_calls(TOOLS, call("rm_rf", {})) is None  # not a listed tool
    assert parse_calls(TOOLS, call("get_weather", {"town": "Paris"})) is None  # schema
    assert parse_calls(TOOLS, "Sure! " + call("get_time", {})) is None  # text around it
    assert parse_calls(TOOLS, "<tool_call>{not json}</tool_call>") is None
    named = Structure(tools=TOOLS.tools, tool_choice="get_time")
    assert parse_calls(named, call("get_weather", {"city": "Paris"})) is None
    assert Shape(TOOLS).key("It is sunny.") is None  # required: text is not an answer
    auto = Shape(Structure(tools=TOOLS.tools, tool_choice="auto"))
    assert auto.key("Paris.", "What is the capital of France?") == "text:paris"
    assert auto.key(call("get_weather", {"city": "Paris"})) == \
        'call:[["get_weather",{"city":"Paris"}]]'


def test_a_call_repeated_verbatim_ends_the_answer_before_it():
    a, b = call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Rome"})
    assert repeated_call(a) is None and repeated_call(f"{a}\n{b}") is None
    text = f"{a}\n{b}\n{a}"
    assert text[: repeated_call(text)] == f"{a}\n{b}"


@pytest.mark.parametrize(("structure", "field"), [
    (Structure(format="schema", schema="{not json"), "response_format.json_schema.schema"),
    (Structure(format="schema", schema="[1]"), "response_format.json_schema.schema"),
    (Structure(format="schema", schema='{"type": "nope"}'), "response_format.json_schema.schema"),
    (Structure(format="schema", schema="{}"), None),  # any JSON: a schema
    (Structure(tools=(WEATHER, WEATHER)), "tools"),
    (Structure(tools=(WEATHER,), tool_choice="get_time"), "tool_choice"),
    (Structure(tool_choice="required"), "tool_choice"),
    (Structure(tools=(ToolSpec(name="f", parameters='{"type": 7}'),)),
     "tools[0].function.parameters"),
])
def test_requests_that_make_no_sense_are_refused_naming_the_field(structure, field):
    if field is None:
        check(structure)
        return
    with pytest.raises(RequestRefused) as caught:
        check(structure)
    assert caught.value.field == field


def test_many_big_tools_are_refused_in_all():
    big = json.dumps({"type": "object", "description": "x" * 30_000})
    tools = tuple(ToolSpec(name=f"f{i}", parameters=big) for i in range(3))
    with pytest.raises(RequestRefused, match="at most 64000") as caught:
        check(Structure(tools=tools))
    assert caught.value.field == "tools"


def test_a_schema_nested_too_deep_is_refused():
    schema: dict[str, object] = {"type": "string"}
    for _ in range(structured.MAX_SCHEMA_DEPTH):
        schema = {"type": "array", "items": schema}
    with pytest.raises(RequestRefused, match="deeper"):
        check(Structure(format="schema", schema=json.dumps(schema)))


def cand(text: str, node: str = "a", reason: str = "stop", lp: float = -0.5) -> Candidate:
    return Candidate(text=text, finish_reason=reason, node=node, node_id=node,  # type: ignore[arg-type]
                     mean_logprob=lp, model_id="m")


@pytest.mark.parametrize("strategy", ["majority", "confidence", "weighted_vote", "best_of_n",
                                      "first_valid"])
def test_votes_are_on_values_and_broken_or_cut_answers_never_win(strategy):
    validation = Validation(allow_truncated=False, shape=Shape(Structure(format="schema",
                                                                       schema=PERSON)))
    cands = [cand('{"name": "Bob"', "p", "length", lp=-0.01),  # cut: most confident
             cand('{"name": "Bob", "age": "x"}', "q", lp=-0.01),  # invalid: as confident
             cand('{"name": "Alice", "age": 30}', "a"),
             cand('{ "age": 30.0, "name": "Alice" }', "b", lp=-0.9)]
    d = decide(strategy, cands, expected=4, final=True, validation=validation)
    assert d is not None and d.winner in (2, 3)


def test_when_every_candidate_is_cut_the_cut_answer_comes_back_as_length():
    validation = Validation(allow_truncated=False, shape=Shape(Structure(format="json")))
    d = decide("confidence", [cand('{"a": ', reason="length")], expected=1, final=True,
               validation=validation)
    assert d is not None and d.winner == 0 and "cut by max_tokens" in d.note
    with pytest.raises(NoQuorum):
        decide("confidence", [cand("prose")], expected=1, final=True, validation=validation)


@settings(max_examples=50)
@given(st.lists(st.sampled_from(['{"a": 1}', '{"a":1.0}', '{"a": 2}', "{", "text"]),
                min_size=1, max_size=8))
def test_the_winner_is_always_a_valid_value(texts):
    validation = Validation(allow_truncated=False, shape=Shape(Structure(format="json")))
    cands = [cand(t, f"n{i}") for i, t in enumerate(texts)]
    try:
        d = decide("majority", cands, expected=len(cands), final=True, validation=validation)
    except NoQuorum:
        assert not any(t.startswith('{"a"') for t in texts)
        return
    assert d is not None and texts[d.winner].startswith('{"a"')
    groups = [json.loads(t)["a"] for t in texts if t.startswith('{"a"')]
    assert groups.count(json.loads(texts[d.winner])["a"]) == max(groups.count(v)
                                                                 for v in set(groups))


def test_generic_messages_render_tools_calls_and_results():
    history = (ChatMessage(role="system", content="Be brief."),
               ChatMessage(role="user", content="Weather in Paris?"),
               ChatMessage(role="assistant", content="", tool_calls=(
                   ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}'),)),
               ChatMessage(role="tool", content="sunny, 21 C", tool_call_id="c1"))
    out = structured.generic_messages(history, TOOLS)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and '"get_weather"' in out[0]["content"]
    assert out[2]["content"] == call("get_weather", {"city": "Paris"})
    assert out[3]["content"] == "<tool_response>\nsunny, 21 C\n</tool_response>"
    assert "<tools>" not in structured.generic_messages(history, None)[0]["content"]
