"""core/affinity.py: a conversation's next turn is recognised by its message prefix."""

from __future__ import annotations

from zswarm.core.affinity import Homes, conversation_keys
from zswarm.core.messages import ChatMessage, GenerateRequest
from zswarm.core.plan import ROUTE, NodeLoad, plan


def chat(*turns: str) -> GenerateRequest:
    roles = ("user", "assistant")
    return GenerateRequest(messages=tuple(ChatMessage(role=roles[i % 2], content=t)  # type: ignore[arg-type]
                                          for i, t in enumerate(turns)))


def test_a_next_turn_extends_the_keys_and_an_edit_changes_them():
    one = conversation_keys(chat("hi"))
    two = conversation_keys(chat("hi", "hello", "how are you?"))
    assert two[: len(one)] == one and len(two) == 3
    assert conversation_keys(chat("hI", "hello", "how are you?"))[0] != one[0]
    assert conversation_keys(GenerateRequest(prompt="raw text")) == []
    # role and content cannot be confused by moving a separator
    assert conversation_keys(chat("a\x00b")) != conversation_keys(chat("a", "b"))[:1]


def test_homes_find_the_longest_known_prefix_and_stay_bounded():
    homes = Homes(limit=3)
    homes.record(conversation_keys(chat("hi")), "w1")
    assert homes.find(conversation_keys(chat("hi", "yo", "more"))) == "w1"
    assert homes.find(conversation_keys(chat("new"))) is None
    for i in range(5):
        homes.record(conversation_keys(chat(f"c{i}")), "w0")
    assert homes.find(conversation_keys(chat("hi"))) is None  # the oldest went first


def test_route_prefers_the_home_only_while_it_has_room():
    me, b, c = NodeLoad("", 1, 1, 0), NodeLoad("b", 1, 1, 0), NodeLoad("c", 1, 1, 0)
    assert plan(1, ROUTE, me, [b, c]).parts == {"": 1}
    assert plan(1, ROUTE, me, [b, c], prefer="c").parts == {"c": 1}
    busy_c = NodeLoad("c", 1, 0, 1)
    assert plan(1, ROUTE, me, [b, busy_c], prefer="c").parts == {"": 1}
    assert plan(1, ROUTE, me, [b], prefer="gone").parts == {"": 1}
