"""net/security.py on its own: membership tickets and the memory they may take."""

from __future__ import annotations

from zswarm.net.security import Membership, one_off, ticket, write_key_file


def test_tickets_admit_members_only_and_a_flood_of_keys_stays_within_the_bound(tmp_path):
    swarm = write_key_file(tmp_path / "swarm.key")
    other = write_key_file(tmp_path / "other.key")
    members = Membership(swarm)
    member = one_off(swarm).node.public
    assert members.admits(member, ticket(swarm, member))
    assert not members.admits(member, ticket(other, member))  # another swarm's ticket
    assert not members.admits(member, "")
    stranger = one_off().node.public
    assert not members.admits(stranger, ticket(swarm, member))  # a member's, copied
    for i in range(Membership.MAX_CHECKED + 100):  # senders with keys of their own
        key = f"{i:064x}"
        members.admits(key, "forged")
        assert len(members._ok) <= Membership.MAX_CHECKED
    assert members.admits(member, ticket(swarm, member))  # still right after the flood
