"""A node's models: loaded on demand, within the budget, idle ones unloaded, pinned ones kept.

The pools are InlinePools (workers in-process, ready at once) or one that cannot load;
the clock is trio's autojump clock, so keep_alive and min_resident_s pass in no time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from zswarm.config import ModelEntry
from zswarm.errors import ModelNotFound, Overloaded
from zswarm.runtime.models import RETRY_FAILED_S, Models, Resident
from zswarm.runtime.scheduler import Scheduler
from zswarm.testing.inline import InlinePool


class _Broken:
    """A pool whose workers cannot load their model."""

    scheduler = Scheduler(max_queue=4)
    workers: dict[str, object] = {}

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        raise ModelNotFound("model file /m/broken.gguf: not a GGUF or GGML file")

    async def run(self, *args, **kwargs) -> None:  # pragma: no cover - never loaded
        raise AssertionError


def resident(name: str, mib: int = 10, *, broken: bool = False, **entry: object) -> Resident:
    return Resident(name, f"{name}.gguf@{name}", ModelEntry(name=name, workers=1, **entry), mib,
                    (lambda: _Broken()) if broken  # type: ignore[return-value]
                    else lambda: InlinePool(Scheduler(max_queue=4)))


async def started(nursery: trio.Nursery, *residents: Resident, budget_mib: int = 0,
                  min_resident_s: float = 0, max_waiting: int = 8) -> Models:
    models = Models(list(residents), budget_mib=budget_mib, min_resident_s=min_resident_s,
                    max_waiting=max_waiting)
    await nursery.start(models.serve)
    return models


async def ask(models: Models, model_id: str, hold_s: float = 0.0) -> None:
    async with models.use(model_id) as model, model.scheduler.slot():
        await trio.sleep(hold_s)


async def test_a_model_is_loaded_by_its_first_request_once(nursery, autojump_clock):
    a, b = resident("a", pinned=True), resident("b")
    models = await started(nursery, a, b)
    assert (a.state, b.state) == ("loaded", "unloaded")
    async with trio.open_nursery() as asks:  # three requests wait for one load
        for _ in range(3):
            asks.start_soon(ask, models, b.model_id, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert b.state in ("loading", "loaded")
    assert b.state == "loaded" and b.loads == 1
    with pytest.raises(ModelNotFound, match="does not serve"):
        await ask(models, "other.gguf@x")


async def test_to_make_room_the_least_recently_used_idle_model_goes(nursery, autojump_clock):
    a, b, c = resident("a", 40), resident("b", 40), resident("c", 40)
    models = await started(nursery, a, b, c, budget_mib=100)
    await ask(models, a.model_id)
    await trio.sleep(1)
    await ask(models, b.model_id)
    await ask(models, c.model_id)  # a was used longest ago
    assert (a.state, b.state, c.state) == ("unloaded", "loaded", "loaded")
    assert models.loaded_mib() <= 100


async def test_a_model_in_use_is_never_unloaded_the_next_one_waits(nursery, autojump_clock):
    a, b = resident("a", 60), resident("b", 60)
    models = await started(nursery, a, b, budget_mib=100)
    nursery.start_soon(ask, models, a.model_id, 5.0)  # a answers for 5 s
    await trio.testing.wait_all_tasks_blocked()
    t0 = trio.current_time()
    await ask(models, b.model_id)
    assert trio.current_time() - t0 >= 5.0 and a.state == "unloaded" and b.loads == 1


async def test_pinned_models_stay_and_what_cannot_fit_is_refused_saying_why(
        nursery, autojump_clock):
    a, b, big = resident("a", 60, pinned=True), resident("b", 60), resident("big", 500)
    models = await started(nursery, a, b, big, budget_mib=100)
    # said from the start (heartbeats carry it: peers ask the holders where it fits)
    assert (b.state, big.state) == ("failed", "failed") and "cannot fit" in big.error
    with pytest.raises(ModelNotFound, match=r"b needs about 60 MiB .* budget of 100 MiB "
                       r"\(60 MiB held by pinned models\)"):
        await ask(models, b.model_id)
    with pytest.raises(ModelNotFound, match="big needs about 500 MiB"):
        await ask(models, big.model_id)
    assert a.state == "loaded"


async def test_an_idle_model_is_unloaded_after_its_keep_alive(nursery, autojump_clock):
    a, b = resident("a", pinned=True), resident("b", keep_alive_s=30)
    models = await started(nursery, a, b)
    await ask(models, b.model_id)
    await trio.sleep(20)
    assert b.state == "loaded"
    await trio.sleep(15)
    assert (a.state, b.state) == ("loaded", "unloaded")  # pinned: never


async def test_a_flood_for_every_model_cannot_make_the_node_reload_them_in_turn(
        nursery, autojump_clock):
    a, b = resident("a", 60), resident("b", 60)
    models = await started(nursery, a, b, budget_mib=100, min_resident_s=10)
    answered: dict[str, int] = {a.name: 0, b.name: 0, "refused": 0}

    async def ask_or_refused(r: Resident) -> None:
        try:
            await ask(models, r.model_id, 0.05)
            answered[r.name] += 1
        except Overloaded:  # too many wait for a load: refused at once, nothing held
            answered["refused"] += 1

    t0 = trio.current_time()
    async with trio.open_nursery() as flood:
        for k in range(400):  # alternating requests, one every 0.1 s
            flood.start_soon(ask_or_refused, (a, b)[k % 2])
            await trio.sleep(0.1)
            assert models.loaded_mib() <= 100
    elapsed = trio.current_time() - t0
    # each load lasts at least min_resident_s: at most one load per 10 s
    assert a.loads + b.loads <= elapsed / 10 + 2
    assert answered[a.name] and answered[b.name], answered


async def test_a_model_that_fails_to_load_says_why_and_is_tried_again_later(
        nursery, autojump_clock):
    a, bad = resident("a", pinned=True), resident("bad", broken=True)
    models = await started(nursery, a, bad)
    with pytest.raises(ModelNotFound, match="bad failed to load: .*not a GGUF"):
        await ask(models, bad.model_id)
    assert bad.state == "failed"
    with pytest.raises(ModelNotFound, match="failed to load"):  # at once: not tried again
        await ask(models, bad.model_id)
    await trio.sleep(RETRY_FAILED_S)
    bad.make_pool = lambda: InlinePool(Scheduler(max_queue=4))  # the file was fixed
    await ask(models, bad.model_id)
    assert bad.state == "loaded"


async def test_requests_waiting_for_a_load_are_bounded(nursery, autojump_clock):
    a, b = resident("a", 60), resident("b", 60)
    models = await started(nursery, a, b, budget_mib=100, max_waiting=3)
    nursery.start_soon(ask, models, a.model_id, 30.0)  # b cannot load for 30 s
    await trio.testing.wait_all_tasks_blocked()
    async with trio.open_nursery() as waiting:
        for _ in range(3):
            waiting.start_soon(ask, models, b.model_id)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(Overloaded, match="3 requests wait for it"):
            await ask(models, b.model_id)
        assert a.state == "loaded"  # and a still answers
        await ask(models, a.model_id)
    assert b.state == "loaded"


async def test_a_load_nobody_waits_for_any_more_is_dropped(nursery, autojump_clock):
    a, b = resident("a", 60), resident("b", 60)
    models = await started(nursery, a, b, budget_mib=100)
    nursery.start_soon(ask, models, a.model_id, 30.0)
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(2):  # the request gives up (its deadline)
        await ask(models, b.model_id)
    await trio.sleep(40)
    assert b.state == "unloaded" and a.state == "loaded"


def test_models_dir_adds_each_gguf_no_entry_names(tmp_path):
    from zswarm.config import parse_config
    from zswarm.runtime.local import entries

    for name in ("b.gguf", "a.gguf", "notes.txt"):
        (tmp_path / name).write_bytes(b"GGUF")
    cfg = parse_config({"node": {"models_dir": str(tmp_path)},
                        "models": [{"name": "mine", "path": str(tmp_path / "b.gguf")}]})
    found = entries(cfg)
    assert [(e.name, e.path) for e in found] == [
        ("mine", str(tmp_path / "b.gguf")), ("a", str(tmp_path / "a.gguf"))]
    assert not found[1].preload and not found[1].pinned  # loaded on demand


async def test_models_to_preload_that_do_not_fit_together_are_said_not_waited_for(
        nursery, autojump_clock, caplog):
    a, b = resident("a", 60, preload=True), resident("b", 60, preload=True)
    models = await started(nursery, a, b, budget_mib=100, min_resident_s=10)
    assert (a.state, b.state) == ("loaded", "failed")  # the node started all the same
    assert "b needs about 60 MiB: it does not fit" in caplog.text
    await trio.sleep(RETRY_FAILED_S)
    await ask(models, b.model_id)  # on demand: a goes once it has been loaded 10 s
    assert (a.state, b.state) == ("unloaded", "loaded")


async def test_a_load_waiting_for_room_goes_on_once_the_other_may_go(nursery, autojump_clock):
    a, b = resident("a", 60), resident("b", 60)
    models = await started(nursery, a, b, budget_mib=100, min_resident_s=10)
    await ask(models, a.model_id)
    t0 = trio.current_time()
    await ask(models, b.model_id)  # nothing is released meanwhile: a's residence ends
    assert 10 <= trio.current_time() - t0 <= 10 + 2 and b.state == "loaded"


async def test_a_model_not_here_yet_is_fetched_by_its_first_load_beside_other_loads(
        nursery, autojump_clock):
    a, later, c = resident("a", pinned=True), resident("later", 0), resident("c")
    fetched = trio.Event()
    pulls = []

    async def fetch(r: Resident) -> None:  # a pull from a peer: slow, and then here
        pulls.append(r.name)
        await fetched.wait()
        r.estimate_mib = 30

    later.fetch = fetch
    models = await started(nursery, a, later, c, budget_mib=100)
    assert later.state == "unloaded" and later.model_id not in models.files()
    async with trio.open_nursery() as asks:
        asks.start_soon(ask, models, later.model_id)
        asks.start_soon(ask, models, later.model_id)
        await trio.testing.wait_all_tasks_blocked()
        assert later.state == "loading" and pulls == ["later"]  # one pull for both
        await ask(models, c.model_id)  # another model loads meanwhile
        fetched.set()
    assert later.state == "loaded" and later.fetch is None and models.loaded_mib() >= 30
    assert pulls == ["later"]


async def test_a_model_that_cannot_be_fetched_fails_saying_why(nursery, autojump_clock):
    a, later = resident("a", pinned=True), resident("later")

    async def fetch(r: Resident) -> None:
        raise ModelNotFound("model.path = 'swarm:x': could not pull it: nobody holds it")

    later.fetch = fetch
    models = await started(nursery, a, later)
    with pytest.raises(ModelNotFound, match="later failed to load: .*nobody holds it"):
        await ask(models, later.model_id)
    assert later.state == "failed" and later.fetch is fetch  # tried again later
