"""Continuous batching's bookkeeping (engines/batching.py) against a KV cache that checks.

The fake KV cache below records what each sequence really holds and refuses a token at a
position that does not follow what the sequence holds; after every step the prompt
cache's books must say exactly what each slot's sequence holds. Any mix of requests
(n, lengths, shared prefixes), cancels and steps must end every request once, report
every candidate once, and give back every pool sequence. The real model's side
(same answers batched or alone) is tests/engines/test_llamacpp.py.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import question
from zswarm.core.messages import GenerateRequest
from zswarm.engines.batching import Batcher
from zswarm.engines.prefix_cache import PrefixCache, Slot

VOCAB = 16
EOG = 0


class CheckingKv:
    n_batch = 48
    cache_slots = 3
    max_batch_candidates = 4
    eog = np.array([EOG])
    eog_set = frozenset({EOG})

    def __init__(self, n_ctx: int = 256) -> None:
        self.n_ctx = n_ctx
        self.cache = PrefixCache(self.cache_slots, n_ctx)
        self.seqs: defaultdict[int, list[int]] = defaultdict(list)
        self.batch: list[tuple[int, int, int, bool]] = []

    @property
    def slots(self) -> list[Slot]:
        return self.cache.slots

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        assert 0 < len(entries) <= self.n_batch
        for token, pos, seq, _ in entries:
            assert pos == len(self.seqs[seq]), f"seq {seq}: position {pos} after " \
                                               f"{len(self.seqs[seq])} tokens"
            self.seqs[seq].append(token)
        assert sum(len(v) for v in self.seqs.values()) <= 4 * self.n_ctx
        self.batch = entries

    def logits(self, i: int) -> np.ndarray:
        token, pos, seq, want = self.batch[i]
        assert want, "logits of an entry that did not ask for them"
        out = np.zeros(VOCAB, dtype=np.float32)
        out[1 + (token * 7 + pos + seq) % (VOCAB - 1)] = 5.0
        if (token + pos) % 9 == 0:
            out[EOG] = 10.0  # some candidates end early
        return out

    def place(self, tokens: list[int], extra: int, *, pinned: frozenset[int], reserved: int
              ) -> tuple[Slot, int] | None:
        choice = self.cache.choose(tokens, extra, pinned=pinned, reserved=reserved)
        if choice is None:
            return None
        for victim in choice.evict:
            assert victim.seq not in pinned
            self.seqs[victim.seq] = []
        assert choice.slot.seq not in pinned
        held = self.seqs[(choice.source or choice.slot).seq]
        self.seqs[choice.slot.seq] = list(held[:choice.reuse])
        self.cache.used(choice, tokens[:choice.reuse], reuse=choice.reuse)
        return choice.slot, choice.reuse

    def copy_seq(self, src: int, dst: int) -> None:
        assert not self.seqs[dst], "copied over a sequence in use"
        self.seqs[dst] = list(self.seqs[src])

    def drop_seq(self, seq: int, start: int = 0) -> None:
        del self.seqs[seq][start:]

    def token_bytes(self, token: int) -> bytes:
        return b"ab"[token % 2:token % 2 + 1]

    def forget(self, slot: Slot) -> None:
        self.cache.forget(slot)

    def books_agree(self) -> None:
        for slot in self.cache.slots:
            assert slot.tokens == self.seqs[slot.seq], f"slot {slot.seq}"


PREFIXES = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 9, 9], [7, 7, 7]]


def request(n: int, max_tokens: int) -> GenerateRequest:
    return question("x", n=n, temperature=0.0, max_tokens=max_tokens)


ops = st.lists(st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 2), st.integers(0, 6), st.integers(1, 5),
              st.integers(1, 12)),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("step"), st.integers(1, 4)),
), max_size=30)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_any_mix_of_requests_cancels_and_steps_keeps_the_books(operations):
    kv = CheckingKv()
    batcher = Batcher(kv, max_jobs=kv.cache_slots)
    done: dict[str, object] = {}
    cands: dict[str, dict[int, object]] = {}
    asked: dict[str, int] = {}

    def submit(key: str, prompt: list[int], n: int, max_tokens: int) -> None:
        asked[key] = n
        cands[key] = {}

        def on_candidate(i: int, c: object) -> None:
            assert i not in cands[key], "a candidate reported twice"
            cands[key][i] = c

        def on_done(exc: object) -> None:
            assert key not in done, "a request ended twice"
            done[key] = exc

        batcher.submit(key, request(n, max_tokens), prompt, on_token=None,
                       on_candidate=on_candidate, on_done=on_done)

    for number, op in enumerate(operations):
        if op[0] == "submit":
            _, which, extra, n, max_tokens = op
            submit(f"r{number}", PREFIXES[which] + [8] * extra, n, max_tokens)
        elif op[0] == "cancel":
            batcher.cancel(f"r{op[1]}")
        else:
            for _ in range(op[1]):
                batcher.step()
                kv.books_agree()
    for _ in range(2000):
        if not batcher.busy:
            break
        batcher.step()
        kv.books_agree()
    assert not batcher.busy
    assert set(done) == set(asked)
    for key, n in asked.items():
        if done[key] is None:
            assert sorted(cands[key]) == list(range(n)), key
    assert sorted(batcher._pool) == list(range(kv.cache_slots,
                                               kv.cache_slots + kv.max_batch_candidates))
    assert all(not kv.seqs[seq] for seq in batcher._pool)  # candidates' sequences emptied


def test_a_queued_request_cancelled_ends_at_once():
    kv = CheckingKv(n_ctx=64)
    batcher = Batcher(kv, max_jobs=1)
    ended: list[str] = []
    for key in ("running", "queued"):
        batcher.submit(key, request(1, 40), [1, 2, 3], on_token=None, on_candidate=None,
                       on_done=lambda exc, key=key: ended.append(key))
    batcher.step()
    assert [j.key for j in batcher.jobs] == ["running"] and len(batcher.queue) == 1
    batcher.cancel("queued")
    assert ended == ["queued"] and not batcher.queue
