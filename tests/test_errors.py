"""The error tree: every kind on the wire turns back into its own class."""

from __future__ import annotations

import pytest

from zswarm import errors
from zswarm.errors import ERROR_KINDS, ZswarmError, error_from_kind


def _tree(root: type[ZswarmError]) -> list[type[ZswarmError]]:
    return [root] + [c for sub in root.__subclasses__() for c in _tree(sub)]


def test_every_class_of_the_tree_is_found_by_its_own_kind():
    own = [c for c in _tree(ZswarmError)
           if c.__module__ == errors.__name__ and "kind" in vars(c)]
    assert len(own) == 15
    assert all(ERROR_KINDS[c.kind] is c for c in own)


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_a_kind_received_is_rebuilt_as_its_class(kind):
    exc = error_from_kind(kind, "said")
    assert type(exc) is ERROR_KINDS[kind] and str(exc) == "said" and exc.kind == kind


def test_an_unknown_kind_is_a_plain_zswarm_error():
    assert type(error_from_kind("made-up", "x")) is ZswarmError
