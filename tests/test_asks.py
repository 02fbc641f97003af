"""The one request builder (zswarm/asks.py): the config's defaults, and errors in words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zswarm.asks import new_request
from zswarm.config import parse_config
from zswarm.errors import RequestRefused

CONFIG = parse_config({"generation": {"max_tokens": 77, "temperature": 0.3,
                                      "system_prompt": "Be brief."},
                       "consensus": {"n": 3}})
USER = [{"role": "user", "content": "hi"}]


def test_what_the_caller_leaves_out_comes_from_the_config():
    req = new_request(CONFIG, messages=USER)
    assert req.n == 3 and req.params.max_tokens == 77 and req.params.temperature == 0.3
    assert [m.role for m in req.messages] == ["system", "user"]
    assert req.messages[0].content == "Be brief."
    chosen = new_request(CONFIG, messages=USER, system="", n=1, max_tokens=5, temperature=0)
    assert [m.role for m in chosen.messages] == ["user"]  # "" = no system prompt
    assert (chosen.n, chosen.params.max_tokens, chosen.params.temperature) == (1, 5, 0)
    own = new_request(CONFIG, messages=[{"role": "system", "content": "Mine."}, *USER])
    assert [m.content for m in own.messages] == ["Mine.", "hi"]  # the chat's own goes first
    assert new_request(CONFIG, prompt="raw").prompt == "raw"


@pytest.mark.parametrize(("choice", "said"), [
    ({"n": 0}, "n must be 1 to 16 ([generation] max_n), not 0"),
    ({"max_tokens": 5000}, "max_tokens must be 1 to 4096 ([generation] max_tokens_limit), "
                           "not 5000"),
    ({"top_p": 0.0}, "params.top_p must be more than 0.0"),
    ({"stop": ["x"] * 9}, "params.stop must be at most 8 items"),
    ({"stop": ["x" * 300]}, "params.stop[0] must be at most 256 characters"),
    ({"seed": -1}, "params.seed must be at least 0"),
])
def test_a_value_out_of_range_is_refused_naming_the_field_in_words(choice, said):
    with pytest.raises(RequestRefused) as caught:
        new_request(CONFIG, messages=USER, **choice)
    assert str(caught.value) == said and said.startswith(caught.value.field)
    assert "$." not in str(caught.value)


@given(n=st.integers(-5, 100), max_tokens=st.integers(-5, 100_000),
       temperature=st.floats(allow_nan=True), top_p=st.floats(allow_nan=True),
       seed=st.integers(-(2**64), 2**64))
def test_any_choice_is_a_request_or_a_refusal(n, max_tokens, temperature, top_p, seed):
    field = None
    try:
        new_request(CONFIG, messages=USER, n=n, max_tokens=max_tokens,
                    temperature=temperature, top_p=top_p, seed=seed)
    except RequestRefused as exc:
        field = exc.field
    assert field is None or field in ("n", "max_tokens", "params.max_tokens", "params.temperature",
                                      "params.top_p", "params.seed")


@pytest.mark.parametrize(("consensus", "kw", "expected"), [
    ({}, {}, (1, False)),  # the default: one candidate (README: what a budget buys)
    ({"budget": 12}, {}, (12, True)),
    ({"budget": 12}, {"temperature": 0.0}, (1, False)),  # every candidate would be the same
    ({"budget": 12}, {"budget": 3, "temperature": 0.0}, (3, True)),  # asked for: given
    ({"n": 3}, {"temperature": 0.0}, (3, False)),  # a fixed n is what it says
    ({}, {"n": 5}, (5, False)), ({}, {"budget": 5}, (5, True)),
    ({"n": 2}, {"budget": 5}, (5, True)),  # the caller's choice wins over the config's
])
def test_how_many_candidates_an_ask_gets(consensus, kw, expected):
    from zswarm.asks import choose_count

    config = parse_config({"consensus": consensus})
    assert choose_count(config, config.consensus.strategy, **kw) == expected


def test_n_and_budget_exclude_each_other():
    from zswarm.asks import choose_count

    with pytest.raises(RequestRefused, match="not both") as caught:
        choose_count(CONFIG, "confidence", n=2, budget=4)
    assert caught.value.field == "budget"
