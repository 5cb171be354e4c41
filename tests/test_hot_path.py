"""Issue 14: what a call costs the process (the collector's pace during a run, work done only
for those who listen), and how early the first call goes out."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin
from dagengine import DagEngine, ProviderRequest
from dagengine._gc import RUN_THRESHOLD


@pytest.fixture
def default_collector() -> Iterator[None]:
    """The interpreter's own collector settings, as an untuned process has them."""
    saved = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def collector_seen(seen: list[tuple[tuple[int, int, int], int]]) -> FakeProvider:
    def answer(request: ProviderRequest) -> Any:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return {"ok": True}

    return FakeProvider(answer=answer)


async def test_a_run_freezes_what_existed_and_paces_young_collections(
        default_collector: None) -> None:
    seen: list[tuple[tuple[int, int, int], int]] = []
    engine = DagEngine(SimplePlugin(["a"]), providers=[collector_seen(seen)], store=False)
    await engine.process(["x", "y"])
    assert seen and all(threshold[0] == RUN_THRESHOLD and frozen > 0
                        for threshold, frozen in seen)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


async def test_a_tuned_collector_is_left_alone(default_collector: None) -> None:
    gc.set_threshold(5000, 20, 20)
    seen: list[tuple[tuple[int, int, int], int]] = []
    engine = DagEngine(SimplePlugin(["a"]), providers=[collector_seen(seen)], store=False)
    await engine.process(["x"])
    assert seen == [((5000, 20, 20), 0)]
    assert gc.get_threshold() == (5000, 20, 20)


async def test_overlapping_runs_restore_the_collector_once_both_end(
        default_collector: None) -> None:
    seen: list[tuple[tuple[int, int, int], int]] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: ProviderRequest) -> Any:
        entered.set()
        await release.wait()
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return {"ok": True}

    first = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider(answer=slow)], store=False)
    second = DagEngine(SimplePlugin(["a"]), providers=[collector_seen(seen)], store=False)
    running = asyncio.create_task(first.process(["x"]))
    await entered.wait()  # the first run is under way, waiting in its provider
    await second.process(["y"])
    assert gc.get_threshold()[0] == RUN_THRESHOLD  # the first run is still under way
    release.set()
    await running
    assert all(threshold[0] == RUN_THRESHOLD for threshold, _ in seen)
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0


# -- the input, read as the run goes -----------------------------------------------------------


class Consumed:
    """An input of `n` sections that counts how many were taken from it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.taken = 0

    def sync(self) -> Iterator[str]:
        for i in range(self.n):
            self.taken += 1
            yield f"s{i}"

    async def asynchronous(self) -> Any:
        for i in range(self.n):
            self.taken += 1
            yield f"s{i}"


def taken_at_first_call(source: Consumed) -> tuple[FakeProvider, list[int]]:
    seen: list[int] = []

    def answer(request: ProviderRequest) -> Any:
        seen.append(source.taken)
        return {"ok": True}

    return FakeProvider(answer=answer, record=False), seen


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_generator_input_is_read_as_the_run_goes(kind: str) -> None:
    source = Consumed(20_000)
    provider, seen = taken_at_first_call(source)
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider], store=False,
                       execution={"concurrency": 10})
    result = await engine.process(getattr(source, "sync" if kind == "sync" else "asynchronous")())
    assert seen[0] < 1000  # the first call went out with most of the input still unread
    assert len(result.sections) == 20_000
    assert [s.section.content for s in result.sections[:3]] == ["s0", "s1", "s2"]
    assert all(s.results["a"].ok for s in result.sections)


async def test_a_stream_is_read_at_most_a_window_ahead_of_the_finished_sections() -> None:
    from dagengine.scheduler import FEED_WINDOW

    source = Consumed(30_000)
    ahead: list[int] = []
    engine: DagEngine

    def answer(request: ProviderRequest) -> Any:
        progress = engine.get_progress()
        assert progress is not None
        ahead.append(source.taken - progress.completed)
        return {"ok": True}

    engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider(answer=answer, record=False)],
                       store=False, execution={"concurrency": 10})
    result = await engine.process(source.sync())
    assert len(result.sections) == 30_000
    assert max(ahead) <= FEED_WINDOW + 256  # one chunk past the window at most
    assert max(ahead) >= FEED_WINDOW // 2  # and it did read ahead


async def test_a_global_dimension_over_an_async_stream_sees_every_section() -> None:
    from dagengine import Dimension

    source = Consumed(600)
    seen: list[int] = []

    def answer(request: ProviderRequest) -> Any:
        if request.dimension == "all":
            seen.append(source.taken)
        return {"ok": True}

    plugin = SimplePlugin(["a", Dimension("all", scope="global")], {"all": ["a"]})
    engine = DagEngine(plugin, providers=[FakeProvider(answer=answer)], store=False)
    result = await engine.process(source.asynchronous())
    assert seen == [600]
    assert result.global_results["all"].ok and len(result.sections) == 600


async def test_a_list_input_counts_all_its_sections_from_the_first_call() -> None:
    totals: list[int | None] = []

    class Counting(SimplePlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            totals.append(context["total_sections"])
            return super().select_provider(dimension, sections, context)

    engine = DagEngine(Counting(["a"]), providers=[FakeProvider(record=False)], store=False)
    engine_progress: list[int] = []
    result = await engine.process([f"s{i}" for i in range(5000)],
                                  on_progress=lambda p: engine_progress.append(p.total))
    assert set(totals) == {5000}
    assert set(engine_progress) == {5000}
    assert len(result.sections) == 5000


async def test_a_bad_item_of_a_stream_fails_the_run_naming_its_index() -> None:
    from dagengine import ValidationError

    def items() -> Iterator[Any]:
        yield from ["fine"] * 700
        yield 7

    engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=False)
    with pytest.raises(ValidationError, match=r"^sections\[700\]"):
        await engine.process(items())


async def test_a_bare_string_or_an_async_non_iterable_is_still_refused() -> None:
    from dagengine import ValidationError

    provider = FakeProvider()
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider], store=False)
    for value in ("hello", 42):
        with pytest.raises(ValidationError, match=r"^sections must be a list of sections"):
            await engine.process(value)  # type: ignore[arg-type]
    assert provider.calls == []


async def test_a_bad_item_late_in_a_list_still_raises_before_any_call() -> None:
    from dagengine import ValidationError

    provider = FakeProvider()
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider], store=False)
    with pytest.raises(ValidationError, match=r"^sections\[4999\]"):
        await engine.process([*(["fine"] * 4999), 7])
    assert provider.calls == []


async def test_an_empty_stream_finishes_every_dimension() -> None:
    from dagengine import Dimension

    async def nothing() -> Any:
        for item in ():
            yield item

    done: list[str] = []
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    engine = DagEngine(plugin, providers=[FakeProvider()], store=False)
    result = await engine.process(nothing(), on_dimension_complete=lambda d, *_: done.append(d))
    assert result.sections == [] and sorted(done) == ["a", "b"]
    engine = DagEngine(SimplePlugin(["a", Dimension("g", scope="global")]),
                       providers=[FakeProvider()], store=False)
    result = await engine.process(iter([]))
    assert result.sections == [] and "g" in result.global_results


async def test_a_run_that_fails_while_reading_a_list_still_shows_every_section() -> None:
    from dagengine import ProviderError

    def fail(request: ProviderRequest, attempt: int) -> BaseException | None:
        return ProviderError("fake: HTTP 400", status_code=400)

    engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider(fail=fail)], store=False,
                       execution={"continue_on_error": False, "concurrency": 2})
    with pytest.raises(ProviderError):
        await engine.process([f"s{i}" for i in range(3000)])
    partial = engine.last_result
    assert partial is not None and len(partial.sections) == 3000
    assert partial.sections[-1].section.content == "s2999"
