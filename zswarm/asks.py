"""The ask as a value, and the one builder of it from a config's defaults and a caller's choices.

Owns: ``Ask`` - one client's ask with every default resolved (the request, the checked
strategy, the deadline, whether n is a budget, early stop, which model and peers),
built by ``build`` at every door (`zswarm ask`, the RPC ClientRequest, the OpenAI
routes) and handed unchanged to runtime/serving.serve_ask and Coordinator.ask; and
the GenerateRequest inside it: which config keys fill what a caller leaves out
([generation] max_tokens, temperature, top_p, top_k, system_prompt; [consensus]
strategy, n or budget: ``choose_count``; [scheduler] default_deadline_ms),
and checking the result against the message types' own constraints (msgspec.convert, never the bare
constructor: a request the workers could not decode must not reach them). A value out
of range is a RequestRefused whose ``field`` is the request's dotted path ("n",
"params.top_p", "messages[0].content"), for each door to name in its own words (a CLI
option, an OpenAI parameter). Used by `zswarm ask`, the RPC server (runtime/rpc.py) and
the OpenAI routes (http/contract.py). Of the node's limits it applies only ``check_count`` to a count the
caller gave (so every door shows the node's range); the rest are core/limits.admit's,
after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from zswarm.config import Config
from zswarm.core import codec
from zswarm.core.committee import MAX_COMMITTEE
from zswarm.core.limits import check_count, check_one_count, check_strategy, deadline_s
from zswarm.core.messages import GenerateRequest, Structure
from zswarm.core.plan import AskStrategy
from zswarm.errors import RequestRefused


@dataclass(frozen=True)
class Ask:
    """One client's ask, every default resolved: what the coordinator answers."""

    request: GenerateRequest
    strategy: AskStrategy
    #: how long it may take, from when the coordinator starts it
    deadline_ms: int
    #: ``request.n`` is a budget, spent in waves until settled (core/stopping.py)
    adaptive: bool = False
    #: False: wait for every candidate (OpenAI ``n`` choices) before deciding
    early_stop: bool = True
    #: another model than this node's: the peers serving it answer
    model_id: str | None = None
    #: the peers that may be asked (node ids; () = this node only; None = any)
    peers: tuple[str, ...] | None = None
    #: a committee: these models (ids) share the candidates (core/committee.py)
    models: tuple[str, ...] = ()


def build(config: Config, request: GenerateRequest, *, strategy: str | None = None,
          deadline_ms: int | None = None, adaptive: bool = False, early_stop: bool = True,
          model_id: str | None = None, peers: Sequence[str] | None = None,
          models: Sequence[str] = ()) -> Ask:
    """The Ask of ``request``: None takes the config's strategy and deadline. A strategy
    that is unknown (or cannot spend a budget) or a deadline out of range is a
    RequestRefused naming the field ("strategy", "budget", "deadline_ms"); so is a
    committee (``models``: ids) that cannot be one: more than MAX_COMMITTEE models, fewer
    candidates than models, a budget or ``route`` ("models"). The node's limits on the
    request itself are checked when it is served (core/limits.admit)."""
    checked = check_strategy(strategy_of(config, strategy), adaptive=adaptive)
    ms = round(deadline_s(config.limits, deadline_ms) * 1000)
    committee = tuple(dict.fromkeys(models))
    if committee:
        why = (f"at most {MAX_COMMITTEE} models" if len(committee) > MAX_COMMITTEE
               else "a committee asks a fixed n, not a budget" if adaptive
               else "route sends the request to one node" if checked == "route"
               else f"n ({request.n}) is fewer than the models ({len(committee)})"
               if request.n < len(committee) else "")
        if why:
            raise RequestRefused(f"a committee of models: {why}", field="models")
    return Ask(request, checked, ms, adaptive=adaptive, early_stop=early_stop,
               model_id=model_id, peers=None if peers is None else tuple(peers),
               models=committee)


def strategy_of(config: Config, name: str | None) -> str:
    """The strategy a caller named, else the config's (checked by ``build``)."""
    return name or config.consensus.strategy


def choose_count(config: Config, strategy: str | None, *, n: int | None = None,
                 budget: int | None = None, temperature: float | None = None
                 ) -> tuple[int, bool]:
    """How many candidates an ask gets, and whether that is a budget (adaptive): the
    caller's ``n`` or ``budget`` (not both), else the config's (``count_for``) - but a
    configured budget is one candidate at temperature 0 (``temperature``: the caller's,
    else [generation]'s), where every candidate would be the same. A count given is held
    to the node's limit here, so the message names that limit."""
    check_one_count(n, budget)
    if budget is not None:
        check_count(config.limits, "budget", budget)
        return budget, True
    if n is not None:
        check_count(config.limits, "n", n)
        return n, False
    count, adaptive = config.consensus.count_for(strategy_of(config, strategy))
    if adaptive and (config.generation.temperature if temperature is None else temperature) == 0:
        return 1, False
    return count, adaptive


def new_request(config: Config, *, messages: Sequence[Mapping[str, object]] | None = None,
                prompt: str | None = None, system: str | None = None, n: int | None = None,
                max_tokens: int | None = None, temperature: float | None = None,
                top_p: float | None = None, stop: Sequence[str] = (), seed: int | None = None,
                logprobs: bool = False, sampling: Mapping[str, object] | None = None,
                structure: Structure | None = None) -> GenerateRequest:
    """``messages`` (a chat; unless it starts with a system message, ``system`` first, or
    the config's system prompt when ``system`` is None; "" for none) or a raw ``prompt``.
    None for any other choice takes the config's default. ``sampling``: more of
    SamplingParams' fields (top_logprobs, penalties, logit_bias); ``structure``: the
    answer's shape (core/structured.py)."""
    gen = config.generation
    # a count given is held to the node's limit first, so the message names that limit
    # (not the wire's wider one): the same rule admit applies
    if n is not None:
        check_count(config.limits, "n", n)
    if max_tokens is not None:
        check_count(config.limits, "max_tokens", max_tokens)
    fields: dict[str, object]
    if prompt is not None:
        fields = {"prompt": prompt}
    else:
        chat = list(messages or ())
        system = gen.system_prompt if system is None else system
        if system and (not chat or chat[0].get("role") != "system"):
            chat.insert(0, {"role": "system", "content": system})
        fields = {"messages": chat}
    fields["n"] = (config.consensus.n or 1) if n is None else n  # a budget: choose_count
    fields["params"] = {
        "max_tokens": gen.max_tokens if max_tokens is None else max_tokens,
        "temperature": gen.temperature if temperature is None else temperature,
        "top_p": gen.top_p if top_p is None else top_p, "top_k": gen.top_k,
        "stop": list(stop), "seed": seed, "logprobs": logprobs, **(sampling or {})}
    if structure is not None:
        fields["structure"] = msgspec.to_builtins(structure)
    try:
        return msgspec.convert(fields, GenerateRequest)
    except msgspec.ValidationError as exc:
        what, path = codec.invalid(exc)
        raise RequestRefused(f"{path or 'the request'} {what}", field=path) from None
