"""Where a conversation's prefix is cached: keys for message prefixes and a bounded map.

A worker's prompt cache (engines/prefix_cache.py) helps only if a conversation's next
turn reaches the worker - and, with ``route``, the node - that holds its history. The
node cannot see tokens, but a conversation grows by whole messages: the key of every
prefix of the message list (a hash chain) names it, and the next turn's prompt has
this turn's messages as a prefix. ``Homes`` remembers, for the most recent keys, where
they were served (a worker name or a node id); bounded, least recently used first.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from zswarm.core.messages import GenerateRequest

#: conversations remembered per node (each a few dozen bytes)
MAX_HOMES = 4096


def conversation_keys(request: GenerateRequest) -> list[str]:
    """The key of each prefix of the request's messages, shortest first ([] for a raw
    prompt: it has no turns). Equal keys mean equal message lists up to that point."""
    keys: list[str] = []
    digest = hashlib.blake2b(digest_size=12)
    for message in request.messages:
        digest.update(message.role.encode() + b"\x00" + message.content.encode() + b"\x01")
        keys.append(digest.copy().hexdigest())
    return keys


class Homes:
    """Key -> where it was last served, for the MAX_HOMES most recent keys."""

    def __init__(self, limit: int = MAX_HOMES) -> None:
        self.limit = limit
        self._where: OrderedDict[str, str] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def find(self, keys: list[str]) -> str | None:
        """Where the longest known prefix was served (None: a new conversation)."""
        for key in reversed(keys):
            where = self._where.get(key)
            if where is not None:
                self._where.move_to_end(key)
                self.hits += 1
                return where
        self.misses += 1
        return None

    def record(self, keys: list[str], where: str) -> None:
        """The request with these keys was served at ``where`` (its full key is enough)."""
        if not keys:
            return
        self._where[keys[-1]] = where
        self._where.move_to_end(keys[-1])
        while len(self._where) > self.limit:
            self._where.popitem(last=False)
