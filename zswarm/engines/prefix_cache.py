"""Which sequence of an engine's KV cache holds which prompt: the prompt cache's bookkeeping.

A worker keeps the KV cache of the prompts it decoded in a few *slots* (sequences of
one llama.cpp context with a unified KV cache, like llama-server's slots). A new
prompt goes to the slot holding the longest common token prefix, so only the rest is
decoded; several conversations stay resident at once, and when the cache's cells
run short the least recently used slots are emptied first. Pure bookkeeping: no
llama.cpp calls here (engines/llamacpp.py carries them out), so the choice is tested
on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def common_prefix(a: list[int], b: list[int]) -> int:
    """The number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Slot:
    seq: int
    #: the tokens this sequence holds in the KV cache, positions 0..len-1
    tokens: list[int] = field(default_factory=list)
    last_used: int = 0


@dataclass(frozen=True)
class Choice:
    slot: Slot
    #: leading prompt tokens already in the slot (never the whole prompt: the last token
    #: is always decoded again, for its logits)
    reuse: int
    #: slots to empty first, for room
    evict: list[Slot]
    #: copy the first ``reuse`` tokens' cells from this slot into ``slot`` first (they are
    #: shared, not decoded again), or None: ``slot`` holds them already
    source: Slot | None = None


#: a slot holding another conversation that only shares a prefix (the system prompt,
#: say) with the prompt is not overwritten when it would lose more than this many tokens
#: (or a quarter of what it shares): the prompt takes another slot and shares the prefix
KEEP_TOKENS = 16


class PrefixCache:
    """``slots`` sequences (ids 0..slots-1) sharing ``capacity`` KV cells."""

    def __init__(self, slots: int, capacity: int) -> None:
        if slots < 1:
            raise ValueError("a prompt cache needs at least one slot")
        self.slots = [Slot(seq=i) for i in range(slots)]
        self.capacity = capacity
        self._clock = 0
        #: prompts served, prompts that reused a prefix, tokens reused, slots emptied or
        #: overwritten (what they held is gone)
        self.requests = 0
        self.hits = 0
        self.tokens_reused = 0
        self.evictions = 0

    def choose(self, prompt: list[int], extra: int, *, pinned: frozenset[int] = frozenset(),
               reserved: int = 0) -> Choice | None:
        """The slot for ``prompt`` (then ``extra`` more cells: the candidates' tokens).

        The slot holding the longest common prefix, if taking it loses little of what
        it holds (a conversation's next turn) or holds the whole prompt (asked again);
        else the least recently used slot (an
        empty one first), given the shared prefix by copy. Others are emptied, least
        recently used first, until the prompt and ``extra`` fit beside what stays.

        ``pinned``: sequences of slots running a request now (continuous batching):
        never chosen, never emptied, but their prefix may be shared. ``reserved``: cells
        their candidates may still take. None when no slot is free or the prompt cannot
        fit beside the pinned ones yet (it waits for them).
        """
        free = [s for s in self.slots if s.seq not in pinned]
        if not free:
            return None
        best = max(self.slots, key=lambda s: (common_prefix(s.tokens, prompt), -s.last_used))
        shared = min(common_prefix(best.tokens, prompt), max(0, len(prompt) - 1))
        slot, source = best, None
        asked_again = shared == len(prompt) - 1  # the whole prompt is in it: regenerate
        if best.seq in pinned or (not asked_again
                                  and len(best.tokens) - shared > max(KEEP_TOKENS, shared // 4)):
            spare = min((s for s in free if s is not best), default=None,
                        key=lambda s: (bool(s.tokens), s.last_used))
            if spare is not None:
                slot, source = spare, (best if shared else None)
        reuse = shared if slot is best or source is not None else 0
        evict: list[Slot] = []
        others = sorted((s for s in free if s is not slot and s is not source and s.tokens),
                        key=lambda s: s.last_used)
        held = reserved + sum(len(s.tokens) for s in self.slots if s is not slot)
        while others and held + len(prompt) + extra > self.capacity:
            victim = others.pop(0)
            held -= len(victim.tokens)
            evict.append(victim)
        if pinned and held + len(prompt) + extra > self.capacity:
            return None
        return Choice(slot, reuse, evict, source)

    def used(self, choice: Choice, tokens: list[int], *, reuse: int) -> None:
        """``choice`` was carried out with ``reuse`` tokens kept: its slot now holds
        ``tokens`` (the engine appends what it decodes next); the evicted are empty."""
        self._clock += 1
        for victim in choice.evict:
            victim.tokens = []
            self.evictions += 1
        if len(choice.slot.tokens) > (reuse if choice.source is None else 0):
            self.evictions += 1  # some of what the slot held is dropped
        choice.slot.tokens = list(tokens)
        choice.slot.last_used = self._clock
        if choice.source is not None:
            choice.source.last_used = self._clock
        self.requests += 1
        if reuse:
            self.hits += 1
            self.tokens_reused += reuse

    def forget(self, slot: Slot) -> None:
        """The slot's sequence was emptied (an error, a cancelled prompt)."""
        slot.tokens = []

    def clear(self) -> None:
        for slot in self.slots:
            slot.tokens = []
