"""core/plan.py: who generates how many candidates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zswarm.core.plan import ROUTE, SELF, NodeLoad, plan, shares

ME = NodeLoad(SELF, workers_ready=1, idle_workers=1, queue_depth=0)


def peer(name: str, queue: int = 0, idle: int = 1, ready: int = 1, speed: float = 0.0
         ) -> NodeLoad:
    return NodeLoad(name, workers_ready=ready, idle_workers=idle, queue_depth=queue,
                    speed=speed)


def test_no_peers_is_local_only():
    assert plan(4, "majority", ME, []).parts == {SELF: 4}


def test_n1_stays_local_for_consensus_strategies():
    assert plan(1, "first_valid", ME, [peer("a")]).parts == {SELF: 1}


def test_candidates_spread_over_distinct_nodes_least_loaded_first():
    parts = plan(3, "majority", ME, [peer("busy", queue=5, idle=0), peer("a"), peer("b")]).parts
    assert parts == {SELF: 1, "a": 1, "b": 1}


def test_more_candidates_than_nodes_round_robin():
    assert plan(5, "best_of_n", ME, [peer("a")]).parts == {SELF: 3, "a": 2}


def test_local_without_ready_worker_is_skipped():
    down = NodeLoad(SELF, 0, 0, 0)
    assert plan(2, "majority", down, [peer("a")]).parts == {"a": 2}
    assert plan(2, "majority", down, []).parts == {}


def test_route_picks_least_loaded_including_self():
    busy_me = NodeLoad(SELF, 1, 0, 3)
    assert plan(1, ROUTE, busy_me, [peer("a", queue=1, idle=0), peer("b")]).parts == {"b": 1}
    assert plan(1, ROUTE, ME, [peer("a")]).parts == {SELF: 1}  # tie: this node first


@given(st.integers(1, 32), st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4),
                                              st.integers(0, 9)), max_size=8))
def test_plan_covers_exactly_n(n, loads):
    peers = [peer(f"p{i}", queue=q, idle=min(i_, r), ready=r) for i, (r, i_, q) in enumerate(loads)]
    parts = plan(n, "weighted_vote", ME, peers).parts
    assert sum(parts.values()) == n
    assert len(parts) == min(n, 1 + sum(1 for p in peers if p.workers_ready > 0))


def test_equal_or_unknown_speeds_split_evenly():
    assert plan(8, "confidence", ME, [peer("b")]).parts == {SELF: 4, "b": 4}
    same = NodeLoad(SELF, 1, 1, 0, speed=5.0)
    assert plan(8, "confidence", same, [peer("b", speed=5.0)]).parts == {SELF: 4, "b": 4}
    # unknown counts as the median of the known ones
    assert plan(9, "majority", same, [peer("b", speed=5.0), peer("c")]).parts == \
        {SELF: 3, "b": 3, "c": 3}


def test_a_faster_node_gets_more_so_both_finish_together():
    fast_me = NodeLoad(SELF, 1, 1, 0, speed=3.0)
    parts = plan(8, "confidence", fast_me, [peer("slow", speed=1.0)]).parts
    # (count + 1) / speed: (7 + 1) / 3 = 2.7 s here, (1 + 1) / 1 = 2 s there; 6 and 2
    # would end at 2.3 s and 3 s
    assert parts == {SELF: 7, "slow": 1}
    assert shares(16, [fast_me, peer("slow", speed=1.0)]) == {SELF: 13, "slow": 3}


def test_a_queue_at_a_node_lowers_its_share():
    me = NodeLoad(SELF, 1, 1, 0, speed=2.0)
    parts = plan(8, "confidence", me, [peer("b", queue=2, idle=0, speed=2.0)]).parts
    assert parts[SELF] > parts["b"] >= 1


@given(st.integers(1, 32), st.lists(st.floats(0, 100), min_size=1, max_size=8))
def test_every_member_gets_one_and_the_shares_add_up(n, speeds):
    members = [peer(f"p{i}", speed=s) for i, s in enumerate(speeds)][:n]
    parts = shares(n, members)
    assert sum(parts.values()) == n and min(parts.values()) >= 1
    assert set(parts) == {m.node_id for m in members}


def test_a_fast_peer_gets_at_most_twice_the_even_share():
    # a member that answers at once (with junk, say) looks 100 times faster: it still
    # makes at most twice what an even split gives it; this node is not capped
    me = NodeLoad(SELF, 1, 1, 0, speed=1.0)
    parts = plan(12, "confidence", me, [peer("liar", speed=100.0), peer("b", speed=1.0)]).parts
    assert parts["liar"] == 8 == 2 * 12 // 3 and sum(parts.values()) == 12
    fast_me = NodeLoad(SELF, 1, 1, 0, speed=100.0)
    assert plan(12, "confidence", fast_me, [peer("b", speed=1.0)]).parts[SELF] > 8


@given(st.integers(1, 32), st.lists(st.floats(0.01, 1000), min_size=2, max_size=8))
def test_no_peer_exceeds_twice_the_even_share(n, speeds):
    members = [peer(f"p{i}", speed=s) for i, s in enumerate(speeds)][:n]
    parts = shares(n, [NodeLoad(SELF, 1, 1, 0, speed=1.0), *members][:n])
    cap = -(-2 * n // len(parts))
    assert all(c <= cap for node, c in parts.items() if node != SELF)
    assert sum(parts.values()) == n
