"""runtime/speeds.py: measured, smoothed, bounded."""

from __future__ import annotations

import pytest

from zswarm.core.plan import FIXED_COST, NodeLoad
from zswarm.runtime.speeds import ALPHA, MAX_NODES, Speeds


def test_a_share_is_measured_with_its_fixed_cost_and_smoothed():
    speeds = Speeds()
    assert speeds.of("a") == 0.0
    speeds.observe("a", 4, 2.0)
    assert speeds.of("a") == pytest.approx((4 + FIXED_COST) / 2.0)
    speeds.observe("a", 4, 1.0)  # twice as fast once: moved by ALPHA of the difference
    first = (4 + FIXED_COST) / 2.0
    assert speeds.of("a") == pytest.approx(first + ALPHA * ((4 + FIXED_COST) - first))
    assert speeds.applied(NodeLoad("a", 1, 1, 0)).speed == speeds.of("a")


def test_nothing_delivered_or_no_time_measures_nothing():
    speeds = Speeds()
    for count, seconds in ((0, 1.0), (3, 0.0), (3, -1.0), (3, float("nan"))):
        speeds.observe("a", count, seconds)
    assert speeds.of("a") == 0.0


def test_at_most_max_nodes_are_remembered_the_least_recent_forgotten():
    speeds = Speeds()
    for i in range(MAX_NODES + 10):
        speeds.observe(f"n{i}", 1, 1.0)
    assert speeds.of("n0") == 0.0 and speeds.of(f"n{MAX_NODES + 9}") > 0
    assert sum(speeds.of(f"n{i}") > 0 for i in range(MAX_NODES + 10)) == MAX_NODES
