"""Node-local runtime with real worker processes and the real default model."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from tests.helpers import conversation, question
from zswarm.asks import Ask
from zswarm.core.messages import GenerateRequest, SamplingParams
from zswarm.errors import DeadlineExceeded, ModelNotFound, Overloaded
from zswarm.runtime.local import local_node
from zswarm.testing.cluster import wait_until_async

pytestmark = pytest.mark.model

#: a short ask: the node answers again (after a crash, a cancel, an overload)
SAY_HI = Ask(question("Say hi.", max_tokens=8), "first_valid", 30_000)




async def test_ask_with_candidates_from_two_workers(config_factory):
    cfg = config_factory(node={"workers": 2})
    async with local_node(cfg) as local:
        answer, report = await local.coordinator.ask(
            Ask(question("What is 2 + 3?", n=4, max_tokens=24, seed=1), "majority", 60_000))
        assert answer == report.candidates[report.winner].text
        assert {c.worker for c in report.candidates} == {"w0", "w1"}
        assert len(report.candidates) >= 3 and report.strategy == "majority"
        assert all(c.node == "test" for c in report.candidates)


async def test_worker_killed_mid_request_is_retried_and_node_keeps_serving(config_factory):
    cfg = config_factory(node={"workers": 2}, scheduler={"restart_backoff_initial_ms": 50})
    async with local_node(cfg) as local:
        pool = local.pool
        result: list[object] = []

        async def long_request():
            result.append(await local.coordinator.ask(
                Ask(question("Write a long story.", max_tokens=400, ignore_eos=True, seed=2),
                    "first_valid", 60_000)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_request)
            await wait_until_async(lambda: any(w.requests for w in pool.workers.values()), 10.0)
            busy = [w for w in pool.workers.values() if w.requests]
            assert len(busy) == 1
            os.kill(busy[0].pid, signal.SIGKILL)
        answer, report = result[0]
        # nothing had reached the client yet, so the request was retried on the other worker
        assert report.candidates[0].worker != busy[0].name
        assert report.candidates[0].tokens == 400
        await wait_until_async(lambda: local.scheduler.workers_ready == 2, 10.0)
        assert busy[0].restarts == 1
        answer, _ = await local.coordinator.ask(SAY_HI)
        assert answer


async def test_crash_of_only_worker_fails_cleanly_then_recovers(config_factory):
    cfg = config_factory(scheduler={"restart_backoff_initial_ms": 50})
    async with local_node(cfg) as local:
        tokens: list[str] = []
        errors: list[BaseException] = []

        async def long_request():
            try:
                story = question("Write a long story.", max_tokens=400, ignore_eos=True)
                await local.coordinator.ask(Ask(story, "first_valid", 60_000),
                                            on_token=lambda i, t: tokens.append(t))
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_request)
            await wait_until_async(lambda: len(tokens) > 0, 10.0)
            os.kill(local.pool.workers["w0"].pid, signal.SIGKILL)
        assert len(errors) == 1 and "died" in str(errors[0]) and "SIGKILL" in str(errors[0])
        answer, _ = await local.coordinator.ask(SAY_HI)
        assert answer


async def test_overload_fails_fast(config_factory):
    cfg = config_factory(scheduler={"max_queue": 1})
    async with local_node(cfg) as local:
        long = question("Write a long story.", max_tokens=500, ignore_eos=True)
        async with trio.open_nursery() as nursery:
            for _ in range(cfg.model.cache_slots + 1):  # each slot runs one, one waits
                nursery.start_soon(lambda: local.coordinator.ask(Ask(long, "first_valid", 60_000)))
            await wait_until_async(lambda: local.scheduler.queue_depth == 1, 10.0)
            with trio.fail_after(2), pytest.raises(Overloaded, match="queue full"):
                await local.coordinator.ask(Ask(long, "first_valid", 60_000))
            nursery.cancel_scope.cancel()


async def test_deadline_cancels_the_worker_and_frees_it(config_factory):
    cfg = config_factory()
    async with local_node(cfg) as local:
        with pytest.raises(DeadlineExceeded):
            await local.coordinator.ask(Ask(question("Write a long story.", max_tokens=4000,
                                            ignore_eos=True), "first_valid", 500))
        # the worker confirmed the cancel before the call returned: it is idle again
        with trio.fail_after(1):
            await wait_until_async(lambda: local.scheduler.idle_workers == 1, 10.0)
        answer, _ = await local.coordinator.ask(SAY_HI)
        assert answer


async def test_cancel_of_caller_stops_generation_within_a_second(config_factory):
    cfg = config_factory()
    async with local_node(cfg) as local:
        tokens: list[str] = []
        with trio.move_on_after(0.5):
            story = question("Write a long story.", max_tokens=4000, ignore_eos=True)
            await local.coordinator.ask(Ask(story, "first_valid", 60_000),
                                        on_token=lambda i, t: tokens.append(t))
        count = len(tokens)
        assert local.scheduler.idle_workers == 1
        await trio.sleep(0.3)  # measuring that nothing more arrives, not synchronising
        assert len(tokens) == count


async def test_missing_model_is_a_clear_startup_error(config_factory, tmp_path):
    cfg = config_factory(model={"path": str(tmp_path / "missing.gguf")})
    with pytest.raises(ModelNotFound, match="missing.gguf"):
        async with local_node(cfg):
            pass


async def test_ctransformers_backend_through_a_worker(config_factory, tmp_path):
    pytest.importorskip("ctransformers")
    from zswarm.testing.tiny_gpt2 import write_tiny_gpt2

    tiny = write_tiny_gpt2(tmp_path / "tiny.bin")
    cfg = config_factory(model={"path": str(tiny.path), "backend": "ctransformers",
                                "model_type": "gpt2", "memory_limit_mib": 4096})
    async with local_node(cfg) as local:
        request = GenerateRequest(prompt="abc", n=2,
                                  params=SamplingParams(max_tokens=6, seed=1, ignore_eos=True))
        answer, report = await local.coordinator.ask(Ask(request, "best_of_n", 30_000))
        assert len(report.candidates) == 2 and all(c.tokens == 6 for c in report.candidates)
        assert local.pool.model_id.startswith("tiny.bin@")


async def test_confidence_prefers_the_real_models_confident_answer_to_an_unsure_majority(
        config_factory):
    from msgspec.structs import replace

    from zswarm.core.consensus import decide

    async with local_node(config_factory()) as local:
        q = "What is the capital of France?"
        _, sure = await local.coordinator.ask(
            Ask(question(q, max_tokens=8, temperature=0.0), "first_valid", 60_000))
        _, hot = await local.coordinator.ask(
            Ask(question(q, max_tokens=8, temperature=1.8, seed=3), "first_valid", 60_000))
    confident, unsure = sure.candidates[0], hot.candidates[0]
    assert confident.mean_logprob is not None and unsure.mean_logprob is not None
    assert confident.mean_logprob - unsure.mean_logprob > 1.0, (confident, unsure)
    cands = [replace(_candidate(c), node=f"n{i}") for i, c in
             enumerate((unsure, unsure, confident))]
    majority = decide("majority", cands, expected=3, final=True)
    chosen = decide("confidence", cands, expected=3, final=True)
    assert majority is not None and majority.winner == 0  # two unsure votes outnumber one
    assert chosen is not None and chosen.winner == 2, chosen  # but weigh less than it


def _candidate(c):
    from zswarm.core.messages import Candidate

    return Candidate(text=c.text, finish_reason=c.finish_reason, mean_logprob=c.mean_logprob,
                     model_id=c.model_id)


def chat(*turns: str, max_tokens: int = 16) -> GenerateRequest:
    return conversation(*turns, temperature=0, max_tokens=max_tokens)


async def test_concurrent_requests_run_together_on_one_worker(config_factory):
    cfg = config_factory()  # one worker, cache_slots (4) requests at once
    async with local_node(cfg) as local:
        worker = local.pool.workers["w0"]
        results: list[object] = []

        async def one(i: int) -> None:
            answer, report = await local.coordinator.ask(
                Ask(question(f"Count to {i + 10}.", max_tokens=48, ignore_eos=True),
                    "first_valid", 60_000))
            results.append(report.candidates[0])

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(one, i)
            await wait_until_async(lambda: len(worker.requests) == 4, 30.0)
            assert local.scheduler.queue_depth == 0  # none waited for another to end
        assert len(results) == 4 and all(c.tokens == 48 for c in results)
        assert not worker.requests


async def test_a_killed_worker_loses_only_its_own_cache(config_factory):
    cfg = config_factory(node={"workers": 2}, scheduler={"restart_backoff_initial_ms": 50})
    async with local_node(cfg) as local:
        first: dict[str, object] = {}

        async def turn1(key: str, question: str) -> None:
            answer, report = await local.coordinator.ask(Ask(chat(question), "first_valid", 60_000))
            first[key] = (answer, report.candidates[0])

        async with trio.open_nursery() as nursery:  # together: one on each worker
            nursery.start_soon(turn1, "x", "Name a colour.")
            nursery.start_soon(turn1, "y", "Name a city.")
        (ax, cx), (ay, cy) = first["x"], first["y"]
        assert {cx.worker, cy.worker} == {"w0", "w1"}
        victim = local.pool.workers[cx.worker]
        old_pid = victim.pid
        os.kill(old_pid, signal.SIGKILL)
        await wait_until_async(lambda: victim.ready and victim.pid != old_pid, 30.0)
        # y's worker kept its cache: the next turn decodes only what is new
        _, ry = await local.coordinator.ask(
            Ask(chat("Name a city.", ay, "Another one."), "first_valid", 60_000))
        assert ry.candidates[0].worker == cy.worker
        assert ry.candidates[0].cached_tokens >= cy.prompt_tokens
        # x's cache died with its worker: x is answered from scratch, and no worse
        _, rx = await local.coordinator.ask(
            Ask(chat("Name a colour.", ax, "Another one."), "first_valid", 60_000))
        cand = rx.candidates[0]
        assert cand.text and cand.cached_tokens < cx.prompt_tokens
