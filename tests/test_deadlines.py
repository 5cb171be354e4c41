"""time_limit (dagengine/_deadlines.py) behaves as asyncio.timeout: a block past its deadline
raises TimeoutError, one that ended in time is never cancelled afterwards, a cancellation from
outside stays a cancellation, and limits nest. Blocks wait on events that never come, so a
limit is the only way out of them; no test measures time."""

from __future__ import annotations

import asyncio

import pytest

from dagengine._deadlines import _clocks, time_limit


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        async with time_limit(0.01):
            await asyncio.Event().wait()


async def test_blocks_that_end_in_time_are_not_cancelled_later() -> None:
    """Many tasks under one duration: half end in time and then wait past their deadline
    outside the block; only the other half, still inside, time out."""
    release = asyncio.Event()
    after: list[str] = []

    async def quick(i: int) -> str:
        async with time_limit(0.05):
            await asyncio.sleep(0)
        await release.wait()  # well past the deadline: nothing may cancel it now
        after.append("quick")
        return "ok"

    async def stuck(i: int) -> str:
        try:
            async with time_limit(0.05):
                await asyncio.Event().wait()
        except TimeoutError:
            return "timed out"
        return "ended"

    stuck_tasks = [asyncio.ensure_future(stuck(i)) for i in range(100)]
    quick_tasks = [asyncio.ensure_future(quick(i)) for i in range(100)]
    assert await asyncio.gather(*stuck_tasks) == ["timed out"] * 100
    release.set()
    assert await asyncio.gather(*quick_tasks) == ["ok"] * 100 and len(after) == 100


async def test_durations_expire_each_at_its_own_deadline() -> None:
    order: list[float] = []

    async def wait(seconds: float) -> None:
        try:
            async with time_limit(seconds):
                await asyncio.Event().wait()
        except TimeoutError:
            order.append(seconds)

    # Begun longest first: the shorter ones must still expire first.
    await asyncio.gather(wait(0.09), wait(0.06), wait(0.03), wait(0.06))
    assert order == [0.03, 0.06, 0.06, 0.09]


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def inside() -> None:
        async with time_limit(30):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(inside())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_limits_nest() -> None:
    async with time_limit(30):
        with pytest.raises(TimeoutError):
            async with time_limit(0.01):
                await asyncio.Event().wait()
        await asyncio.sleep(0)  # the outer limit goes on, uncancelled
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_the_inner_limit_of_an_expired_outer_one_reraises_cancellation() -> None:
    with pytest.raises(TimeoutError):
        async with time_limit(0.01), time_limit(30):
            await asyncio.Event().wait()


def test_each_event_loop_has_its_own_clock() -> None:
    async def once() -> bool:
        try:
            async with time_limit(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            return True
        return False

    assert asyncio.run(once()) and asyncio.run(once())  # a clock made for a closed loop


async def test_done_limits_do_not_pile_up() -> None:
    for _ in range(1000):
        async with time_limit(60):
            await asyncio.sleep(0)
    clock = _clocks[asyncio.get_running_loop()]
    assert sum(len(q) for q in clock._queues.values()) == 0
