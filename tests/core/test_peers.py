"""PeerTable: the lifecycle state machine, driven by events and tick(now)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zswarm.core.messages import Load, NodeCard
from zswarm.core.peers import TRANSITIONS, PeerState, PeerTable

S = PeerState


def card(node_id: str, rpc: str = "", **kw) -> NodeCard:
    return NodeCard(node_id=node_id, name=node_id.upper(), model_id="m", workers=1,
                    rpc=rpc or f"tcp://10.0.0.{len(node_id)}:1", pub="tcp://10.0.0.9:2", **kw)


def table() -> PeerTable:
    return PeerTable(card("me", "tcp://10.0.0.1:1"), interval_s=1.0, liveness=3)


def states(changes):
    return [(c.peer.card.node_id, c.old, c.new) for c in changes if c.kind == "state"]


def test_lifecycle_discovered_alive_suspect_dead_back_left():
    t = table()
    assert states(t.discovered(card("a"), "10.0.0.2", "mdns", now=0)) == [("a", None, S.DISCOVERED)]
    assert states(t.heard(card("a"), Load(), now=0.5)) == [("a", S.DISCOVERED, S.ALIVE)]
    assert t.tick(1.9) == []  # within 1.5 intervals
    assert states(t.tick(2.1)) == [("a", S.ALIVE, S.SUSPECT)]
    assert t.alive() == []
    assert states(t.heard(card("a"), Load(), now=2.2)) == [("a", S.SUSPECT, S.ALIVE)]
    assert states(t.tick(5.3)) == [("a", S.ALIVE, S.DEAD)]  # silent > 3 intervals
    assert t.tick(100) == []  # dead stays dead
    assert states(t.heard(card("a"), Load(), now=101)) == [("a", S.DEAD, S.ALIVE)]
    assert states(t.goodbye("a", now=102)) == [("a", S.ALIVE, S.LEFT)]
    assert states(t.discovered(card("a"), "10.0.0.2", "mdns", now=103)) == [
        ("a", S.LEFT, S.DISCOVERED)]


def test_heartbeat_with_leaving_state_is_a_goodbye():
    t = table()
    t.heard(card("a"), Load(), now=0)
    assert states(t.heard(card("a"), Load(state="leaving"), now=1)) == [("a", S.ALIVE, S.LEFT)]


def test_discovered_never_heard_expires():
    t = table()
    t.discovered(card("a"), "10.0.0.2", "mdns", now=0)
    assert states(t.tick(3.5)) == [("a", S.DISCOVERED, S.DEAD)]


def test_other_protocol_version_is_incompatible_and_never_alive():
    t = table()
    changes = t.discovered(card("a"), "10.0.0.2", "mdns", now=0, proto=99)
    assert states(changes)[-1] == ("a", S.DISCOVERED, S.INCOMPATIBLE)
    assert "protocol 99" in t.peers["a"].detail
    assert states(t.heard(card("a"), Load(), now=1)) == []
    assert t.alive() == []


def test_own_echo_ignored_and_duplicate_id_reported_once():
    t = table()
    assert t.discovered(card("me", "tcp://10.0.0.1:1"), "10.0.0.1", "mdns", now=0) == []
    dup = t.heard(card("me", "tcp://10.0.0.7:1"), Load(), now=0)
    assert [c.kind for c in dup] == ["duplicate"]
    assert t.heard(card("me", "tcp://10.0.0.7:1"), Load(), now=1) == []
    assert "me" not in t.peers


def test_moved_endpoints_are_reported():
    t = table()
    t.heard(card("a", "tcp://10.0.0.2:1"), Load(), now=0)
    changes = t.heard(card("a", "tcp://10.0.0.2:5"), Load(), now=1)
    assert [c.kind for c in changes] == ["endpoints"]
    assert t.peers["a"].card.rpc == "tcp://10.0.0.2:5"


def test_alive_filters_by_model_and_swarm():
    t = table()
    t.heard(card("a"), Load(), now=0)
    t.heard(NodeCard(node_id="b", name="B", model_id="other", workers=1, rpc="tcp://h:1",
                     pub="tcp://h:2"), Load(), now=0)
    t.heard(card("c", swarm="elsewhere"), Load(), now=0)
    assert {p.card.node_id for p in t.alive()} == {"a", "b"}
    assert {p.card.node_id for p in t.alive(model_id="m")} == {"a"}


def test_rtt_is_smoothed():
    t = table()
    t.heard(card("a"), Load(), now=0)
    t.rtt("a", 10.0)
    t.rtt("a", 20.0)
    assert t.peers["a"].rtt_ms == 13.0


ALLOWED = {(old, new) for (old, _), new in TRANSITIONS.items()}
EVENTS = st.lists(st.tuples(st.sampled_from(["disc", "heard", "bye", "tick"]),
                            st.floats(min_value=0, max_value=5)), max_size=40)


@given(EVENTS)
def test_every_change_follows_the_transition_table(events):
    t = table()
    now = 0.0
    for kind, dt in events:
        now += dt
        if kind == "disc":
            changes = t.discovered(card("a"), "10.0.0.2", "mdns", now)
        elif kind == "heard":
            changes = t.heard(card("a"), Load(), now)
        elif kind == "bye":
            changes = t.goodbye("a", now)
        else:
            changes = t.tick(now)
        for c in changes:
            if c.kind == "state" and c.old is not None:
                assert (c.old, c.new) in ALLOWED, (c.old, c.new)
        peer = t.peers.get("a")
        if kind == "tick" and peer is not None and peer.state is S.ALIVE:
            assert now - peer.since <= 1.5 + 1e-9  # ALIVE only while heard recently


def test_a_full_table_refuses_newcomers_and_says_so_once(monkeypatch):
    monkeypatch.setattr("zswarm.core.peers.MAX_PEERS", 2)
    t = table()
    t.heard(card("a"), Load(), now=0)
    t.heard(card("b"), Load(), now=0)
    assert [c.kind for c in t.heard(card("c"), Load(), now=0)] == ["full"]
    assert t.discovered(card("c"), "10.0.0.3", "mdns", now=1) == []
    assert set(t.peers) == {"a", "b"}
    assert states(t.heard(card("a"), Load(), now=2)) == []  # known peers still update
