"""Client-side rate limits: pacing, pauses and adaptation on 429, learning, cancellation.

Time-dependent tests run on an event loop with virtual time (dagengine.testing): when
nothing is ready, the clock jumps to the next timer. The limiter uses the same clock, so
admissions happen at exact, reproducible times and a 20-second schedule runs in
milliseconds.
"""

from __future__ import annotations

import asyncio
import random
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

import pytest

from dagengine.errors import ValidationError
from dagengine.ratelimit import LimitGroup, Permit, RateLimiter
from dagengine.testing import in_virtual_time


def now() -> float:
    return asyncio.get_running_loop().time()


def limiter(config: Mapping[str, Mapping[str, float]] | None = None) -> RateLimiter:
    return RateLimiter(config, clock=now)


def most_in_any_window(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    return max(bisect_left(times, start + width) - i for i, start in enumerate(times))


async def admission_times(group: LimitGroup, calls: int, tokens: int = 0) -> list[float]:
    """Start `calls` acquirers at once; each holds its permit a little, then succeeds."""
    times: list[float] = []
    latency = random.Random(calls)

    async def call() -> None:
        permit = await group.acquire(tokens)
        times.append(now())
        await asyncio.sleep(latency.uniform(0.0, 0.5))
        permit.success(tokens)

    async with asyncio.TaskGroup() as tasks:
        for _ in range(calls):
            tasks.create_task(call())
    return times


# -- pacing ------------------------------------------------------------------------------


@in_virtual_time
async def test_configured_request_rate_holds_in_every_second_under_200_acquirers() -> None:
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")
    await asyncio.sleep(5.0)  # idle: the bucket fills up to its burst

    times = await admission_times(group, 200)

    assert most_in_any_window(times) <= 10 + 10  # 10 per second, plus a one-second burst
    assert (len(times) - 10) / (max(times) - min(times)) <= 10


@in_virtual_time
async def test_a_run_starts_with_half_a_burst() -> None:
    # The first requests reach the provider late and bunched (connections are opening);
    # its bucket cannot bank that time, so a full first burst would overflow it.
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")

    times = await admission_times(group, 20)

    assert sum(1 for at in times if at == 0.0) == 4  # 9.5 per second: half is 4.75


@in_virtual_time
async def test_configured_rate_is_used_not_just_respected() -> None:
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")

    times = await admission_times(group, 100)

    assert max(times) < 100 / (10 * 0.9)


@in_virtual_time
async def test_token_limit_holds_in_every_second() -> None:
    group = limiter({"sim": {"tokens_per_minute": 6000}}).group("sim", "m")

    times = await admission_times(group, 100, tokens=50)

    assert most_in_any_window(times) * 50 <= 100 + 100
    assert max(times) >= (100 * 50 - 100) / 100


@in_virtual_time
async def test_actual_usage_replaces_the_token_estimate() -> None:
    group = limiter({"sim": {"tokens_per_minute": 6000}}).group("sim", "m")
    overestimated: list[float] = []
    underestimated: list[float] = []

    async def call(estimate: int, used: int, times: list[float]) -> None:
        permit = await group.acquire(estimate)
        times.append(now())
        permit.success(used)

    for _ in range(100):  # sequential, so each correction lands before the next call
        await call(estimate=50, used=10, times=overestimated)
    start = now()
    for _ in range(100):
        await call(estimate=10, used=50, times=underestimated)

    assert max(overestimated) < 100 * 10 / (100 * 0.9)  # paced by the 10 used, not 50
    assert max(underestimated) - start > (100 * 50 - 2 * 100) / 100  # charged the 50 used


@in_virtual_time
async def test_waiters_are_admitted_first_in_first_out() -> None:
    group = limiter({"sim": {"tokens_per_minute": 6000}}).group("sim", "m")
    holder = await group.acquire(95)  # empties the bucket
    order: list[str] = []

    async def call(name: str, tokens: int) -> None:
        (await group.acquire(tokens)).success()
        order.append(name)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(call("large", 95))
        await asyncio.sleep(0.5)  # room for the small one now, not yet for the large one
        tasks.create_task(call("small", 1))
    holder.success()

    assert order == ["large", "small"]


@in_virtual_time
async def test_unlimited_group_admits_at_once() -> None:
    group = limiter().group("sim", "m")

    permits = [await group.acquire(1000) for _ in range(1000)]

    assert now() == 0.0
    assert group.in_flight == 1000
    for permit in permits:
        permit.success(1000)
    assert group.in_flight == 0


# -- 429s --------------------------------------------------------------------------------


@in_virtual_time
async def test_429_pauses_the_whole_group_until_retry_after() -> None:
    rate_limiter = limiter({"sim": {"requests_per_minute": 6000}})
    group = rate_limiter.group("sim", "m")
    (await group.acquire()).rate_limited(retry_after=2.0)

    others = asyncio.create_task(admission_times(group, 5))
    await asyncio.sleep(1.0)
    assert rate_limiter.waiting == 5
    times = await others

    assert min(times) == pytest.approx(2.0)
    assert rate_limiter.rate_limited == 1


@in_virtual_time
async def test_a_refused_request_gives_its_tokens_back() -> None:
    group = limiter({"sim": {"tokens_per_minute": 6000}}).group("sim", "m")
    await asyncio.sleep(1.0)  # a full bucket: 95 tokens

    (await group.acquire(90)).rate_limited(retry_after=0.0)
    await group.acquire(40)

    assert now() == 1.0


@in_virtual_time
async def test_429_in_one_group_leaves_other_groups_running() -> None:
    rate_limiter = limiter()
    (await rate_limiter.group("sim", "a").acquire()).rate_limited(retry_after=5.0)

    (await rate_limiter.group("sim", "b").acquire()).success()

    assert now() == 0.0


@in_virtual_time
async def test_429_without_retry_after_pauses_for_a_doubling_backoff() -> None:
    group = limiter().group("sim", "m")

    (await group.acquire()).rate_limited()
    first_pause_ends = group.paused_until
    second = await group.acquire()  # admitted after the first 429: its 429 counts again
    second.rate_limited()

    assert first_pause_ends == pytest.approx(1.0)
    assert now() >= 1.0
    assert group.paused_until == pytest.approx(now() + 2.0)


@in_virtual_time
async def test_429_halves_the_rate_and_successes_grow_it_back_to_the_limit() -> None:
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")
    (await group.acquire()).rate_limited(retry_after=1.0)
    halved = group.allowed_requests_per_minute
    allowed: list[tuple[float, float | None]] = []

    while now() < 8.0:
        (await group.acquire()).success()
        allowed.append((now(), group.allowed_requests_per_minute))

    assert halved == pytest.approx(600 * 0.95 / 2)
    assert halved is not None
    midway = [rpm for at, rpm in allowed if 2.5 <= at <= 3.5]
    assert midway and all(rpm is not None and halved < rpm < 570 for rpm in midway)
    assert max(rpm or 0 for _, rpm in allowed) == pytest.approx(570)
    assert allowed[-1][1] == pytest.approx(570)


@in_virtual_time
async def test_a_burst_of_429s_shrinks_the_rate_once() -> None:
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")
    burst = [await group.acquire() for _ in range(9)]

    for permit in burst:
        permit.rate_limited(retry_after=0.5)

    assert group.allowed_requests_per_minute == pytest.approx(570 / 2)
    assert group.rate_limited == 9
    (await group.acquire()).rate_limited(retry_after=0.5)  # a new event
    assert group.allowed_requests_per_minute == pytest.approx(570 / 4)


@in_virtual_time
async def test_429s_for_calls_sent_before_the_limit_was_learned_do_not_shrink_it() -> None:
    group = limiter().group("sim", "m")
    burst = [await group.acquire() for _ in range(20)]
    headers = {"requests_per_minute": 600.0, "requests_remaining": 0.0, "reset_seconds": 1.0}

    for permit in burst:
        permit.rate_limited(retry_after=1.0, rate_limit=headers)

    assert group.allowed_requests_per_minute == pytest.approx(570)


@in_virtual_time
async def test_429_with_nothing_known_infers_a_limit_from_the_observed_rate() -> None:
    group = limiter().group("sim", "m")
    burst = [await group.acquire() for _ in range(20)]  # 20 calls in the last second

    burst[0].rate_limited(retry_after=1.0)
    for permit in burst[1:]:
        permit.success()
    times = await admission_times(group, 30)

    assert group.allowed_requests_per_minute is not None
    assert group.allowed_requests_per_minute >= 20 * 60 / 2
    assert most_in_any_window(times) <= 2 * 20


@in_virtual_time
async def test_a_429_on_a_trickle_of_calls_pauses_but_infers_no_limit() -> None:
    group = limiter().group("sim", "m")
    permit = await group.acquire()
    permit.rate_limited(retry_after=0.5)
    times = await admission_times(group, 20)

    assert group.allowed_requests_per_minute is None
    assert times[0] >= 0.5
    assert times[-1] == times[0]  # after the pause, nothing holds the calls back


# -- learning from headers ---------------------------------------------------------------


@in_virtual_time
async def test_limits_are_learned_from_headers_when_none_is_configured() -> None:
    group = limiter().group("sim", "m")
    headers = {"requests_per_minute": 600.0, "tokens_per_minute": 60_000.0}

    (await group.acquire()).success(10, headers)
    times = await admission_times(group, 40)

    assert group.learned_requests_per_minute == 600
    assert group.allowed_tokens_per_minute == pytest.approx(60_000 * 0.95)
    assert most_in_any_window(times) <= 10 + 10


@in_virtual_time
async def test_a_configured_limit_below_the_learned_one_wins() -> None:
    group = limiter({"sim": {"requests_per_minute": 60}}).group("sim", "m")

    (await group.acquire()).success(rate_limit={"requests_per_minute": 600.0})

    assert group.allowed_requests_per_minute == pytest.approx(60 * 0.95)


@in_virtual_time
async def test_no_requests_remaining_pauses_an_unlimited_group_until_reset() -> None:
    group = limiter().group("sim", "m")

    (await group.acquire()).success(rate_limit={"requests_remaining": 0.0, "reset_seconds": 3.0})
    await group.acquire()

    assert now() == pytest.approx(3.0)


# -- permits and cancellation ------------------------------------------------------------


@in_virtual_time
async def test_cancelled_waiter_takes_nothing() -> None:
    rate_limiter = limiter({"sim": {"requests_per_minute": 60}})
    group = rate_limiter.group("sim", "m")
    (await group.acquire()).success()  # the bucket is now empty

    waiter = asyncio.create_task(group.acquire())
    await asyncio.sleep(0.5)
    waiter.cancel()
    await asyncio.sleep(0)
    assert rate_limiter.waiting == 0
    await group.acquire()

    assert now() == pytest.approx(1 / 0.95)  # not delayed by the cancelled waiter
    assert group.in_flight == 1


@in_virtual_time
async def test_waiter_cancelled_as_it_is_admitted_gives_everything_back() -> None:
    group = limiter({"sim": {"tokens_per_minute": 6000}}).group("sim", "m")
    await asyncio.sleep(1.0)  # a full bucket: 95 tokens
    holder = await group.acquire(95)
    waiter = asyncio.create_task(group.acquire(95))
    await asyncio.sleep(0)

    holder.success(used_tokens=0)  # refunds the tokens: the waiter is admitted...
    waiter.cancel()  # ...and cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await group.acquire(95)

    assert now() == 1.0
    assert group.in_flight == 1


async def test_permit_context_manager_releases_when_the_body_raises() -> None:
    group = RateLimiter().group("sim", "m")

    with pytest.raises(ValueError):
        async with await group.acquire() as permit:
            raise ValueError("provider blew up")

    assert permit.released
    assert group.in_flight == 0


async def test_permit_can_be_reported_only_once() -> None:
    group = RateLimiter().group("sim", "m")
    permit: Permit
    async with await group.acquire() as permit:
        permit.success()

    with pytest.raises(RuntimeError, match="already reported"):
        permit.failed()
    assert group.in_flight == 0


# -- configuration -----------------------------------------------------------------------


def test_a_call_uses_its_model_group_then_its_provider_group_then_its_own() -> None:
    rate_limiter = RateLimiter(
        {"openai": {"requests_per_minute": 500}, "openai/gpt-4o": {"requests_per_second": 2}}
    )

    assert rate_limiter.group("openai", "gpt-4o").name == "openai/gpt-4o"
    assert rate_limiter.group("openai", "gpt-4o").requests_per_minute == 120
    assert rate_limiter.group("openai", "gpt-4o-mini").name == "openai"
    assert rate_limiter.group("gemini", "flash").name == "gemini/flash"
    assert rate_limiter.group("gemini", "flash") is rate_limiter.group("gemini", "flash")
    assert set(rate_limiter.snapshot()) == {"openai", "openai/gpt-4o", "gemini/flash"}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"anthropic": {"requests_per_minute": 0}}, "['anthropic'].requests_per_minute"),
        ({"anthropic": {"tokens_per_minute": -5}}, "['anthropic'].tokens_per_minute"),
        ({"anthropic": {"requests_per_minute": "50"}}, "['anthropic'].requests_per_minute"),
        ({"anthropic": {"requests_per_minute": True}}, "['anthropic'].requests_per_minute"),
        ({"anthropic": {"request_per_minute": 50}}, "['anthropic'].request_per_minute"),
        (
            {"anthropic": {"requests_per_minute": 50, "requests_per_second": 1}},
            "['anthropic'].requests_per_second",
        ),
        ({"anthropic": 50}, "['anthropic']"),
    ],
)
def test_config_errors_name_the_field(config: Any, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        RateLimiter(config)

    assert error.value.field == "execution.rate_limits" + field
    assert str(error.value).startswith("execution.rate_limits" + field + " must be")
