"""Constrained decoding on the real default model: every structured candidate is of its shape."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zswarm.core.messages import (
    ChatMessage,
    GenerateRequest,
    SamplingParams,
    Structure,
    ToolCall,
    ToolSpec,
)
from zswarm.core.structured import Shape, parse_calls
from zswarm.engines.llamacpp import LlamaCppEngine
from zswarm.engines.models import resolve_model

pytestmark = pytest.mark.model

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
WEATHER = ToolSpec(name="get_weather", description="The weather in a city now",
                   parameters=json.dumps({"type": "object", "properties": {
                       "city": {"type": "string", "maxLength": 30}}, "required": ["city"]}))


@pytest.fixture(scope="module")
def engine():
    eng = LlamaCppEngine(resolve_model("default"), n_ctx=4096, threads=2)
    yield eng
    eng.close()


def req(q: str, structure: Structure | None, **params) -> GenerateRequest:
    n = params.pop("n", 1)
    return GenerateRequest(messages=(ChatMessage(role="user", content=q),),
                           params=SamplingParams(**params), n=n, structure=structure)


@pytest.mark.parametrize("question", [
    "Alice is 30 years old. Give her name and age as JSON.",
    "Make up a person.",
    "Tell me about the weather.",  # nothing to do with the schema: still a person
])
def test_every_candidate_validates_against_the_schema(engine, question):
    structure = Structure(format="schema", schema=json.dumps(PERSON))
    cands = engine.generate(req(question, structure, n=8, temperature=0.8, seed=11,
                                max_tokens=64))
    assert len(cands) == 8
    for c in cands:
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), PERSON)


def test_json_object_always_parses_to_an_object(engine):
    cands = engine.generate(req("Describe a cat in JSON.", Structure(format="json"), n=6,
                                temperature=0.8, seed=5, max_tokens=200))
    complete = [c for c in cands if c.finish_reason == "stop"]
    assert complete  # a long object may be cut by max_tokens ("length"); most end
    for c in complete:
        assert isinstance(json.loads(c.text), dict)


SCALARS = st.one_of(
    st.just({"type": "integer"}), st.just({"type": "boolean"}),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 12)),
    st.builds(lambda xs: {"enum": xs}, st.lists(st.sampled_from(
        ["red", "green", "blue", "cat", "dog", 1, 2, True, None]), min_size=1, max_size=4,
        unique=True)),
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
              st.integers(-50, 50), st.integers(0, 100)),
)
VALUES = st.one_of(SCALARS, st.builds(lambda s, n: {"type": "array", "items": s, "maxItems": n},
                                      SCALARS, st.integers(0, 3)))
SCHEMAS = st.builds(
    lambda props, extra: {"type": "object", "properties": props, "required": sorted(props),
                          "additionalProperties": extra},
    st.dictionaries(st.sampled_from(["a", "b", "colour", "count", "ok", "items"]), VALUES,
                    min_size=1, max_size=3),
    st.booleans())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(SCHEMAS, st.integers(0, 2**31))
def test_property_every_sample_validates_for_schemas_of_the_supported_subset(engine, schema,
                                                                             seed):
    structure = Structure(format="schema", schema=json.dumps(schema))
    cands = engine.generate(req("Fill in the JSON.", structure, n=2, temperature=0.8,
                                seed=seed, max_tokens=120))
    for c in cands:
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "stop":
            jsonschema.validate(json.loads(c.text), schema)


@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_a_required_call_names_a_listed_function_with_valid_arguments(engine, choice):
    structure = Structure(tools=(WEATHER,), tool_choice=choice)
    cands = engine.generate(req("What is the weather in Paris?", structure, n=4,
                                temperature=0.8, seed=2, max_tokens=80))
    for c in cands:
        calls = parse_calls(structure, c.text)
        assert c.finish_reason == "stop" and calls, c.text
        assert all(call.name == "get_weather" for call in calls)


def test_constrained_and_free_sequences_share_a_batch(engine):
    """Two requests stepped together by the batcher: the free one is free text, as alone
    (a batch's arithmetic may differ from one sequence's in the last bits, so greedy
    answers can part after a while: their start is compared)."""
    free = req("What is the capital of France?", None, temperature=0, max_tokens=16)
    alone = engine.generate(free)[0].text
    structure = Structure(format="schema", schema=json.dumps(PERSON))
    done: dict[str, list] = {"free": [], "json": []}
    ended: list[object] = []
    engine.submit("free", free, on_token=None,
                  on_candidate=lambda i, c: done["free"].append(c), on_done=ended.append)
    engine.submit("json", req("Make up a person.", structure, temperature=0.8, seed=3,
                              max_tokens=64), on_token=None,
                  on_candidate=lambda i, c: done["json"].append(c), on_done=ended.append)
    while len(ended) < 2:
        engine.batcher.step()
    assert ended == [None, None]
    assert done["free"][0].text[:8] == alone[:8] and not alone.startswith("{")
    assert Shape(structure).key(done["json"][0].text) is not None


def test_a_grammar_is_compiled_once(engine):
    structure = Structure(format="schema", schema=json.dumps({**PERSON, "title": "once"}))
    engine.generate(req("Make up a person.", structure, temperature=0, max_tokens=40))
    compiled = dict(engine.grammars._compiled)
    engine.generate(req("Another person.", structure, temperature=0, max_tokens=40))
    assert engine.grammars._compiled.keys() == compiled.keys()


def test_top_logprobs_are_the_models_most_likely_tokens(engine):
    [c] = engine.generate(req("Name a colour.", None, temperature=0, max_tokens=4,
                              logprobs=True, top_logprobs=5))
    assert c.token_logprobs
    for t in c.token_logprobs:
        assert len(t.top) == 5
        lps = [lp for _, lp in t.top]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        assert t.top[0] == (t.token, t.logprob)  # greedy: the chosen one is the likeliest


def test_logit_bias_bans_a_token(engine):
    [greedy] = engine.generate(req("Name a colour.", None, temperature=0, max_tokens=4,
                                   logprobs=True, top_logprobs=2))
    tokens = engine._model.tokenize(greedy.token_logprobs[0].token.encode(), False, True)
    [biased] = engine.generate(req("Name a colour.", None, temperature=0, max_tokens=4,
                                   logprobs=True, logit_bias={tokens[0]: -100.0}))
    assert biased.token_logprobs[0].token != greedy.token_logprobs[0].token


def test_a_template_with_a_tools_section_gets_the_tools_itself(engine):
    """A GGUF whose chat template renders tools (as Qwen's and Hermes' do) is given them in
    OpenAI's shape, with calls and results in the history; the default model's template
    has none and gets the generic form (core/structured.py)."""
    history = (ChatMessage(role="user", content="Weather in Paris?"),
               ChatMessage(role="assistant", content="", tool_calls=(
                   ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}'),)),
               ChatMessage(role="tool", content="sunny", tool_call_id="c1"))
    structure = Structure(tools=(WEATHER,), tool_choice="auto")
    generic = engine.render_chat(history, structure)
    assert not engine.template_has_tools and "<tools>" in generic
    assert "<tool_response>\nsunny\n</tool_response>" in generic
    source = engine._template_src
    try:
        engine._template_src = (
            "{% for t in tools or [] %}TOOL {{ t.function.name }} "
            "{{ t.function.parameters.properties | list }}\n{% endfor %}"
            "{% for m in messages %}{{ m.role }}: {{ m.content }}"
            "{% for c in m.tool_calls or [] %}CALL {{ c.id }} {{ c.function.name }} "
            "{{ c.function.arguments.city }}{% endfor %}"
            "{% if m.tool_call_id %} FOR {{ m.tool_call_id }}{% endif %}{{ '\\n' }}"
            "{% endfor %}")
        engine._template = None
        native = engine.render_chat(history, structure)
    finally:
        engine._template_src, engine._template = source, None
    assert native.splitlines() == [
        "TOOL get_weather ['city']", "user: Weather in Paris?",
        "assistant: CALL c1 get_weather Paris", "tool: sunny FOR c1"]
    assert engine.render_chat(history, structure) == generic
