"""Which ready call takes the next free slot (dagengine.ready.ReadyQueue)."""

import asyncio

import pytest

from dagengine import Dimension
from dagengine.graph import Plan
from dagengine.ready import CallTimes, ReadyQueue

W4 = Plan.build(
    ["sentiment", "topics", "summary", Dimension(name="overall", scope="global")],
    {"summary": ["sentiment", "topics"], "overall": ["summary"]},
)
# A quick two-step chain next to one slow step.
MIXED = Plan.build(["classify", "tag", "essay"], {"tag": ["classify"]})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def observe(queue: ReadyQueue[str], clock: Clock, dimension: str, seconds: float) -> None:
    started = queue.times.started(dimension)
    clock.now += seconds
    queue.times.finished(dimension, started)


def drain(queue: ReadyQueue[str]) -> list[str]:
    """Take every item, starting each one's call as the dispatcher would (so it counts as seen)."""
    async def take() -> list[str]:
        queue.close()
        taken = []
        while (item := await queue.get()) is not None:
            queue.times.started(item.split()[0])
            taken.append(item)
        return taken
    return asyncio.run(take())


def test_globals_go_before_any_section_call() -> None:
    queue: ReadyQueue[str] = ReadyQueue(W4)
    queue.put("sentiment", 0, "sentiment 0")
    queue.put("overall", None, "overall")
    assert drain(queue)[0] == "overall"


def test_before_any_duration_each_dimension_goes_once_then_deepest_chain_first() -> None:
    queue: ReadyQueue[str] = ReadyQueue(W4)
    queue.put("summary", 0, "summary 0")
    for i in (1, 0):
        for d in ("topics", "sentiment"):
            queue.put(d, i, f"{d} {i}")
    assert drain(queue) == ["topics 0", "sentiment 0", "summary 0", "topics 1",
                            "sentiment 1"]


def test_a_dimension_learned_to_be_slow_starts_before_a_deeper_quick_chain() -> None:
    clock = Clock()
    queue: ReadyQueue[str] = ReadyQueue(MIXED, CallTimes(clock))
    for i in range(3):
        queue.put("classify", i, f"classify {i}")
        queue.put("essay", i, f"essay {i}")
    for _ in range(20):
        observe(queue, clock, "classify", 0.2)
        observe(queue, clock, "tag", 0.2)
        observe(queue, clock, "essay", 4.0)
    assert queue.expected_chains()["essay"] > 2 * queue.expected_chains()["classify"]
    assert drain(queue) == ["essay 0", "essay 1", "essay 2",
                            "classify 0", "classify 1", "classify 2"]


def test_without_durations_the_deeper_quick_chain_goes_first() -> None:
    queue: ReadyQueue[str] = ReadyQueue(MIXED)
    for i in range(2):
        queue.put("essay", i, f"essay {i}")
        queue.put("classify", i, f"classify {i}")
    # Each dimension's first call goes first once, then the deeper chain.
    assert drain(queue) == ["classify 0", "essay 0", "classify 1", "essay 1"]


def test_calls_still_running_show_a_slow_dimension_before_any_ends() -> None:
    clock = Clock()
    queue: ReadyQueue[str] = ReadyQueue(MIXED, CallTimes(clock))
    for _ in range(10):
        observe(queue, clock, "classify", 0.2)
        observe(queue, clock, "tag", 0.2)
    essays = [queue.times.started("essay") for _ in range(5)]
    clock.now += 3.0
    chains = queue.expected_chains()
    assert chains["essay"] > 1.5 * chains["classify"]
    for started in essays:
        queue.times.finished("essay", started, observed=False)  # cache hits: nothing learned
    assert queue.expected_chains()["essay"] < chains["essay"]


def test_alike_dimensions_with_noisy_durations_keep_section_order() -> None:
    clock = Clock()
    queue: ReadyQueue[str] = ReadyQueue(W4, CallTimes(clock))
    observe(queue, clock, "sentiment", 3.0)  # one heavy-tailed call
    for _ in range(4):
        observe(queue, clock, "topics", 0.5)
        observe(queue, clock, "summary", 0.5)
    for i in range(2):
        queue.put("sentiment", i, f"sentiment {i}")
        queue.put("topics", i, f"topics {i}")
    assert drain(queue) == ["sentiment 0", "topics 0", "sentiment 1", "topics 1"]


@pytest.mark.parametrize("closed_first", [False, True])
def test_get_waits_for_an_item_and_ends_after_close(closed_first: bool) -> None:
    async def scenario() -> list[str | None]:
        queue: ReadyQueue[str] = ReadyQueue(W4)
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not getter.done()
        queue.put("topics", 3, "topics 3")
        if closed_first:
            queue.close()
        first = await getter
        if not closed_first:
            queue.close()
        return [first, await queue.get()]

    assert asyncio.run(scenario()) == ["topics 3", None]


def test_a_mean_remembers_a_bounded_number_of_calls() -> None:
    clock = Clock()
    times = CallTimes(clock)
    for _ in range(3000):
        started = times.started("essay")
        clock.now += 1.0
        times.finished("essay", started)
    for _ in range(3000):
        started = times.started("essay")
        clock.now += 3.0
        times.finished("essay", started)
    # Without forgetting, the mean would be 2.0; the last 3000 calls weigh far more.
    assert times.means(["essay"])["essay"] > 2.5
