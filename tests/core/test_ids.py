"""core/ids.py and core/claims.unproven: ids that are keys, addresses that name keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import card, key_of
from zswarm import statedir
from zswarm.config import parse_config
from zswarm.core.claims import unproven
from zswarm.core.ids import is_public, node_id_of, pinned, unpinned

HEX = st.text("0123456789abcdef", min_size=64, max_size=64)


@given(st.text(max_size=200))
def test_any_address_is_split_without_raising(text):
    endpoint, public = unpinned(text)
    assert endpoint + (f"?key={public}" if public else "") == text or "?key=" in text
    assert isinstance(is_public(public), bool)


@given(HEX)
def test_an_address_names_its_key_and_a_key_its_id(public):
    assert unpinned(pinned("tcp://10.0.0.2:7001", public)) == ("tcp://10.0.0.2:7001", public)
    assert len(node_id_of(public)) == 16 and node_id_of(public) == node_id_of(public.upper())


@given(st.text(max_size=64), st.text(max_size=64))
def test_a_card_is_its_keys_or_refused_never_an_error(node_id, public):
    forged = card("x", node_id=node_id or "x", public=public)
    why = unproven(forged)
    assert why == "" or not is_public(public) or forged.node_id != node_id_of(public)
    assert why != "" or node_id_of(public) == forged.node_id  # refused unless its key's
    assert unproven(card("b")) == ""
    assert "another node" in unproven(card("b"), key_of("c"))
    assert "not its key's" in unproven(card("b", node_id=card("c").node_id))


@given(st.binary(max_size=2000))
def test_a_damaged_members_file_reads_as_none_never_an_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("m")
    cfg = parse_config({"node": {"state_dir": str(folder)}})
    (folder / statedir.MEMBERS_FILE).write_bytes(data)
    assert isinstance(statedir.read_members(cfg), list)
