"""Client-side rate limits: pacing, pauses and adaptation on 429, learning, cancellation.

Time-dependent tests run on an event loop with virtual time (dagengine.testing): when
nothing is ready, the clock jumps to the next timer. The limiter uses the same clock, so
admissions happen at exact, reproducible times and a 20-second schedule runs in
milliseconds.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import DagEngine, ProviderRequest
from dagengine.errors import ValidationError
from dagengine.ratelimit import LimitGroup, Permit, RateLimiter
from dagengine.ratelimit._group import HEADROOM, RAMP_BURST, START_HOLD_SECONDS
from dagengine.simulator import Simulator
from dagengine.testing import VirtualTimeLoop, in_virtual_time

KEY = "sk-ant-test-ratelimit"


@pytest.fixture(autouse=True)
def no_default_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # Virtual time cannot wait for the store's writer thread; these tests count calls only.
    monkeypatch.setenv("DAGENGINE_STORE", "off")


def in_virtual_time_with(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """in_virtual_time for a parametrized test."""

    def run(**kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runner.run(test(**kwargs))

    run.__name__ = test.__name__
    run.__signature__ = inspect.signature(test)  # type: ignore[attr-defined]
    return run


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


@dataclass
class ModelProvider:
    """A provider in virtual time: a token-bucket limit (`per_second`, bursts of `burst`)
    answered by a 429 with retry-after in whole seconds and no rate-limit headers, and 429s
    at random at share `noise` (retry-after 1 s), at most `max_faults` times per call."""

    per_second: float | None = None
    burst: float = 1.0
    noise: float = 0.0
    max_faults: int | None = None
    latency: float = 0.1
    seed: int = 1
    requests: int = 0
    refused: int = 0
    level: float = 0.0
    stamp: float = 0.0
    faults: Counter[int] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.level = self.burst

    def refusal(self, call: int) -> float | None:
        """None if the request arriving now is accepted, else the retry-after it gets."""
        self.requests += 1
        at = now()
        if self.per_second is not None:
            self.level = min(self.burst, self.level + (at - self.stamp) * self.per_second)
            self.stamp = at
            if self.level < 1:
                self.refused += 1
                return float(max(1, math.ceil((1 - self.level) / self.per_second)))
            self.level -= 1
        capped = self.max_faults is not None and self.faults[call] >= self.max_faults
        if self.noise and self.rng.random() < self.noise and not capped:
            self.faults[call] += 1
            self.refused += 1
            return 1.0
        return None


@dataclass
class Run:
    wall: float = 0.0
    successes: list[float] = field(default_factory=list)  # times
    refusals: list[float] = field(default_factory=list)  # admission times of refused calls
    admissions: list[float] = field(default_factory=list)
    paused: list[float | None] = field(default_factory=list)  # paused_until after each 429

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.successes) / (end - start)

    def share_refused(self, start: float) -> float:
        admitted = sum(t >= start for t in self.admissions)
        return sum(t >= start for t in self.refusals) / admitted


async def drive(group: LimitGroup, provider: ModelProvider, calls: int, concurrency: int,
                retries: int = 8) -> Run:
    """What the engine does with a call: a slot, a permit, the request (1 ms each way);
    after a 429 the call gives its slot back and waits its own retry-after (+ <= 10 %).
    Times in the Run are from its start."""
    run = Run()
    start = now()
    slots = asyncio.Semaphore(concurrency)
    jitter = random.Random(5)

    async def call(index: int) -> None:
        await slots.acquire()
        try:
            for _ in range(retries + 1):
                permit = await group.acquire()
                admitted = now() - start
                run.admissions.append(admitted)
                await asyncio.sleep(0.001)
                retry_after = provider.refusal(index)
                if retry_after is None:
                    await asyncio.sleep(provider.latency + 0.001)
                    permit.success()
                    run.successes.append(now() - start)
                    return
                await asyncio.sleep(0.001)
                permit.rate_limited(retry_after)
                run.refusals.append(admitted)
                run.paused.append(group.paused_until)
                slots.release()
                await asyncio.sleep(retry_after * (1 + 0.1 * jitter.random()))
                await slots.acquire()
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tasks:
        for index in range(calls):
            tasks.create_task(call(index))
    run.wall = now() - start
    return run


# -- pacing ------------------------------------------------------------------------------


@in_virtual_time
async def test_configured_request_rate_holds_in_every_second_under_200_acquirers() -> None:
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")
    await asyncio.sleep(5.0)  # idle: the bucket fills up to its burst

    times = await admission_times(group, 200)

    assert most_in_any_window(times) <= 10 + 10  # 10 per second, plus a one-second burst
    assert (len(times) - 10) / (max(times) - min(times)) <= 10


@in_virtual_time
async def test_a_configured_limit_starts_with_its_burst_and_refills_once_answers_come_in() -> None:
    # The first requests may reach the provider late and bunched (connections opening, a
    # busy loop): its bucket refills only from then, so the client's may not refill before.
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")
    burst = [await group.acquire() for _ in range(9)]  # 9.8 a second: 9 whole ones at once
    assert now() == 0.0
    next_one = asyncio.create_task(group.acquire())

    await asyncio.sleep(0.3)
    assert not next_one.done()  # nothing is back yet, so nothing has refilled
    burst[0].success()
    permit = await next_one

    assert now() == pytest.approx(0.3 + (1 - 0.8) / (10 * HEADROOM))
    permit.success()


@in_virtual_time
async def test_a_configured_limit_refills_after_a_while_even_if_no_answer_is_back() -> None:
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")
    for _ in range(9):
        await group.acquire()

    await group.acquire()

    assert now() == pytest.approx(START_HOLD_SECONDS + 0.2 / (10 * HEADROOM))


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
async def test_a_group_with_nothing_known_ramps_up_to_admitting_at_once() -> None:
    # So that a limit's first 429s come back while a few calls, not all, are on their way.
    group = limiter().group("sim", "m")

    first = [await group.acquire(1000) for _ in range(1000)]  # no answer comes back
    ramped_at = now()
    await asyncio.sleep(0.5)
    more = [await group.acquire(1000) for _ in range(1000)]

    assert 0.3 < ramped_at < 1.0
    assert now() == ramped_at + 0.5  # past the ramp, a group that knows no limit admits at once
    assert group.in_flight == 2000 and group.allowed_requests_per_minute is None
    for permit in first + more:
        permit.success(1000)
    assert group.in_flight == 0


@in_virtual_time
async def test_the_ramp_sends_only_its_first_burst_until_an_answer_comes_back() -> None:
    # However late the first answer (connections opening, a busy loop or provider), no more
    # than RAMP_BURST calls go out blind before it.
    group = limiter().group("sim", "m")
    permits: list[Permit] = []

    async def call() -> None:
        permits.append(await group.acquire())

    tasks = [asyncio.create_task(call()) for _ in range(100)]
    await asyncio.sleep(0.45)
    blind = group.in_flight
    permits[0].success()
    await asyncio.sleep(0.05)
    after_one = group.in_flight

    assert blind == RAMP_BURST
    assert after_one > RAMP_BURST - 1  # the answer lets the ramp go on
    await asyncio.sleep(2.0)
    assert len(permits) == 100
    await asyncio.gather(*tasks)
    for permit in permits[1:]:
        permit.success()


@in_virtual_time
async def test_the_ramp_ends_once_answers_come_back_quickly() -> None:
    group = limiter().group("sim", "m")
    for _ in range(32):
        (await group.acquire()).success()
    answered_at = now()

    [await group.acquire() for _ in range(1000)]

    assert answered_at < 0.2 and now() == answered_at


@in_virtual_time
async def test_the_ramp_admits_its_first_calls_at_once() -> None:
    group = limiter().group("sim", "m")

    times = await admission_times(group, 40)

    assert sorted(times)[15] == 0.0 and sorted(times)[16] > 0.0


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

    limit = 600 * HEADROOM
    assert halved == pytest.approx(limit / 2)
    assert halved is not None
    midway = [rpm for at, rpm in allowed if 2.5 <= at <= 3.5]
    assert midway and all(rpm is not None and halved < rpm < limit for rpm in midway)
    assert max(rpm or 0 for _, rpm in allowed) == pytest.approx(limit)
    assert allowed[-1][1] == pytest.approx(limit)


@in_virtual_time
async def test_a_burst_of_429s_shrinks_the_rate_once() -> None:
    group = limiter({"sim": {"requests_per_minute": 600}}).group("sim", "m")
    burst = [await group.acquire() for _ in range(9)]

    for permit in burst:
        permit.rate_limited(retry_after=0.5)

    assert group.allowed_requests_per_minute == pytest.approx(600 * HEADROOM / 2)
    assert group.rate_limited == 9
    (await group.acquire()).rate_limited(retry_after=0.5)  # a new event
    assert group.allowed_requests_per_minute == pytest.approx(600 * HEADROOM / 4)


@in_virtual_time
async def test_429s_for_calls_sent_before_the_limit_was_learned_do_not_shrink_it() -> None:
    group = limiter().group("sim", "m")
    burst = [await group.acquire() for _ in range(20)]
    headers = {"requests_per_minute": 600.0, "requests_remaining": 0.0, "reset_seconds": 1.0}

    for permit in burst:
        permit.rate_limited(retry_after=1.0, rate_limit=headers)

    assert group.allowed_requests_per_minute == pytest.approx(600 * HEADROOM)


@in_virtual_time
async def test_429s_in_a_run_with_nothing_known_infer_a_limit_from_what_got_through() -> None:
    group = limiter().group("sim", "m")
    burst = [await group.acquire() for _ in range(30)]  # 30 calls in the first instants

    for permit in burst[:20]:
        permit.success()
    for permit in burst[20:]:  # the provider let 20 through, then refused all the rest
        permit.rate_limited(retry_after=1.0)
    times = await admission_times(group, 30)

    inferred = group.inferred_requests_per_minute
    assert inferred is not None and 0.8 * 20 * 60 <= inferred <= 20 * 60
    assert group.paused_until is None  # calls got through: the rate answers, not a pause
    assert most_in_any_window(times) <= 20 + 1


@in_virtual_time
async def test_a_single_429_among_calls_that_get_through_is_noise() -> None:
    group = limiter().group("sim", "m")
    burst = [await group.acquire() for _ in range(20)]

    burst[0].rate_limited(retry_after=1.0)
    for permit in burst[1:]:
        permit.success()
    reported_at = now()  # calls past the ramp's first burst waited for an answer
    times = await admission_times(group, 30)

    assert group.inferred_requests_per_minute is None
    assert group.paused_until is None
    # Nobody else waited for that call's retry-after (1 s).
    assert max(times) < reported_at + 0.5


@in_virtual_time
async def test_a_429_on_a_trickle_of_calls_pauses_but_infers_no_limit() -> None:
    group = limiter().group("sim", "m")
    permit = await group.acquire()
    permit.rate_limited(retry_after=0.5)
    times = await admission_times(group, 20)

    assert group.allowed_requests_per_minute is None
    assert times[0] >= 0.5
    assert times[-1] - times[0] < 0.01  # after the pause, nothing but the starting ramp


# -- 429s: noise or a limit --------------------------------------------------------------


@in_virtual_time
async def test_random_429s_at_a_low_share_neither_pause_nor_slow_the_group() -> None:
    clean = await drive(limiter().group("sim", "m"), ModelProvider(latency=0.3), 3000, 200)
    group = limiter().group("sim", "m")

    noisy = await drive(group, ModelProvider(latency=0.3, noise=0.1), 3000, 200)

    assert len(noisy.refusals) > 250
    assert noisy.paused == [None] * len(noisy.refusals)  # only the call that got one waits
    assert group.allowed_requests_per_minute is None
    # The calls that got a 429 come back a second later; nothing else slows down.
    assert noisy.wall <= clean.wall + 2.5


@in_virtual_time
async def test_random_429s_do_not_shrink_a_configured_limit() -> None:
    group = limiter({"sim": {"requests_per_minute": 6000}}).group("sim", "m")
    allowed: list[float | None] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.25)
            allowed.append(group.allowed_requests_per_minute)

    watcher = asyncio.create_task(watch())
    run = await drive(group, ModelProvider(latency=0.3, noise=0.1), 1000, 100)
    watcher.cancel()

    assert len(run.refusals) > 80
    assert min(rpm or 0 for rpm in allowed) >= 6000 * HEADROOM * 0.9
    assert run.rate(1.0, run.wall - 1.5) >= 100 * HEADROOM * 0.85


@pytest.mark.parametrize("burst", [50.0, 10.0])
@in_virtual_time_with
async def test_a_limit_sent_without_headers_is_learned_near_its_rate(burst: float) -> None:
    # 50 requests/s, bursts of a second's worth or smaller; only 429 + retry-after say so.
    group = limiter().group("sim", "m")

    run = await drive(group, ModelProvider(per_second=50, burst=burst), 600, 100)

    inferred = group.inferred_requests_per_minute
    assert inferred is not None and 0.9 * 3000 <= inferred <= 1.1 * 3000
    half = run.wall / 2
    assert run.rate(half, run.wall - 0.2) >= 50 * 0.85
    assert run.share_refused(half) <= 0.05


@in_virtual_time
async def test_a_limit_found_to_be_noise_is_dropped() -> None:
    # Half of all requests refused at random, each call at most 3 times: as much a limit as
    # anything at first, but slowing down does not make the 429s rarer.
    group = limiter().group("sim", "m")

    run = await drive(group, ModelProvider(latency=0.3, noise=0.5, max_faults=3), 200, 100)

    assert len(run.successes) == 200
    assert group.inferred_requests_per_minute is None and group.noise_share > 0.3


@in_virtual_time
async def test_half_the_calls_refused_at_random_still_answers_every_section() -> None:
    # 30 sections; each call refused with retry-after 1 s at random, at most 3 times; 5
    # retries and 15 s per dimension are plenty for that, unless 429s stall the whole group.
    rng = random.Random(3)
    failures: Counter[Any] = Counter()

    def fail(request: ProviderRequest, attempt: int) -> BaseException | None:
        key = request.metadata["section_index"]
        if failures[key] < 3 and rng.random() < 0.5:
            failures[key] += 1
            return http_error(429, retry_after=1.0)
        return None

    provider = FakeProvider(latency=lambda r: 0.3, fail=fail)
    engine = DagEngine(SimplePlugin(["rate"]), providers=[provider], execution={
        "concurrency": 30, "max_retries": 5, "dimension_timeouts": {"rate": 15.0}})

    result = await engine.process([f"review {i}" for i in range(30)])

    assert sum(failures.values()) >= 20
    assert [s.results["rate"].error for s in result.sections] == [None] * 30


# -- learning from headers ---------------------------------------------------------------


@in_virtual_time
async def test_limits_are_learned_from_headers_when_none_is_configured() -> None:
    group = limiter().group("sim", "m")
    headers = {"requests_per_minute": 600.0, "tokens_per_minute": 60_000.0}

    (await group.acquire()).success(10, headers)
    times = await admission_times(group, 40)

    assert group.learned_requests_per_minute == 600
    assert group.allowed_tokens_per_minute == pytest.approx(60_000 * HEADROOM)
    assert most_in_any_window(times) <= 10 + 10


@in_virtual_time
async def test_a_configured_limit_below_the_learned_one_wins() -> None:
    group = limiter({"sim": {"requests_per_minute": 60}}).group("sim", "m")

    (await group.acquire()).success(rate_limit={"requests_per_minute": 600.0})

    assert group.allowed_requests_per_minute == pytest.approx(60 * HEADROOM)


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

    assert now() == pytest.approx(1 / HEADROOM)  # not delayed by the cancelled waiter
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


# -- the engine against the simulator as a real server ------------------------------------


def simulated(sim: Simulator, **execution: Any) -> DagEngine:
    plugin = SimplePlugin(["rate"], provider="anthropic",
                          options={"model": "claude-3-5-haiku-20241022", "max_tokens": 50})
    return DagEngine(plugin, providers={"anthropic": {"api_key": KEY, "base_url": sim.base_url}},
                     execution=execution)


async def test_a_limit_is_learned_from_429s_alone_when_the_provider_sends_no_headers() -> None:
    # 10 requests/s in bursts of 10; a 429 says only "retry-after: 1", as Gemini's do.
    async with Simulator(requests_per_minute=600, rate_limit_headers=False, latency=0.05,
                         seed=2) as sim:
        engine = simulated(sim, concurrency=30, max_retries=8)
        result = await engine.process([f"review {i}: fine" for i in range(40)])
        stats = await sim.stats()
    [group] = engine.get_rate_limits().values()
    assert all(s.results["rate"].ok for s in result.sections)
    assert group["learned_requests_per_minute"] is None  # nothing came in headers
    inferred = group.get("inferred_requests_per_minute")
    assert inferred is not None and 0.8 * 600 <= inferred <= 1.25 * 600
    # The first calls go out before any answer can say there is a limit; then few 429s.
    assert stats["rate_limited"] <= 25


async def test_half_the_requests_refused_at_random_by_the_simulator_leave_none_unanswered(
) -> None:
    # The scenario above at half the time scale: retry-after 0.5 s, 7.5 s per dimension.
    async with Simulator(error_429_rate=0.5, error_429_retry_after=0.5, max_faults_per_prompt=3,
                         seed=1) as sim:
        engine = simulated(sim, concurrency=30, max_retries=5, dimension_timeouts={"rate": 7.5})
        result = await engine.process([f"review {i}: fine" for i in range(30)])
        stats = await sim.stats()
    assert stats["rate_limited"] >= 20
    assert [s.results["rate"].error for s in result.sections] == [None] * 30
