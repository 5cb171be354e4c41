"""Every plugin hook and process() callback, progress updates and the cost summary."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin
from dagengine import (
    DagEngine,
    Dimension,
    DimensionResult,
    ProcessResult,
    ProgressUpdate,
    ProviderRequest,
    ProviderResponse,
    Section,
)


def engine_for(plugin: Any, *providers: FakeProvider, **kwargs: Any) -> DagEngine:
    execution = {"concurrency": 4, "retry_delay": 0.001, **kwargs.pop("execution", {})}
    return DagEngine(plugin=plugin, providers=list(providers) or [FakeProvider()],
                     execution=execution, **kwargs)


class Recorder(SimplePlugin):
    """Implements every optional hook, alternating sync and async, and records calls."""

    def __init__(self) -> None:
        super().__init__(["a", Dimension(name="g", scope="global"), "b"],
                         {"g": ["a"], "b": ["g"]})
        self.calls: list[str] = []

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        self.calls.append("define_dependencies")
        return super().define_dependencies(ctx)

    async def before_process_start(self, ctx: Any) -> Any:
        self.calls.append("before_process_start")
        return {"sections": [*ctx.sections, Section(content="added")], "metadata": {"m": 1}}

    def should_skip_section_dimension(self, ctx: Any) -> bool:
        self.calls.append("should_skip_section_dimension")
        return False

    async def should_skip_global_dimension(self, ctx: Any) -> bool:
        self.calls.append("should_skip_global_dimension")
        return False

    def transform_dependencies(self, ctx: Any) -> Any:
        self.calls.append("transform_dependencies")
        return {**ctx.dependencies, "extra": DimensionResult(data="injected")}

    async def before_dimension_execute(self, ctx: Any) -> None:
        self.calls.append("before_dimension_execute")

    def after_dimension_execute(self, ctx: Any) -> None:
        assert ctx.result is not None and ctx.duration is not None
        self.calls.append("after_dimension_execute")

    async def before_provider_execute(self, ctx: Any) -> ProviderRequest:
        self.calls.append("before_provider_execute")
        request: ProviderRequest = ctx.request
        return request.model_copy(update={"options": {**request.options, "tag": "x"}})

    def after_provider_execute(self, ctx: Any) -> ProviderResponse:
        self.calls.append("after_provider_execute")
        response: ProviderResponse = ctx.response
        return response.model_copy(update={"data": {"wrapped": response.data}})

    def transform_sections(self, ctx: Any) -> None:
        self.calls.append("transform_sections")
        return None

    async def finalize_results(self, ctx: Any) -> Any:
        self.calls.append("finalize_results")
        return None

    def after_process_complete(self, ctx: Any) -> ProcessResult:
        self.calls.append("after_process_complete")
        result: ProcessResult = ctx.result
        result.metadata = {"post": True}
        return result

    def create_prompt(self, ctx: Any) -> str:
        if ctx.dimension == "b":
            assert ctx.dependencies["extra"].data == "injected"
        return super().create_prompt(ctx)


async def test_every_hook_is_called_in_its_phase_sync_or_async() -> None:
    plugin = Recorder()
    provider = FakeProvider()
    result = await engine_for(plugin, provider).process(["x"])
    assert plugin.calls[:2] == ["before_process_start", "define_dependencies"]
    assert plugin.calls[-2:] == ["finalize_results", "after_process_complete"]
    assert plugin.calls.count("transform_sections") == 1
    assert plugin.calls.count("should_skip_global_dimension") == 1
    assert plugin.calls.count("should_skip_section_dimension") == 4  # a, b over 2 sections
    assert plugin.calls.count("before_provider_execute") == 5
    assert plugin.calls.count("after_provider_execute") == 5
    assert [s.section.content for s in result.sections] == ["x", "added"]
    assert all(c.options["tag"] == "x" for c in provider.calls)
    assert result.sections[0].results["a"].data == {"wrapped": {"ok": True, "dimension": "a"}}
    assert result.metadata == {"post": True}


async def test_a_raising_hook_is_reported_and_its_default_applies() -> None:
    class Broken(SimplePlugin):
        def should_skip_section_dimension(self, ctx: Any) -> bool:
            raise RuntimeError("hook bug")

    errors: list[tuple[BaseException, Any]] = []
    result = await engine_for(Broken(["a"])).process(
        ["x", "y"], on_error=lambda e, ctx: errors.append((e, ctx)))
    assert all(s.results["a"].ok for s in result.sections)
    assert len(errors) == 2 and str(errors[0][0]) == "hook bug"
    assert errors[0][1] == {"hook": "should_skip_section_dimension"}


async def test_a_raising_hook_fails_the_run_in_strict_mode() -> None:
    class Broken(SimplePlugin):
        def before_dimension_execute(self, ctx: Any) -> None:
            raise RuntimeError("hook bug")

    from dagengine import HookError

    with pytest.raises(HookError, match="before_dimension_execute raised RuntimeError"):
        await engine_for(Broken(["a"]),
                         execution={"continue_on_error": False}).process(["x"])


async def test_create_prompt_error_is_a_per_item_error() -> None:
    class Broken(SimplePlugin):
        def create_prompt(self, ctx: Any) -> str:
            if ctx.section_index == 1:
                raise KeyError("field")
            return "ok"

    result = await engine_for(Broken(["a"])).process(["x", "y"])
    assert result.sections[0].results["a"].ok
    assert "create_prompt raised KeyError" in (result.sections[1].results["a"].error or "")


async def test_callbacks_fire_with_their_arguments_and_raising_ones_do_not_break() -> None:
    events: list[tuple[Any, ...]] = []

    async def on_dimension_complete(name: str, result: DimensionResult) -> None:
        events.append(("dim_done", name, result.data["completed"] if result.data else None))
        raise RuntimeError("callback bug")

    errors: list[BaseException] = []
    result = await engine_for(SimplePlugin(["a", "b"], {"b": ["a"]})).process(
        ["x", "y"],
        on_dimension_start=lambda name: events.append(("dim_start", name)),
        on_dimension_complete=on_dimension_complete,
        on_section_start=lambda i, s: events.append(("sec_start", i, s.content)),
        on_section_complete=lambda i, r: events.append(("sec_done", i, tuple(sorted(r.results)))),
        on_error=lambda e, ctx: errors.append(e),
    )
    assert all(s.results["b"].ok for s in result.sections)
    assert events.count(("dim_done", "a", 2)) == 1 and events.count(("dim_done", "b", 2)) == 1
    assert ("dim_start", "a") in events and ("dim_start", "b") in events
    assert {e for e in events if e[0] == "sec_start"} == {("sec_start", 0, "x"),
                                                          ("sec_start", 1, "y")}
    assert {e for e in events if e[0] == "sec_done"} == {("sec_done", 0, ("a", "b")),
                                                         ("sec_done", 1, ("a", "b"))}
    assert len(errors) == 2


async def test_progress_updates_carry_every_field_and_respect_update_every() -> None:
    updates: list[ProgressUpdate] = []
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]},
                          options={"model": "claude-3-5-haiku-20241022"})
    engine = engine_for(plugin)
    await engine.process([str(i) for i in range(5)], on_progress=updates.append,
                         update_every=2)
    assert [u.completed for u in updates] == [2, 4, 6, 8, 10]
    last = updates[-1]
    assert last.total == 10 and last.percent == 100.0 and last.eta_seconds == 0.0
    assert last.cost == pytest.approx(10 * (10 * 0.8 + 5 * 4.0) / 1e6)
    assert last.estimated_cost == pytest.approx(last.cost)
    assert last.dimensions["a"].completed == 5 and last.dimensions["b"].total == 5
    assert last.failed == 0 and last.retries == 0 and last.in_flight == 0
    assert last.requests_per_second > 0 and last.elapsed_seconds > 0
    progress = engine.get_progress()
    assert progress is not None and progress.completed == 10
    assert set(ProgressUpdate.model_fields) >= {
        "completed", "total", "percent", "cost", "estimated_cost", "elapsed_seconds",
        "eta_seconds", "current_dimension", "current_section", "dimensions", "failed",
        "skipped", "retries", "rate_limited", "in_flight", "requests_per_second"}


async def test_progress_counts_retries_and_failures() -> None:
    from conftest import http_error

    provider = FakeProvider(fail=lambda r, n: http_error(500) if n == 1 else
                            (http_error(400) if r.metadata["section_index"] == 0 else None))
    updates: list[ProgressUpdate] = []
    await engine_for(SimplePlugin(["a"]), provider).process(["x", "y"],
                                                            on_progress=updates.append)
    assert updates[-1].retries == 2
    assert updates[-1].failed == 1 and updates[-1].dimensions["a"].failed == 1


async def test_cost_summary_by_dimension_provider_and_model() -> None:
    cheap = FakeProvider(name="cheap", tokens=(1000, 100))
    dear = FakeProvider(name="dear", tokens=(2000, 200))

    class Plugin(SimplePlugin):
        def select_provider(self, dimension: str, *args: Any) -> Any:
            if dimension == "a":
                return {"provider": "cheap", "options": {"model": "gpt-4o-mini"}}
            return {"provider": "dear", "options": {"model": "custom-model"}}

    engine = engine_for(Plugin(["a", "b"]), cheap, dear,
                        pricing={"models": {"custom-model": {"input_per_1m": 10,
                                                             "output_per_1m": 20}}})
    result = await engine.process(["x", "y"])
    costs = result.costs
    assert costs is not None
    builtin = 2 * (1000 * 0.15 + 100 * 0.60) / 1e6
    custom = 2 * (2000 * 10 + 200 * 20) / 1e6
    assert costs.by_model["gpt-4o-mini"].cost == pytest.approx(builtin)
    assert costs.by_model["custom-model"].cost == pytest.approx(custom)
    assert costs.by_provider["dear"].calls == 2 and costs.by_dimension["a"].calls == 2
    assert costs.total_cost == pytest.approx(builtin + custom)
    assert costs.input_tokens == 6000 and costs.output_tokens == 600
    assert costs.total_tokens == 6600
    assert result.sections[0].results["a"].metadata["cost"] == pytest.approx(builtin / 2)


async def test_unpriced_model_counts_tokens_and_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    plugin = SimplePlugin(["a"], options={"model": "mystery-model"})
    result = await engine_for(plugin).process(["x", "y", "z"])
    assert result.costs is not None
    assert result.costs.total_tokens == 45 and result.costs.total_cost == 0
    assert result.costs.unpriced_models == ["mystery-model"]
    assert caplog.text.count("no price known for model 'mystery-model'") == 1


async def test_results_convert_to_json() -> None:
    import json

    result = await engine_for(SimplePlugin(["a"])).process(["x"])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["sections"][0]["results"]["a"]["metadata"]["tokens"]["total_tokens"] == 15
    assert data["costs"]["currency"] == "USD"
