"""The ctransformers backend on a tiny random-weight GPT-2 that the test writes itself."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from zswarm.core.messages import GenerateRequest, SamplingParams
from zswarm.engines.models import resolve_model
from zswarm.errors import ModelNotFound
from zswarm.testing.tiny_gpt2 import reference_logits, write_tiny_gpt2

pytest.importorskip("ctransformers")
from zswarm.engines.ctransformers import CTransformersEngine  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "tiny-gpt2.bin")


@pytest.fixture(scope="module")
def engine(tiny):
    eng = CTransformersEngine(resolve_model(str(tiny.path)), model_type="gpt2")
    yield eng
    eng.close()


def test_loads_and_matches_numpy_reference(engine, tiny):
    tokens = engine.tokenize("hello")
    assert tokens == list(b"hello")
    engine.reset()
    engine._llm.eval(tokens)
    ours = engine._logits()
    ref = reference_logits(tiny, tokens)
    # ggml computes GELU through an f16 table: agreement to ~1e-2 on logits of size ~10
    assert np.allclose(ours, ref, atol=2e-2), np.abs(ours - ref).max()
    assert int(np.argmax(ours)) == int(np.argmax(ref))
    shuffled = reference_logits(tiny, list(reversed(tokens)))
    assert not np.allclose(ours, shuffled, atol=2e-2)  # the check can fail


def test_generate_greedy_is_deterministic_and_follows_reference(engine, tiny):
    req = GenerateRequest(prompt="abc", params=SamplingParams(max_tokens=5, temperature=0,
                                                              ignore_eos=True))
    [a] = engine.generate(req)
    [b] = engine.generate(req)
    assert a.text == b.text and a.tokens == 5 and a.finish_reason == "length"
    first = int(np.argmax(reference_logits(tiny, list(b"abc"))[:256]))
    assert a.text.encode("latin-1", "replace")[:1] == bytes([first]) or first >= 128


def test_streaming_seeded_candidates(engine):
    pieces: dict[int, list[str]] = {0: [], 1: []}
    req = GenerateRequest(prompt="abc", n=2, params=SamplingParams(max_tokens=8, seed=3,
                                                                   temperature=1.0,
                                                                   ignore_eos=True))
    cands = engine.generate(req, on_token=lambda i, t: pieces[i].append(t))
    assert len(cands) == 2
    for i, c in enumerate(cands):
        assert "".join(pieces[i]) == c.text and c.mean_logprob is not None
    again = engine.generate(req)
    assert [c.text for c in again] == [c.text for c in cands]


def test_cancel_stops_generation(engine):
    stop = threading.Event()
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        if calls == 10:
            stop.set()
        return stop.is_set()

    [c] = engine.generate(GenerateRequest(prompt="abc", params=SamplingParams(
        max_tokens=100, ignore_eos=True)), should_stop=should_stop)
    assert c.finish_reason == "cancelled" and c.tokens == 9


def test_non_ascii_prompt_does_not_overflow(engine):
    [c] = engine.generate(GenerateRequest(prompt="héllo wörld ✓" * 3,
                                          params=SamplingParams(max_tokens=3, ignore_eos=True)))
    assert c.tokens == 3


def test_damaged_file_is_refused_before_native_code(tiny, tmp_path):
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(tiny.path.read_bytes()[:-1000])
    with pytest.raises(ModelNotFound, match="damaged.bin"):
        CTransformersEngine(resolve_model(str(damaged)), model_type="gpt2")
