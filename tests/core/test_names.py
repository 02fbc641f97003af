"""core/names.py: names shown so that no two nodes look alike."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zswarm.core.names import shown


def test_a_shared_name_is_shown_with_the_start_of_each_id():
    names = shown([("3fa2c1aa", "pi"), ("77be09bb", "pi"), ("0123abcd", "laptop"),
                   ("3fa2c1aa", "pi")])
    assert names == {"3fa2c1aa": "pi (3fa2c1)", "77be09bb": "pi (77be09)",
                     "0123abcd": "laptop"}
    assert shown([("3fa2c1aa", "pi"), ("3fa2c1ab", "pi")]) == {  # more digits where needed
        "3fa2c1aa": "pi (3fa2c1aa)", "3fa2c1ab": "pi (3fa2c1ab)"}


@given(st.lists(st.tuples(st.text("0123456789abcdef", min_size=16, max_size=16),
                          st.sampled_from(["pi", "vm", "laptop"])), max_size=12))
def test_nodes_with_different_ids_never_look_alike(pairs):
    ids = dict(pairs)  # one name per id (an id's card names it once)
    names = shown(ids.items())
    assert len(set(names.values())) == len(ids)
    assert all(names[i].startswith(n) for i, n in ids.items())
