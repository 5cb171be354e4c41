"""Which ready call takes the next free slot (dagengine.ready.ReadyQueue)."""

import asyncio

import pytest

from dagengine import Dimension
from dagengine.graph import Plan
from dagengine.ready import ReadyQueue

W4 = Plan.build(
    ["sentiment", "topics", "summary", Dimension(name="overall", scope="global")],
    {"summary": ["sentiment", "topics"], "overall": ["summary"]},
)
# A quick two-step chain next to one slow step.
MIXED = Plan.build(["classify", "tag", "essay"], {"tag": ["classify"]})


def drain(queue: ReadyQueue[str]) -> list[str]:
    async def take() -> list[str]:
        queue.close()
        taken = []
        while (item := await queue.get()) is not None:
            taken.append(item)
        return taken
    return asyncio.run(take())


def test_globals_go_before_any_section_call() -> None:
    queue: ReadyQueue[str] = ReadyQueue(W4)
    queue.put("sentiment", 0, "sentiment 0")
    queue.put("overall", None, "overall")
    assert drain(queue)[0] == "overall"


def test_before_any_duration_deepest_chain_goes_first_then_section_order() -> None:
    queue: ReadyQueue[str] = ReadyQueue(W4)
    queue.put("summary", 0, "summary 0")
    for i in (1, 0):
        for d in ("topics", "sentiment"):
            queue.put(d, i, f"{d} {i}")
    assert drain(queue) == ["topics 0", "sentiment 0", "topics 1", "sentiment 1", "summary 0"]


def test_a_dimension_learned_to_be_slow_starts_before_a_deeper_quick_chain() -> None:
    queue: ReadyQueue[str] = ReadyQueue(MIXED)
    for i in range(3):
        queue.put("classify", i, f"classify {i}")
        queue.put("essay", i, f"essay {i}")
    for _ in range(20):
        queue.observe("classify", 0.2)
        queue.observe("tag", 0.2)
        queue.observe("essay", 4.0)
    assert queue.expected_chains()["essay"] > 2 * queue.expected_chains()["classify"]
    assert drain(queue) == ["essay 0", "essay 1", "essay 2",
                            "classify 0", "classify 1", "classify 2"]


def test_without_durations_the_deeper_quick_chain_goes_first() -> None:
    queue: ReadyQueue[str] = ReadyQueue(MIXED)
    queue.put("essay", 0, "essay 0")
    queue.put("classify", 0, "classify 0")
    assert drain(queue) == ["classify 0", "essay 0"]


def test_alike_dimensions_with_noisy_durations_keep_section_order() -> None:
    queue: ReadyQueue[str] = ReadyQueue(W4)
    queue.observe("sentiment", 3.0)  # one heavy-tailed call
    for _ in range(4):
        queue.observe("topics", 0.5)
        queue.observe("summary", 0.5)
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
