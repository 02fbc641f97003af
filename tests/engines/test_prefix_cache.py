"""The prompt cache's bookkeeping (engines/prefix_cache.py): which slot a prompt goes to."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zswarm.engines.prefix_cache import PrefixCache, common_prefix


def serve(cache: PrefixCache, prompt: list[int], extra: int = 0) -> int:
    choice = cache.choose(prompt, extra)
    cache.used(choice, prompt, reuse=choice.reuse)
    return choice.reuse


def test_the_longest_prefix_wins_and_the_last_token_is_always_decoded():
    cache = PrefixCache(3, capacity=1000)
    assert serve(cache, [1, 2, 3, 4]) == 0
    assert serve(cache, [9, 9, 9]) == 0  # another conversation: another (empty) slot
    assert serve(cache, [1, 2, 3, 4, 5, 6]) == 4  # turn 2 of the first
    assert serve(cache, [1, 2, 3, 4, 5, 6]) == 5  # the same prompt again: all but one
    assert serve(cache, [9, 9, 9, 8]) == 3
    assert (cache.requests, cache.hits, cache.tokens_reused) == (5, 3, 12)


def test_an_edited_earlier_message_reuses_only_what_is_still_the_same():
    cache = PrefixCache(2, capacity=1000)
    serve(cache, [1, 2, 3, 4, 5])
    assert serve(cache, [1, 2, 7, 4, 5]) == 2


def test_least_recently_used_slots_are_emptied_for_room():
    cache = PrefixCache(3, capacity=12)
    serve(cache, [1, 1, 1, 1])
    serve(cache, [2, 2, 2, 2])
    choice = cache.choose([3, 3, 3, 3], extra=4)  # 4 + 4 + 4 + 4 > 12: the oldest goes
    assert [s.tokens[0] for s in choice.evict] == [1]
    cache.used(choice, [3, 3, 3, 3], reuse=0)
    assert cache.evictions == 1 and sorted(s.tokens[:1] for s in cache.slots) == [[], [2], [3]]


@given(st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=60), max_size=30),
       st.integers(1, 4), st.integers(0, 6))
def test_any_sequence_of_prompts_keeps_the_books_right(prompts, slots, extra):
    cache = PrefixCache(slots, capacity=120)
    for prompt in prompts:
        best = max(common_prefix(s.tokens, prompt) for s in cache.slots)
        choice = cache.choose(prompt, extra)
        assert choice.slot not in choice.evict and choice.source not in choice.evict
        holder = choice.source or choice.slot
        assert choice.reuse == min(common_prefix(holder.tokens, prompt), len(prompt) - 1)
        if choice.source is not None or choice.reuse:
            assert choice.reuse == min(best, len(prompt) - 1)  # the longest prefix is used
        rest = [s for s in cache.slots if s not in (choice.slot, choice.source)
                and s not in choice.evict and s.tokens]
        kept = sum(len(s.tokens) for s in rest) + (len(choice.source.tokens)
                                                     if choice.source else 0)
        assert kept + len(prompt) + extra <= cache.capacity or not rest
        cache.used(choice, prompt, reuse=choice.reuse)
        assert choice.slot.tokens == prompt


def test_another_conversation_sharing_the_system_prompt_takes_a_slot_of_its_own():
    cache = PrefixCache(2, capacity=1000)
    system = list(range(20))
    conversation = system + list(range(100, 160))
    serve(cache, conversation)
    choice = cache.choose(system + [7, 7, 7], 0)  # a new one: only the system prompt shared
    assert choice.source is not None and choice.source.tokens == conversation
    assert choice.reuse == 20 and choice.slot.tokens == []
    cache.used(choice, system + [7, 7, 7], reuse=20)
    assert serve(cache, conversation + [1, 2]) == len(conversation)  # still whole
