"""Request admission: what a request may ask of this node, in one place. Pure.

The RPC server (clients' requests and peers' votes), the HTTP shim (OpenAI requests
and /v1/federation/vote) and the CLI (`zswarm ask --local`) all judge a request
here, so it is judged the same whichever way it came. The wire limits in
core/messages.py bound what can be decoded at all; these are the node's own
(``[generation]`` and ``[scheduler]`` in swarm.toml), never looser (config.py checks).
A refusal is a RequestRefused naming the field, which RPC answers as an Error of
kind ``protocol`` and HTTP as 422 with that field as ``param``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zswarm.core import structured
from zswarm.core.messages import MAX_DEADLINE_MS, GenerateRequest
from zswarm.core.plan import ASK_STRATEGIES, AskStrategy, is_ask_strategy
from zswarm.core.stopping import ADAPTIVE_STRATEGIES
from zswarm.errors import RequestRefused


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Built by ``Config.limits`` (the defaults live in config.py, not here)."""

    max_n: int
    max_tokens_limit: int
    max_prompt_chars: int
    #: a request's deadline when it brings none
    default_deadline_ms: int


def check_strategy(strategy: str, *, adaptive: bool = False) -> AskStrategy:
    """The strategy a request names, as the type the coordinator takes (a refusal if none,
    or if it cannot spend a budget: ``adaptive``)."""
    if not is_ask_strategy(strategy):
        raise RequestRefused(f"unknown strategy {strategy!r}; choose one of "
                             f"{', '.join(ASK_STRATEGIES)}", field="strategy")
    if adaptive and strategy not in ADAPTIVE_STRATEGIES:
        raise RequestRefused(f"a budget needs the strategy {', '.join(ADAPTIVE_STRATEGIES)}; "
                             f"{strategy} takes n", field="budget")
    return strategy


def deadline_s(limits: Limits, deadline_ms: int | None) -> float:
    """The request's deadline in seconds: its own (1 ms to an hour) or the node's default."""
    ms = limits.default_deadline_ms if deadline_ms is None else deadline_ms
    if not 1 <= ms <= MAX_DEADLINE_MS:
        raise RequestRefused(f"deadline_ms={ms} is not 1 to {MAX_DEADLINE_MS}",
                             field="deadline_ms")
    return ms / 1000


def check_one_count(n: int | None, budget: int | None) -> None:
    """A request (or [consensus]) gives n or a budget, not both."""
    if n is not None and budget is not None:
        raise RequestRefused("give n (exactly that many candidates) or budget (at most that "
                             "many, adaptive), not both", field="budget")


def check_count(limits: Limits, field: Literal["n", "budget", "max_tokens"], value: int
                ) -> None:
    """``n`` (or a ``budget`` of candidates) and ``max_tokens`` are 1 to this node's limit;
    checked by ``admit``, and by asks.new_request before the wire's own (wider) range, so
    every door shows this one."""
    top, key = ((limits.max_n, "max_n") if field in ("n", "budget")
                else (limits.max_tokens_limit, "max_tokens_limit"))
    if not 1 <= value <= top:
        raise RequestRefused(f"{field} must be 1 to {top} ([generation] {key}), not {value}",
                             field=field)


def wire_ms(seconds: float) -> int:
    """Time left as a message's ``deadline_ms`` (the wire's unit): 1 ms to an hour.

    Computed only where a message is built; a deadline already spent still gives the
    peer 1 ms (its answer is not waited for)."""
    return min(MAX_DEADLINE_MS, max(1, int(seconds * 1000)))


def prompt_chars(req: GenerateRequest) -> int:
    return sum(len(m.content) for m in req.messages) + len(req.prompt or "")


def admit(limits: Limits, req: GenerateRequest) -> None:
    """This node's limits on a request; RequestRefused naming the first field over them.
    (The strategy is ``check_strategy``'s, which also gives it its type.)"""
    check_count(limits, "n", req.n)
    check_count(limits, "max_tokens", req.params.max_tokens)
    chars = prompt_chars(req)
    if chars > limits.max_prompt_chars:
        raise RequestRefused(f"prompt of {chars} characters exceeds this node's limit of "
                             f"{limits.max_prompt_chars}", field="prompt")
    if not req.messages and req.prompt is None:
        raise RequestRefused("request has neither messages nor prompt", field="messages")
    if req.structure is not None:  # a peer's too: a schema that is no schema ends here
        structured.check(req.structure)
