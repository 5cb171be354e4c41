"""SPEC §3 scheduling, dependencies, transformations and cancellation, with fake providers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin
from dagengine import (
    CircularDependencyError,
    DagEngine,
    DependencyError,
    Dimension,
    DimensionResult,
    ProcessResult,
    Section,
)


def engine_for(plugin: SimplePlugin, provider: FakeProvider, **execution: Any) -> DagEngine:
    return DagEngine(plugin=plugin, providers=[provider],
                     execution={"concurrency": 10, "retry_delay": 0.001, **execution})


async def test_section_pipeline_has_no_barrier_between_levels() -> None:
    # Section 0's first dimension is slow; the other sections must move on to their second
    # dimension before it finishes.
    provider = FakeProvider(
        latency=lambda r: 0.4 if r.dimension == "first" and r.metadata["section_index"] == 0
        else 0.01)
    plugin = SimplePlugin(["first", "second"], {"second": ["first"]})
    await engine_for(plugin, provider).process(["slow", "a", "b", "c"])
    slow_first = next(c for c in provider.calls
                      if c.dimension == "first" and c.section_index == 0)
    fast_second = [c for c in provider.calls if c.dimension == "second" and c.section_index != 0]
    assert len(fast_second) == 3
    assert all(c.start < slow_first.end for c in fast_second)


async def test_in_flight_calls_never_exceed_concurrency_and_reach_it() -> None:
    provider = FakeProvider(latency=lambda r: 0.02)
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    await engine_for(plugin, provider, concurrency=4).process([str(i) for i in range(20)])
    assert provider.max_in_flight == 4
    assert len(provider.calls) == 40


async def test_a_dimension_seen_to_be_slow_starts_before_a_deeper_quick_chain() -> None:
    # classify -> tag is the deeper chain, so it would go first; but the first essay, started
    # early to learn what essays take, runs far longer than classify and tag, so the other
    # essays start before the tags.
    provider = FakeProvider(latency=lambda r: 0.05 if r.dimension == "essay" else 0.001)
    plugin = SimplePlugin(["classify", "tag", "essay"], {"tag": ["classify"]})
    await engine_for(plugin, provider, concurrency=2).process([str(i) for i in range(12)])
    order = [c.dimension for c in provider.calls]
    assert order.index("essay") <= 2
    last_essay = max(i for i, d in enumerate(order) if d == "essay")
    assert order[last_essay + 1:].count("tag") >= 10


async def test_a_second_run_starts_from_what_the_first_learned() -> None:
    provider = FakeProvider(latency=lambda r: 0.05 if r.dimension == "essay" else 0.001)
    plugin = SimplePlugin(["classify", "tag", "essay"], {"tag": ["classify"]})
    engine = engine_for(plugin, provider, concurrency=2)
    await engine.process([str(i) for i in range(10)])
    provider.calls.clear()
    await engine.process(["d", "e", "f"])
    assert [c.dimension for c in provider.calls[:3]] == ["essay"] * 3


async def test_cycle_raises_before_any_provider_call() -> None:
    provider = FakeProvider()
    plugin = SimplePlugin(["a", "b", "c"], {"a": ["c"], "b": ["a"], "c": ["b"]})
    with pytest.raises(CircularDependencyError) as info:
        await engine_for(plugin, provider).process(["x"])
    assert provider.calls == []
    assert set(info.value.cycle) == {"a", "b", "c"}
    assert info.value.cycle[0] == info.value.cycle[-1]
    assert "a" in str(info.value) and "->" in str(info.value)


@pytest.mark.parametrize(
    ("deps", "message"),
    [({"a": ["missing"]}, "unknown dimension 'missing'"),
     ({"a": ["a"]}, "depends on itself"),
     ({"nope": ["a"]}, "unknown dimension 'nope'")],
)
async def test_bad_dependencies_raise_before_any_call(deps: dict[str, list[str]],
                                                      message: str) -> None:
    provider = FakeProvider()
    with pytest.raises(DependencyError, match=message):
        await engine_for(SimplePlugin(["a"], deps), provider).process(["x"])
    assert provider.calls == []


async def test_section_dimension_receives_its_own_sections_dependencies() -> None:
    seen: dict[int, Any] = {}

    class Plugin(SimplePlugin):
        def create_prompt(self, ctx: Any) -> str:
            if ctx.dimension == "b":
                seen[ctx.section_index] = ctx.dependencies["a"].data
            return f"{ctx.dimension}:{ctx.sections[0].content}"

    provider = FakeProvider(answer=lambda r: {"echo": r.input})
    await engine_for(Plugin(["a", "b"], {"b": ["a"]}), provider).process(["x", "y"])
    assert seen == {0: {"echo": "a:x"}, 1: {"echo": "a:y"}}


async def test_global_dimension_receives_aggregated_section_results() -> None:
    captured: list[DimensionResult] = []

    class Plugin(SimplePlugin):
        def create_prompt(self, ctx: Any) -> str:
            if ctx.is_global:
                captured.append(ctx.dependencies["a"])
                assert ctx.section_index is None
                assert len(ctx.sections) == 3
            return super().create_prompt(ctx)

    provider = FakeProvider(answer=lambda r: r.input)
    plugin = Plugin(["a", Dimension(name="overall", scope="global")], {"overall": ["a"]})
    result = await engine_for(plugin, provider).process(["x", "y", "z"])
    [agg] = captured
    assert agg.data["aggregated"] is True
    assert agg.data["total_sections"] == 3
    assert [r.data for r in agg.data["sections"]] == ["a: x", "a: y", "a: z"]
    assert result.global_results["overall"].data == "overall over 3 sections"


async def test_global_dimension_waits_only_for_what_it_depends_on() -> None:
    provider = FakeProvider(latency=lambda r: 0.3 if r.dimension == "slow" else 0.01)
    plugin = SimplePlugin(["fast", "slow", Dimension(name="g", scope="global")],
                          {"g": ["fast"]})
    await engine_for(plugin, provider).process(["x", "y"])
    g = next(c for c in provider.calls if c.dimension == "g")
    slow_ends = [c.end for c in provider.calls if c.dimension == "slow"]
    assert g.start < min(slow_ends)


async def test_section_dimension_after_global_waits_for_it_and_sees_it() -> None:
    seen: list[Any] = []

    class Plugin(SimplePlugin):
        def create_prompt(self, ctx: Any) -> str:
            if ctx.dimension == "after":
                seen.append(ctx.dependencies["g"].data)
            return super().create_prompt(ctx)

    provider = FakeProvider(answer=lambda r: r.input)
    plugin = Plugin(["a", Dimension(name="g", scope="global"), "after"],
                    {"g": ["a"], "after": ["g"]})
    await engine_for(plugin, provider).process(["x", "y"])
    g = next(c for c in provider.calls if c.dimension == "g")
    assert all(c.start >= g.end for c in provider.calls if c.dimension == "after")
    assert seen == ["g over 2 sections"] * 2


async def test_dimension_transform_replaces_sections_and_earlier_costs_still_count() -> None:
    def split(result: DimensionResult, sections: list[Section]) -> list[Section]:
        return [Section(content=f"{s.content}-{i}") for s in sections for i in (1, 2)]

    provider = FakeProvider(answer=lambda r: r.input)
    plugin = SimplePlugin(
        ["a", Dimension(name="g", scope="global", transform=split), "b"],
        {"g": ["a"], "b": ["g"]}, options={"model": "claude-3-5-haiku-20241022"})
    result = await engine_for(plugin, provider).process(["x", "y"])
    assert [s.section.content for s in result.sections] == ["x-1", "x-2", "y-1", "y-2"]
    assert [s.content for s in result.transformed_sections] == ["x-1", "x-2", "y-1", "y-2"]
    assert all(list(s.results) == ["b"] for s in result.sections)
    # The original sections are kept, with their earlier results, not silently dropped.
    assert [s.section.content for s in result.dropped_sections] == ["x", "y"]
    assert all("a" in s.results for s in result.dropped_sections)
    assert result.costs is not None
    assert result.costs.by_dimension["a"].calls == 2
    assert result.costs.by_dimension["b"].calls == 4
    assert result.costs.by_dimension["g"].calls == 1


async def test_transform_sections_hook_filters_and_kept_sections_keep_their_results() -> None:
    class Plugin(SimplePlugin):
        def transform_sections(self, ctx: Any) -> list[Section]:
            return [s for s in ctx.sections if "keep" in s.content]

    provider = FakeProvider()
    plugin = Plugin(["a", Dimension(name="g", scope="global"), "b"],
                    {"g": ["a"], "b": ["g"]})
    result = await engine_for(plugin, provider).process(["keep 1", "drop", "keep 2"])
    assert [s.section.content for s in result.sections] == ["keep 1", "keep 2"]
    assert all(list(s.results) == ["a", "b"] for s in result.sections)
    assert [s.section.content for s in result.dropped_sections] == ["drop"]


async def test_every_input_section_is_in_the_result_when_some_fail() -> None:
    provider = FakeProvider(fail=lambda r, n: ValueError("boom")
                            if r.metadata["section_index"] % 3 == 0 else None)
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    sections = [f"s{i}" for i in range(10)]
    result = await engine_for(plugin, provider).process(sections)
    assert [s.section.content for s in result.sections] == sections
    for i, section in enumerate(result.sections):
        assert set(section.results) == {"a", "b"}
        assert section.results["a"].ok == (i % 3 != 0)


async def test_dependents_still_run_and_see_the_failed_dependency() -> None:
    seen: list[DimensionResult] = []

    class Plugin(SimplePlugin):
        def create_prompt(self, ctx: Any) -> str:
            if ctx.dimension == "b":
                seen.append(ctx.dependencies["a"])
            return super().create_prompt(ctx)

    provider = FakeProvider(fail=lambda r, n: ValueError("bad") if r.dimension == "a" else None)
    await engine_for(Plugin(["a", "b"], {"b": ["a"]}), provider).process(["x"])
    assert len(seen) == 1 and not seen[0].ok and "bad" in (seen[0].error or "")


async def test_cancellation_leaves_no_task_running() -> None:
    started = asyncio.Event()

    def latency(r: Any) -> float:
        started.set()
        return 30.0

    provider = FakeProvider(latency=latency)
    engine = engine_for(SimplePlugin(["a", "b"], {"b": ["a"]}), provider)
    before = asyncio.all_tasks()
    task = asyncio.create_task(engine.process([str(i) for i in range(50)]))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() - before == set()
    assert provider.in_flight == 0
    assert provider.closed == 0  # the engine's sessions outlive a run, cancelled or not
    await engine.close()
    assert provider.closed == 1


def test_run_is_the_synchronous_wrapper() -> None:
    provider = FakeProvider()
    result = engine_for(SimplePlugin(["a"]), provider).run(["x", "y"])
    assert [s.results["a"].ok for s in result.sections] == [True, True]


def test_run_never_formats_the_whole_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # The repr of a 100k-section result takes seconds; run() must not pay for one.
    formatted: list[object] = []

    def counted(self: object) -> str:
        formatted.append(self)
        return "ProcessResult(...)"

    monkeypatch.setattr(ProcessResult, "__repr__", counted)
    result = engine_for(SimplePlugin(["a"]), FakeProvider()).run(["x"])
    assert result.sections[0].results["a"].ok
    assert formatted == []


async def test_run_inside_an_event_loop_runs_on_a_worker_loop() -> None:
    # Issue 11: this was an EngineUsageError; notebooks need run() inside their loop.
    # The one case still refused is in test_notebook.py.
    engine = engine_for(SimplePlugin(["a"]), FakeProvider())
    assert engine.run(["x"]).sections[0].results["a"].ok


async def test_sections_accept_strings_mappings_and_section_objects() -> None:
    provider = FakeProvider(answer=lambda r: r.input)
    result = await engine_for(SimplePlugin(["a"]), provider).process(
        ["plain", {"content": "mapped", "metadata": {"k": 1}}, Section(content="obj")])
    assert [s.section.content for s in result.sections] == ["plain", "mapped", "obj"]
    assert result.sections[1].section.metadata == {"k": 1}


async def test_empty_input_finishes_with_no_calls() -> None:
    provider = FakeProvider()
    plugin = SimplePlugin(["a", Dimension(name="g", scope="global")], {"g": ["a"]})
    result = await engine_for(plugin, provider).process([])
    assert result.sections == []
    assert len(provider.calls) == 1  # the global still runs, over no sections


def test_graph_analytics_and_exports() -> None:
    plugin = SimplePlugin(
        ["sentiment", "topics", "summary", Dimension(name="overall", scope="global"), "lonely"],
        {"summary": ["sentiment", "topics"], "overall": ["summary"]})
    engine = engine_for(plugin, FakeProvider())
    stats = engine.get_graph_analytics()
    assert stats["total_dimensions"] == 5
    assert stats["total_dependencies"] == 3
    assert stats["max_depth"] == 3
    assert stats["critical_path"] == ["sentiment", "summary", "overall"]
    assert stats["parallel_groups"] == [["sentiment", "topics", "lonely"], ["summary"],
                                        ["overall"]]
    assert stats["independent_dimensions"] == ["lonely"]
    assert stats["bottlenecks"] == []
    dot = engine.export_graph_dot()
    assert '"sentiment" -> "summary";' in dot and dot.startswith("digraph")
    graph = engine.export_graph_json()
    assert {"source": "summary", "target": "overall"} in graph["links"]
    assert len(graph["nodes"]) == 5


async def test_runs_on_one_engine_share_its_providers_until_the_engine_closes() -> None:
    provider = FakeProvider(latency=lambda r: 0.2 if r.input.endswith("slow") else 0.01)
    async with engine_for(SimplePlugin(["a"]), provider) as engine:
        fast, slow = await asyncio.gather(engine.process(["fast"]), engine.process(["slow"]))
        again = await engine.process(["again"])
        assert provider.closed == 0  # not under a run, nor between runs
    assert fast.sections[0].results["a"].ok and slow.sections[0].results["a"].ok
    assert again.sections[0].results["a"].ok
    assert provider.closed == 1  # once, by the engine's close


def test_run_closes_the_providers_as_its_event_loop_ends() -> None:
    provider = FakeProvider()
    engine = engine_for(SimplePlugin(["a"]), provider)
    engine.run(["x"])
    engine.run(["y"])
    assert provider.closed == 2  # each run() has its own loop, whose sessions end with it
