"""Issue 14: a big run with a store lets each finished section go (its results are in the
store) and reads `result.sections` back from the store; what it keeps is what is in flight.

KEEP_IN_MEMORY (the size from which a run lets its sections go) is lowered here so a test
run is quick; the run's path is the same as a big one's."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import pytest

import dagengine._bounded as bounded
from dagengine import DagEngine, Plugin, ProviderRequest, SectionResult
from dagengine._bounded import StoredSections
from dagengine._logs import run_log
from dagengine._run import SectionState
from dagengine.scheduler import FEED_WINDOW
from dagengine.testing import FunctionProvider


class Chain(Plugin):
    """`a` then `b` on each section (no global dimension)."""

    def __init__(self) -> None:
        super().__init__("chain", "Chain")
        self.dimensions = ["a", "b"]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"b": ["a"]}

    def create_prompt(self, ctx: Any) -> str:
        return f"{ctx.dimension}|{ctx.sections[0].content}"

    def select_provider(self, ctx: Any) -> dict[str, Any]:
        return {"provider": "fn"}


def answer(request: ProviderRequest) -> dict[str, Any]:
    return {"echo": str(request.input).split("|")[-1]}


def provider(**kwargs: Any) -> FunctionProvider:
    return FunctionProvider(answer, name="fn", model="m", tokens=(3, 2), **kwargs)


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "KEEP_IN_MEMORY", 100)


def live_states() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is SectionState)


def test_a_big_run_keeps_only_what_is_in_flight(small_threshold: None, tmp_path: Path) -> None:
    n, seen = 20_000, []
    calls = 0

    def counting(request: ProviderRequest) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls % 4000 == 0:
            seen.append(live_states())
        return answer(request)

    engine = DagEngine(Chain(), providers=[FunctionProvider(
        counting, name="fn", model="m", tokens=(3, 2), record=False)],
        store=tmp_path / "runs.db", execution={"concurrency": 50})
    result = engine.run([f"s{i}" for i in range(n)])
    assert isinstance(result.sections, StoredSections)
    assert len(seen) == 10
    # The input is read a window ahead of the finished sections; the rest are let go.
    assert max(seen) <= FEED_WINDOW + 1000 < n
    assert len(result.sections) == n
    assert result.sections[n - 1].results["b"].data == {"echo": f"s{n - 1}"}


def test_result_sections_read_back_as_the_run_produced_them(
        small_threshold: None, tmp_path: Path) -> None:
    n = 700
    produced: dict[int, SectionResult] = {}

    def done(index: int, section_result: SectionResult) -> None:
        produced[index] = section_result

    engine = DagEngine(Chain(), providers=[provider()], store=tmp_path / "runs.db")
    result = engine.run([f"s{i}" for i in range(n)], on_section_complete=done)
    in_memory = DagEngine(Chain(), providers=[provider()], store=False).run(
        [f"s{i}" for i in range(n)])
    assert isinstance(result.sections, StoredSections)
    assert not isinstance(in_memory.sections, StoredSections)

    expected = [produced[i] for i in range(n)]
    assert list(result.sections) == expected
    assert result.sections == expected
    assert len(result.sections) == n
    assert result.sections[3] == expected[3] and result.sections[-1] == expected[-1]
    assert result.sections[10:13] == expected[10:13]
    with pytest.raises(IndexError):
        result.sections[n]
    assert result.to_dict()["sections"] == [s.to_dict() for s in expected]
    assert result.model_dump()["sections"][0]["results"]["a"]["data"] == {"echo": "s0"}
    # The same data as a run that keeps everything in memory, and the same costs.
    assert [{d: r.data for d, r in s.results.items()} for s in result.sections] == [
        {d: r.data for d, r in s.results.items()} for s in in_memory.sections]
    assert result.costs == in_memory.costs
    assert result.costs is not None and result.costs.by_dimension["b"].calls == n
    assert result.transformed_sections == in_memory.transformed_sections
    frame = result.to_pandas()
    assert len(frame) == n and list(frame["a.echo"][:2]) == ["s0", "s1"]


def test_dimension_summaries_count_the_sections_let_go(
        small_threshold: None, tmp_path: Path) -> None:
    summaries: dict[str, Any] = {}
    broken = provider(fail=lambda request, attempt: (
        RuntimeError("down") if str(request.input).endswith("7") else None))
    engine = DagEngine(Chain(), providers=[broken], store=tmp_path / "runs.db",
                       execution={"max_retries": 0})
    result = engine.run([f"s{i}" for i in range(500)],
                        on_dimension_complete=lambda name, summary: summaries.update(
                            {name: summary}))
    assert isinstance(result.sections, StoredSections)
    assert summaries["a"].data == {"total": 500, "completed": 500, "failed": 50, "skipped": 0}
    assert summaries["a"].error == "50 of 500 sections failed"
    assert sum(1 for s in result.sections if s.results["a"].error is not None) == 50


def test_a_resumed_big_run_calls_only_what_is_missing(
        small_threshold: None, tmp_path: Path) -> None:
    texts = [f"s{i}" for i in range(400)]
    path = tmp_path / "runs.db"
    first = provider(fail=lambda request, attempt: (
        RuntimeError("down") if str(request.input).endswith("3") else None))
    engine = DagEngine(Chain(), providers=[first], store=path, execution={"max_retries": 0})
    engine.run(texts, process_id="big")
    again = provider()
    resumed = DagEngine(Chain(), providers=[again], store=path).run(
        texts, process_id="big", resume=True)
    # 40 sections failed their `a` (and so their `b`): those 80 calls, and only those.
    assert sorted((c.dimension, c.section_index) for c in again.calls) == sorted(
        (d, i) for i in range(3, 400, 10) for d in ("a", "b"))
    assert isinstance(resumed.sections, StoredSections)
    assert all(s.results["b"].data == {"echo": s.section.content} for s in resumed.sections)


def test_a_small_run_keeps_its_results_in_memory(tmp_path: Path) -> None:
    result = DagEngine(Chain(), providers=[provider()], store=tmp_path / "runs.db").run(
        ["x", "y"])
    assert isinstance(result.sections, list)


def test_the_run_end_log_counts_what_the_run_let_go(
        small_threshold: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def ended(store: Any) -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=run_log.name):
            DagEngine(Chain(), providers=[provider(fail=lambda request, attempt: (
                RuntimeError("down") if str(request.input).endswith("|s5") else None))],
                store=store, execution={"max_retries": 0}).run([f"s{i}" for i in range(300)])
        line = next(r.getMessage() for r in caplog.records if " finished in " in r.getMessage())
        return line.split(": ", 1)[1]

    # "299 ok, 1 failed ..." per dimension pair: a dropped section's results still count.
    assert ended(tmp_path / "runs.db") == ended(False)
    assert "598 ok, 2 failed, 0 skipped, 0 from the cache; 600 requests" in ended(False)
