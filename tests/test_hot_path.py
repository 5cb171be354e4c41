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
