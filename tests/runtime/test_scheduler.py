from __future__ import annotations

import pytest
import trio
import trio.testing

from zswarm.errors import Overloaded
from zswarm.runtime.scheduler import Scheduler


async def test_first_come_first_served(autojump_clock):
    sched = Scheduler(max_queue=10)
    sched.worker_ready("w0")
    order: list[str] = []

    async def user(tag: str, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async with sched.slot():
            order.append(tag)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        for tag in ["first", "b1", "b2", "a1", "b3"]:
            await nursery.start(user, tag)
        await trio.testing.wait_all_tasks_blocked()
        assert sched.queue_depth == 4
    assert order == ["first", "b1", "b2", "a1", "b3"]


async def test_full_queue_fails_fast(autojump_clock):
    sched = Scheduler(max_queue=1)
    sched.worker_ready("w0")
    holder = await sched.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sched.acquire)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(Overloaded):
            await sched.acquire()
        assert sched.rejected == 1
        sched.release(holder)
    assert sched.queue_depth == 0


async def test_cancelled_waiter_leaves_the_queue(autojump_clock):
    sched = Scheduler(max_queue=5)
    sched.worker_ready("w0")
    holder = await sched.acquire()
    with trio.move_on_after(2):
        await sched.acquire()
    assert sched.queue_depth == 0
    sched.release(holder)
    assert sched.idle_workers == 1


async def test_lost_worker_is_not_handed_out_and_comes_back(autojump_clock):
    sched = Scheduler(max_queue=5)
    sched.worker_ready("w0")
    name = await sched.acquire()
    sched.worker_lost(name)
    sched.worker_ready(name)  # restarted while the old request still holds it
    sched.release(name)
    assert sched.idle_workers == 1
    await sched.acquire()
    assert sched.idle_workers == 0


async def test_no_worker_waits_until_deadline(autojump_clock):
    sched = Scheduler(max_queue=5)
    with trio.move_on_after(3) as scope:
        await sched.acquire()
    assert scope.cancelled_caught and sched.queue_depth == 0
