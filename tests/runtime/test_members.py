"""runtime/members.py: the members a node verified, kept in its state dir and probed
after a restart (bounded, checked, forgotten in time or on request)."""

from __future__ import annotations

import json

from tests.helpers import card, id_of, key_of
from zswarm import statedir
from zswarm.config import parse_config
from zswarm.core.ids import pinned
from zswarm.runtime import members
from zswarm.runtime.members import FLUSH_S, MAX_DUE, MAX_REMEMBERED, Remembered

DAY = 86_400.0


def config(tmp_path, **federation):
    return parse_config({"node": {"state_dir": str(tmp_path / "state")},
                         "federation": federation})


def test_a_new_member_is_kept_at_once_and_one_seen_again_now_and_then(tmp_path):
    cfg = config(tmp_path)
    kept = Remembered(cfg, now=1000.0)
    kept.seen(card("b"), 1000.0)
    kept.flush(1000.0)
    (b,) = statedir.read_members(cfg)
    assert (b.node_id, b.name, b.address) == (id_of("b"), "b",
                                               pinned("tcp://10.0.0.2:7001", key_of("b")))
    assert (tmp_path / "state" / "members.json").stat().st_mode & 0o777 == 0o600
    kept.seen(card("b"), 1010.0)
    kept.flush(1010.0)  # only seen again: not written yet
    assert statedir.read_members(cfg)[0].last_seen == 1000.0
    kept.seen(card("b"), 1000.0 + FLUSH_S + 5)
    kept.flush(1000.0 + FLUSH_S + 5)
    assert statedir.read_members(cfg)[0].last_seen == 1000.0 + FLUSH_S + 5
    kept.seen(card("c", host="10.0.0.3"), 1000.0 + FLUSH_S + 6)  # new: at once
    kept.flush(1000.0 + FLUSH_S + 6)
    assert {m.name for m in statedir.read_members(cfg)} == {"b", "c"}
    # after a restart: both, most recently seen probed first, none alive
    again = Remembered(cfg, now=1100.0)
    assert [m.name for m in again.due(0.0, known=set())] == ["c", "b"]
    assert [m.name for m in again.due(0.0, known={id_of("c")})] == ["b"]


def test_a_silent_member_is_probed_less_and_less_often(tmp_path):
    cfg = config(tmp_path)
    kept = Remembered(cfg, now=0.0)
    kept.seen(card("b"), 0.0)
    probes = []
    for clock in range(0, 300):
        for m in kept.due(float(clock), set()):
            kept.probing(m.node_id, float(clock))
            probes.append(clock)
    gaps = [b - a for a, b in zip(probes, probes[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] <= 60 and len(probes) < 15, probes


def test_what_the_file_says_is_checked_bounded_and_forgotten_in_time(tmp_path):
    cfg = config(tmp_path, remember_days=7)
    now = 100 * DAY
    entries = [statedir.Member(node_id=id_of(f"n{i}"), name=f"n{i}",
                               address=pinned("tcp://10.0.1.1:1", key_of(f"n{i}")),
                               last_seen=now - i) for i in range(MAX_REMEMBERED + 10)]
    entries += [statedir.Member(node_id=id_of("liar"), name="liar",  # not its key's id
                                address=pinned("tcp://10.0.1.1:1", key_of("other")),
                                last_seen=now),
                statedir.Member(node_id=id_of("old"), name="old",  # not seen for 8 days
                                address=pinned("tcp://10.0.1.1:1", key_of("old")),
                                last_seen=now - 8 * DAY)]
    statedir.write_members(cfg, entries)
    kept = Remembered(cfg, now=now)
    assert len(kept.members) == MAX_REMEMBERED
    assert id_of("n0") in kept.members and id_of(f"n{MAX_REMEMBERED + 9}") not in kept.members
    assert id_of("liar") not in kept.members and id_of("old") not in kept.members
    assert len(kept.due(0.0, set())) == MAX_DUE
    (tmp_path / "state" / "members.json").write_text("{damaged")
    assert Remembered(cfg, now=now).members == {}  # said in the log, written anew


def test_forget_drops_a_member_even_while_the_node_runs(tmp_path):
    cfg = config(tmp_path)
    kept = Remembered(cfg, now=0.0)  # the running node's
    kept.seen(card("b"), 0.0)
    kept.seen(card("c", host="10.0.0.3"), 0.0)
    kept.flush(0.0)
    gone = members.forget(cfg, id_of("b")[:6])  # zswarm peers --forget
    assert [m.name for m in gone] == ["b"]
    kept.seen(card("c", host="10.0.0.3"), 2 * FLUSH_S)
    kept.flush(2 * FLUSH_S)  # the node's next write keeps the deletion
    assert [m.name for m in statedir.read_members(cfg)] == ["c"]
    assert members.forget(cfg, "ffff") == []
    assert json.loads((tmp_path / "state" / "members.json").read_text())[0]["name"] == "c"
