"""core/limits.py: one admission rule for requests from the CLI, RPC and HTTP."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import question
from zswarm.core.limits import Limits, admit, check_strategy, deadline_s
from zswarm.core.messages import MAX_DEADLINE_MS, GenerateRequest, SamplingParams
from zswarm.errors import RequestRefused

LIMITS = Limits(max_n=4, max_tokens_limit=100, max_prompt_chars=50, default_deadline_ms=9000)


def req(n: int = 1, max_tokens: int = 10, content: str = "hi") -> GenerateRequest:
    return question(content, n=n, max_tokens=max_tokens)


@pytest.mark.parametrize(("request_", "field"), [
    (req(n=5), "n"), (req(max_tokens=101), "max_tokens"), (req(content="x" * 51), "prompt"),
    (GenerateRequest(params=SamplingParams(max_tokens=10)), "messages")])
def test_each_limit_is_refused_naming_its_field(request_, field):
    with pytest.raises(RequestRefused) as info:
        admit(LIMITS, request_)
    assert info.value.field == field and info.value.kind == "protocol"


def test_strategies_and_deadlines():
    admit(LIMITS, req(n=4, max_tokens=100, content="x" * 50))
    assert check_strategy("majority") == "majority" and check_strategy("route") == "route"
    with pytest.raises(RequestRefused, match="unknown strategy"):
        check_strategy("best")
    assert deadline_s(LIMITS, None) == 9.0 and deadline_s(LIMITS, 1) == 0.001
    for bad in (0, -5, MAX_DEADLINE_MS + 1):
        with pytest.raises(RequestRefused) as info:
            deadline_s(LIMITS, bad)
        assert info.value.field == "deadline_ms"


@given(st.integers(1, 32), st.integers(1, 4096), st.text(max_size=80))
def test_admitted_requests_are_within_every_limit(n, max_tokens, content):
    r = req(n=n, max_tokens=max_tokens, content=content)
    try:
        admit(LIMITS, r)
    except RequestRefused:
        assert n > 4 or max_tokens > 100 or len(content) > 50
    else:
        assert n <= 4 and max_tokens <= 100 and len(content) <= 50
