"""PeerTable: the lifecycle state machine, driven by events and tick(now)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests import helpers
from zswarm.core.messages import Load, NodeCard
from zswarm.core.peers import (
    MAX_DEMOTION_S,
    MAX_UNHEARD,
    TRANSITIONS,
    ChangeKind,
    PeerState,
    PeerTable,
)

S = PeerState


def card(node_id: str, rpc: str = "", **kw) -> NodeCard:
    return helpers.card(node_id.upper(), node_id=node_id,  # (ids as given: the table
                        # takes the cards it is given; core/claims.py proves them)
                        rpc=rpc or f"tcp://10.0.0.{len(node_id)}:1", pub="tcp://10.0.0.9:2", **kw)


def table() -> PeerTable:
    return PeerTable(card("me", "tcp://10.0.0.1:1"), interval_s=1.0, liveness=3)


def states(changes):
    return [(c.peer.card.node_id, c.old, c.new) for c in changes if c.kind is ChangeKind.STATE]


def kinds(changes):
    return [c.kind for c in changes]


def test_lifecycle_discovered_alive_suspect_dead_back_left():
    t = table()
    assert states(t.discovered(card("a"), "10.0.0.2", "mdns", now=0)) == [("a", None, S.DISCOVERED)]
    assert states(t.heard(card("a"), Load(), now=0.5)) == [("a", S.DISCOVERED, S.ALIVE)]
    assert t.peers["a"].address == "10.0.0.2"
    assert t.tick(1.9) == []  # within 1.5 intervals
    assert states(t.tick(2.1)) == [("a", S.ALIVE, S.SUSPECT)]
    assert t.alive() == []
    assert states(t.heard(card("a"), Load(), now=2.2)) == [("a", S.SUSPECT, S.ALIVE)]
    assert states(t.tick(5.3)) == [("a", S.ALIVE, S.DEAD)]  # silent > 3 intervals
    assert t.tick(100) == []  # dead stays dead (until forgotten)
    assert states(t.heard(card("a"), Load(), now=101)) == [("a", S.DEAD, S.ALIVE)]
    assert states(t.heard(card("a"), Load(state="leaving"), now=102)) == [
        ("a", S.ALIVE, S.LEFT)]
    # a record resolved after the goodbye does not undo it; the node's answer does
    assert t.discovered(card("a"), "10.0.0.2", "mdns", now=103) == []
    assert t.peers["a"].state is S.LEFT
    assert states(t.heard(card("a"), Load(), now=104)) == [("a", S.LEFT, S.ALIVE)]


def known(t, node_id, now=0.0, **kw):
    t.discovered(card(node_id, **kw), "10.0.0.2", "mdns", now)
    return t.heard(card(node_id, **kw), Load(), now)


def test_heartbeat_with_leaving_state_is_a_goodbye_and_a_forged_one_is_undone():
    t = table()
    known(t, "a")
    assert states(t.heard(card("a"), Load(state="leaving"), now=1)) == [("a", S.ALIVE, S.LEFT)]
    assert t.due_probes(now=2) == []  # a LEFT peer is probed again, a little later
    assert [p.card.node_id for p in t.due_probes(now=4.5)] == ["a"]
    assert states(t.heard(card("a"), Load(), now=4.6)) == [("a", S.LEFT, S.ALIVE)]


def test_heartbeats_never_introduce_a_peer_nor_move_one():
    t = table()
    assert t.heard(card("a"), Load(), now=0) == []
    assert "a" not in t.peers
    known(t, "a")
    assert t.heard(card("a", "tcp://10.6.6.6:1"), Load(workers_ready=1), now=1) == []
    assert t.peers["a"].card.rpc == card("a").rpc
    assert t.peers["a"].load.workers_ready == 1


def test_a_record_cannot_move_a_live_peer_only_claim_it():
    t = table()
    known(t, "a")
    elsewhere = card("a", "tcp://10.6.6.6:1")
    changes = t.discovered(elsewhere, "10.6.6.6", "mdns", now=1)
    assert kinds(changes) == [ChangeKind.MOVE_CLAIMED] and changes[0].claim == elsewhere
    assert t.peers["a"].card.rpc == card("a").rpc
    assert kinds(t.moved("a", elsewhere, "10.6.6.6")) == [ChangeKind.ENDPOINTS]
    assert t.peers["a"].card.rpc == "tcp://10.6.6.6:1" and t.peers["a"].address == "10.6.6.6"


def test_a_record_moves_no_known_peer_live_or_not_without_a_probe():
    t = table()
    known(t, "a")
    t.tick(10)  # DEAD
    moved = card("a", "tcp://10.0.0.2:9")
    (change,) = t.discovered(moved, "10.0.0.2", "mdns", now=11)
    assert change.kind is ChangeKind.MOVE_CLAIMED and change.claim == moved
    assert t.peers["a"].card.rpc == card("a").rpc and t.peers["a"].state is S.DEAD
    # the node answered there (the runtime probed): now it moves
    assert kinds(t.moved("a", moved, "10.0.0.2")) == [ChangeKind.ENDPOINTS]


def test_a_hello_brings_a_dead_peers_probe_forward_once_per_interval():
    t = table()
    known(t, "a")
    t.heard(card("a"), Load(), now=1)
    t.tick(10)  # DEAD, probed with a back-off
    for now in range(10, 60):
        t.due_probes(now)  # the back-off grows to its cap
    assert t.hello("a", 60.0) is True
    assert t.hello("a", 60.1) is False  # forged hellos: one per interval at most
    assert [p.card.node_id for p in t.due_probes(61.0)] == ["a"]
    assert t.hello("nobody", 62.0) is False
    t.heard(card("a"), Load(), now=62)
    assert t.hello("a", 70.0) is False  # alive: nothing to bring forward


def test_an_mdns_flood_churns_only_the_unheard_entries():
    t = table()
    for i in range(5):
        known(t, f"real{i}")
        t.heard(card(f"real{i}"), Load(), now=0.5)
    forgotten = []
    for i in range(MAX_UNHEARD * 10):
        changes = t.discovered(card(f"f{i:05d}"), "10.0.0.9", "mdns", now=1 + i / 1000)
        forgotten += [c.peer.card.node_id for c in changes if c.kind is ChangeKind.FORGOTTEN]
    assert sum(p.last_heard is None for p in t.peers.values()) == MAX_UNHEARD
    assert all(f"real{i}" in t.peers for i in range(5))
    assert len(forgotten) == MAX_UNHEARD * 9 and forgotten[0] == "f00000"


def test_stale_entries_are_forgotten_and_due_probes_back_off():
    t = PeerTable(card("me", "tcp://10.0.0.1:1"), interval_s=1.0, liveness=3,
                  forget_after_s=60)
    known(t, "a")
    t.tick(4)  # DEAD at 4
    probes = [now for now in range(4, 40) if t.due_probes(now)]
    assert probes[:4] == [5, 6, 8, 12]  # 1, 2, 4, 8 s apart
    assert t.tick(59.5) == []  # forgotten 60 s after it was last heard
    assert kinds(t.tick(60.5)) == [ChangeKind.FORGOTTEN]
    assert t.peers == {}


def test_demotion_doubles_and_ends():
    t = table()
    known(t, "a")
    assert kinds(t.demote("a", now=1, reason="no vote")) == [ChangeKind.DEMOTED]
    assert t.alive() == [] and "no vote" in t.peers["a"].detail
    t.heard(card("a"), Load(), now=10.9)  # still ALIVE, still demoted
    assert t.tick(10.95) == [] and t.alive() == []
    assert kinds(t.tick(11)) == [ChangeKind.RESTORED]
    assert [p.card.node_id for p in t.alive()] == ["a"]
    t.demote("a", now=11, reason="again")
    assert t.peers["a"].demoted_until == 31  # 20 s: the second strike
    for _ in range(20):
        t.demote("a", now=11, reason="again")
    assert t.peers["a"].demoted_until == 11 + MAX_DEMOTION_S


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
    assert kinds(dup) == [ChangeKind.DUPLICATE]
    assert t.heard(card("me", "tcp://10.0.0.7:1"), Load(), now=1) == []
    assert "me" not in t.peers


def test_alive_filters_by_model_and_swarm():
    t = table()
    known(t, "a")
    other = NodeCard(node_id="b", name="B", model_id="other", workers=1, rpc="tcp://10.0.0.5:1",
                     pub="tcp://10.0.0.5:2")
    t.discovered(other, "10.0.0.5", "static", 0)
    t.heard(other, Load(), now=0)
    known(t, "c", swarm="elsewhere")
    assert {p.card.node_id for p in t.alive()} == {"a", "b"}
    assert {p.card.node_id for p in t.alive(model_id="m")} == {"a"}


def test_rtt_is_smoothed():
    t = table()
    known(t, "a")
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
            changes = t.heard(card("a"), Load(state="leaving"), now)
        else:
            changes = t.tick(now)
        for c in changes:
            if c.kind is ChangeKind.STATE and c.old is not None:
                assert (c.old, c.new) in ALLOWED, (c.old, c.new)
        peer = t.peers.get("a")
        if kind == "tick" and peer is not None and peer.state is S.ALIVE:
            assert now - peer.since <= 1.5 + 1e-9  # ALIVE only while heard recently


def test_a_full_table_makes_room_from_stale_entries_and_refuses_only_when_all_live(
        monkeypatch):
    monkeypatch.setattr("zswarm.core.peers.MAX_PEERS", 2)
    t = table()
    known(t, "a")
    known(t, "b")
    assert kinds(t.discovered(card("c"), "10.0.0.3", "mdns", now=0)) == [ChangeKind.FULL]
    assert t.discovered(card("c"), "10.0.0.3", "mdns", now=1) == []  # said once
    assert set(t.peers) == {"a", "b"}
    assert states(t.heard(card("a"), Load(), now=2)) == []  # known peers still update
    t.heard(card("a"), Load(), now=4)
    t.tick(4)  # b is DEAD now: a newcomer takes its place
    changes = t.discovered(card("cc"), "10.0.0.3", "mdns", now=5)
    assert kinds(changes) == [ChangeKind.FORGOTTEN, ChangeKind.STATE]
    assert set(t.peers) == {"a", "cc"}


@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["disc", "heard", "tick"])),
                max_size=200))
def test_the_table_never_exceeds_its_cap_and_live_peers_are_never_displaced(events):
    import zswarm.core.peers as peers_mod

    t = table()
    now = 0.0
    for i, what in events:
        now += 0.5
        node = f"n{i}"
        if what == "disc":
            t.discovered(card(node), "10.0.0.2", "mdns", now)
        elif what == "heard":
            t.heard(card(node), Load(), now)
        else:
            t.tick(now)
        assert len(t.peers) <= peers_mod.MAX_PEERS


def test_a_stall_of_this_node_does_not_kill_its_peers():
    t = PeerTable(card("me", "tcp://10.0.0.1:1"), interval_s=1.0, liveness=3,
                  tick_every_s=0.25)
    known(t, "a")
    t.tick(0.25)
    assert t.tick(10.0) == []  # we were stopped for ~10 s: not a's fault
    assert states(t.tick(10.25 + 1.5)) == [("a", S.ALIVE, S.SUSPECT)]  # but now it is late
    for now in (12.0, 12.25, 12.5, 12.75, 13.0, 13.25, 13.5, 13.75, 14.0):
        changes = t.tick(now)
    assert states(changes) == [] and t.peers["a"].state is S.DEAD


def test_count_states_lists_every_state_in_order():
    from zswarm.core.peers import SHOWN_STATES, count_states, summarize_states

    counts = count_states(["dead", "alive", "alive", "unreachable"])
    assert list(counts) == list(SHOWN_STATES)
    assert counts["alive"] == 2 and counts["dead"] == 1 and counts["suspect"] == 0
    assert summarize_states(counts) == "2 alive, 1 dead, 1 unreachable"
    assert summarize_states(count_states([])) == "none"


def test_the_read_lag_brings_death_forward_by_at_most_one_tick():
    """Heartbeats read at ticks 0.25 s apart arrived up to 0.25 s before: DEAD at the first
    tick where the last one may be interval x liveness old, never earlier."""
    t = PeerTable(card("me", "tcp://10.0.0.1:1"), interval_s=1.0, liveness=3,
                  tick_every_s=0.25, read_lag_s=0.25)
    known(t, "a")  # heard at 0.0
    for now in (0.25 * k for k in range(1, 11)):  # up to 2.5 s
        t.tick(now)
    assert t.peers["a"].state is S.SUSPECT
    assert states(t.tick(2.75)) == [("a", S.SUSPECT, S.DEAD)]


def test_an_answer_older_than_a_goodbye_or_from_a_leaving_node_does_not_undo_it():
    t = table()
    known(t, "a")
    assert t.after_goodbye("a", 0.0, Load()) is False  # alive: any answer counts
    t.heard(card("a"), Load(state="leaving"), now=10.0)
    assert t.peers["a"].state is S.LEFT
    assert t.after_goodbye("a", 9.0, Load()) is True  # asked before the goodbye
    assert t.after_goodbye("a", 11.0, Load(state="draining")) is True  # its last answers
    assert t.after_goodbye("a", 11.0, Load()) is False  # asked after, and ready: back
    assert t.after_goodbye("nobody", 0.0, Load()) is False


def test_the_table_states_and_the_shown_states_are_one_vocabulary():
    import typing

    from zswarm.core.messages import MemberState, TableState
    from zswarm.core.peers import PeerState

    assert [s.value for s in PeerState] != [] and \
        {s.value for s in PeerState} == set(typing.get_args(TableState))
    assert set(typing.get_args(MemberState)) == {*typing.get_args(TableState), "unreachable"}
