"""core/claims.py: what a peer may claim, checked before anything acts on it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import helpers
from zswarm.core import claims
from zswarm.core.messages import (
    MAX_CHARS_PER_TOKEN,
    Candidate,
    GenerateRequest,
    Load,
    NodeCard,
    SamplingParams,
    TokenLogprob,
    Vote,
)
from zswarm.errors import RemoteProtocolError

GOOD = {"id": "abc123", "name": "b", "proto": "1", "model": "m", "workers": "2", "pub": "17616",
        "rpc": "17617", "http": "17615", "swarm": "home"}


def test_a_good_record_becomes_a_card_at_the_resolved_address():
    card, proto = claims.card_from_txt(GOOD, "192.168.1.20")
    assert proto == 1
    assert (card.rpc, card.pub) == ("tcp://192.168.1.20:17617", "tcp://192.168.1.20:17616")
    assert (card.node_id, card.workers, card.swarm) == ("abc123", 2, "home")


@pytest.mark.parametrize("change", [
    {"pub": "-1"}, {"rpc": "0"}, {"rpc": "65536"}, {"rpc": "1e3"}, {"id": ""}, {"id": "a/b"},
    {"workers": "-1"}, {"workers": "99999"}, {"http": "x"}, {"id": "x" * 65},
])
def test_bad_records_are_refused_with_a_reason(change):
    with pytest.raises(RemoteProtocolError) as info:
        claims.card_from_txt({**GOOD, **change}, "192.168.1.20")
    assert info.value.reason in ("bad-record", "bad-endpoint")


@pytest.mark.parametrize("host", ["example.com", "::1", "0.0.0.0", "224.0.0.251", "1.2.3",
                                  "ipc:///tmp/x", ""])
def test_endpoints_are_ipv4_unicast_literals_only(host):
    with pytest.raises(RemoteProtocolError):
        claims.tcp_endpoint(host, 1)


@settings(max_examples=500)
@given(st.dictionaries(st.sampled_from([*GOOD, "key", "hw", "x"]), st.text(max_size=80)),
       st.text(max_size=20))
def test_any_record_is_a_card_or_a_remote_protocol_error(props, address):
    try:
        card, _ = claims.card_from_txt(props, address)
    except RemoteProtocolError:
        return
    host, port = claims.split_endpoint(card.rpc)
    assert host == address and 1 <= port <= 65535


def vote(n: int, node_id: str = "peer") -> Vote:
    return Vote(request_id="r", node_id=node_id, name="self-chosen",
                candidates=[Candidate(text=str(i), finish_reason="stop", node="liar")
                            for i in range(n)])


def asked(n: int, max_tokens: int = 16, logprobs: bool = False) -> GenerateRequest:
    return GenerateRequest(prompt="q", n=n, params=SamplingParams(max_tokens=max_tokens,
                                                                  logprobs=logprobs))


def test_a_vote_is_named_after_its_link_and_bounded_by_what_was_asked():
    got = claims.accept_vote(vote(2), node_id="peer", name="b", asked=asked(2))
    assert [(c.node, c.node_id) for c in got] == [("b", "peer"), ("b", "peer")]
    with pytest.raises(RemoteProtocolError, match="3 candidates for 2"):
        claims.accept_vote(vote(3), node_id="peer", name="b", asked=asked(2))
    with pytest.raises(RemoteProtocolError, match="came over the link"):
        claims.accept_vote(vote(1, node_id="other"), node_id="peer", name="b", asked=asked(2))


def _bloated(tokens: int, chars: int, logprobs: int) -> Vote:
    return Vote(request_id="r", node_id="peer", name="p", candidates=[Candidate(
        text="x" * chars, finish_reason="stop", tokens=tokens,
        token_logprobs=[TokenLogprob("x", -0.1)] * logprobs)])


def test_a_vote_is_no_longer_than_asked_and_keeps_logprobs_only_if_asked():
    ok = _bloated(16, 16, 16)
    (cand,) = claims.accept_vote(ok, node_id="peer", name="b", asked=asked(1))
    assert cand.token_logprobs is None  # nobody asked for them: not kept
    (cand,) = claims.accept_vote(ok, node_id="peer", name="b", asked=asked(1, logprobs=True))
    assert cand.token_logprobs is not None and len(cand.token_logprobs) == 16
    for bloated in (_bloated(17, 1, 0), _bloated(1, 16 * MAX_CHARS_PER_TOKEN + 1, 0),
                    _bloated(1, 1, 17)):
        with pytest.raises(RemoteProtocolError) as err:
            claims.accept_vote(bloated, node_id="peer", name="b", asked=asked(1, logprobs=True))
        assert err.value.reason == "oversized-vote"


def test_load_and_interval_are_clamped_to_what_can_be_believed():
    card = NodeCard(node_id="p", name="p", model_id="m", workers=2, rpc="tcp://10.0.0.2:1",
                    pub="tcp://10.0.0.2:2")
    load = claims.believable_load(Load(workers_ready=900, idle_workers=900), card)
    assert (load.workers_ready, load.idle_workers) == (2, 2)
    assert claims.believable_interval_s(3_600_000, 1.0) == claims.MAX_PEER_INTERVAL_S
    assert claims.believable_interval_s(10, 1.0) == 1.0


def test_foreign_is_the_one_same_swarm_rule():
    def card(swarm: str = "s", key: str = "") -> NodeCard:
        return helpers.card("n", swarm=swarm, key=key)

    assert claims.foreign(card(), card()) == ""
    assert claims.foreign(card(key="k1"), card(key="k1")) == ""
    assert "swarm 'x'" in claims.foreign(card(swarm="x"), card())
    assert claims.foreign(card(key="k2"), card(key="k1")) == "uses another swarm key"
    assert claims.foreign(card(), card(key="k1")) == "has no swarm key"
    assert claims.foreign(card(key="k1"), card()) == "uses a swarm key and this node has none"


def test_non_ascii_digits_are_not_numbers():
    # "²".isdigit() is True but int("²") raises: found by the property test above
    card, proto = claims.card_from_txt({"id": "n", "rpc": "7001", "pub": "7002", "proto": "²"},
                                       "10.0.0.2")
    assert proto == -1 and card.rpc == "tcp://10.0.0.2:7001"
    with pytest.raises(RemoteProtocolError):
        claims.port_number("7²")
