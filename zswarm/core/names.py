"""How nodes are shown to people: names are for people, ids for machines.

Owns ``shown``: a node's name as every view prints it - its own name, or, where two
nodes with different ids share a name (a shelf of machines called ``pi``), the name
with the start of its id (``pi (3fa2c1)``), so no two nodes look alike. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

#: hex digits of the id shown beside a shared name
SHORT_ID = 6


def shown(nodes: Iterable[tuple[str, str]]) -> dict[str, str]:
    """(node id, name) pairs -> node id -> the name to show: the name, or "name (id)"
    where another id has the same name (SHORT_ID digits of the id, more where those do
    not tell the ids apart). An empty id is shown by its name."""
    ids: dict[str, set[str]] = {}
    pairs = list(nodes)
    for node_id, name in pairs:
        ids.setdefault(name, set()).add(node_id)
    digits = {name: _digits(group) for name, group in ids.items() if len(group) > 1}
    return {node_id: f"{name} ({node_id[:digits[name]]})" if name in digits and node_id
            else name for node_id, name in pairs}


def _digits(ids: set[str]) -> int:
    """The fewest digits (at least SHORT_ID) that tell these ids apart."""
    n = SHORT_ID
    while n < max(map(len, ids)) and len({i[:n] for i in ids}) < len(ids):
        n += 1
    return n
