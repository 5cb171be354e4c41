"""SPEC §3 retries, fallbacks, timeouts, output parsing, skips and failure modes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import (
    DagEngine,
    Dimension,
    DimensionResult,
    DimensionTimeoutError,
    ExecutionConfig,
    ProviderError,
    ProviderRegistry,
    SkipWithResult,
    UnknownProviderError,
    ValidationError,
)


def engine_for(plugin: Any, *providers: FakeProvider, **execution: Any) -> DagEngine:
    return DagEngine(plugin=plugin, providers=list(providers),
                     execution={"concurrency": 10, "retry_delay": 0.001, **execution})


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 529])
async def test_retryable_statuses_are_retried(status: int) -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(status) if n == 1 else None)
    result = await engine_for(SimplePlugin(["a"]), provider).process(["x"])
    assert result.sections[0].results["a"].ok
    assert result.sections[0].results["a"].metadata["attempts"] == 2
    assert len(provider.calls) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_are_not_retried(status: int) -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(status))
    result = await engine_for(SimplePlugin(["a"]), provider).process(["x"])
    assert len(provider.calls) == 1
    assert f"HTTP {status}" in (result.sections[0].results["a"].error or "")


async def test_timeouts_and_connection_errors_are_retried() -> None:
    errors = {1: TimeoutError("slow"), 2: ConnectionResetError("reset")}
    provider = FakeProvider(fail=lambda r, n: errors.get(n))
    result = await engine_for(SimplePlugin(["a"]), provider).process(["x"])
    assert result.sections[0].results["a"].ok
    assert len(provider.calls) == 3


async def test_max_retries_zero_is_one_attempt() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(500))
    result = await engine_for(SimplePlugin(["a"]), provider, max_retries=0).process(["x"])
    assert len(provider.calls) == 1
    assert not result.sections[0].results["a"].ok


async def test_retries_stop_after_max_retries() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(503))
    result = await engine_for(SimplePlugin(["a"]), provider, max_retries=2).process(["x"])
    assert len(provider.calls) == 3
    assert "after 3 attempts" in (result.sections[0].results["a"].error or "")


async def test_retry_after_is_honoured() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(429, retry_after=0.3) if n == 1 else None)
    await engine_for(SimplePlugin(["a"]), provider).process(["x"])
    first, second = provider.calls
    assert second.start - first.end >= 0.3


async def test_backoff_grows_exponentially_from_retry_delay() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(500) if n <= 3 else None)
    await engine_for(SimplePlugin(["a"]), provider, retry_delay=0.05).process(["x"])
    gaps = [b.start - a.end for a, b in zip(provider.calls, provider.calls[1:], strict=False)]
    # equal jitter: each wait is between half and all of 0.05 * 2**(n-1)
    assert gaps[0] >= 0.025 and gaps[1] >= 0.05 and gaps[2] >= 0.1


async def test_gateway_provider_gets_one_attempt_per_call() -> None:
    provider = FakeProvider(handles_retries=True, fail=lambda r, n: http_error(429))
    await engine_for(SimplePlugin(["a"]), provider).process(["x"])
    assert len(provider.calls) == 1


async def test_fallbacks_are_tried_in_order_after_retries() -> None:
    primary = FakeProvider(name="primary", fail=lambda r, n: http_error(500))
    second = FakeProvider(name="second", fail=lambda r, n: http_error(401))
    third = FakeProvider(name="third")

    class Plugin(SimplePlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "primary", "options": {"model": "m1"},
                    "fallbacks": [{"provider": "second", "options": {"model": "m2"}},
                                  {"provider": "third", "options": {"model": "m3"},
                                   "retry_after": 0.2}]}

    result = await engine_for(Plugin(["a"]), primary, second, third,
                              max_retries=1).process(["x"])
    res = result.sections[0].results["a"]
    assert res.ok and res.metadata["provider"] == "third" and res.metadata["model"] == "m3"
    assert (len(primary.calls), len(second.calls), len(third.calls)) == (2, 1, 1)
    assert third.calls[0].start - second.calls[0].end >= 0.2


async def test_handle_provider_fallback_can_veto() -> None:
    primary = FakeProvider(name="primary", fail=lambda r, n: http_error(500))
    backup = FakeProvider(name="backup")

    class Plugin(SimplePlugin):
        def select_provider(self, *args: Any) -> Any:
            return {"provider": "primary", "fallbacks": [{"provider": "backup"}]}

        def handle_provider_fallback(self, ctx: Any) -> Any:
            assert ctx.error is not None and ctx.provider == "backup"
            return {"should_fallback": False}

    result = await engine_for(Plugin(["a"]), primary, backup, max_retries=0).process(["x"])
    assert backup.calls == []
    assert not result.sections[0].results["a"].ok


async def test_handle_retry_can_stop_retrying_and_change_the_request() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(500) if n == 1 else None,
                            answer=lambda r: r.input)
    seen: list[Any] = []

    class Plugin(SimplePlugin):
        async def handle_retry(self, ctx: Any) -> Any:
            seen.append((ctx.attempt, ctx.max_attempts, ctx.error.status_code))
            return {"should_retry": True, "delay": 0.0, "modified_request": {"input": "changed"}}

    result = await engine_for(Plugin(["a"]), provider).process(["x"])
    assert seen == [(1, 4, 500)]
    assert result.sections[0].results["a"].data == "changed"

    class Stop(SimplePlugin):
        def handle_retry(self, ctx: Any) -> Any:
            return {"should_retry": False}

    provider2 = FakeProvider(fail=lambda r, n: http_error(500))
    await engine_for(Stop(["a"]), provider2).process(["x"])
    assert len(provider2.calls) == 1


async def test_handle_dimension_failure_supplies_the_result() -> None:
    class Plugin(SimplePlugin):
        def handle_dimension_failure(self, ctx: Any) -> Any:
            return DimensionResult(data={"fallback": True, "why": str(ctx.error)})

    provider = FakeProvider(fail=lambda r, n: http_error(400))
    result = await engine_for(Plugin(["a"]), provider).process(["x"])
    res = result.sections[0].results["a"]
    assert res.ok and res.data["fallback"] is True


async def test_unknown_provider_is_a_per_item_error_naming_the_configured_ones() -> None:
    # Only a later section picks it: for the first one, preflight refuses the whole run.
    class Plugin(SimplePlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return "nope" if context["section_index"] == 1 else "fake"

    result = await engine_for(Plugin(["a"]), FakeProvider()).process(["x", "y"])
    assert result.sections[0].results["a"].ok
    error = result.sections[1].results["a"].error or ""
    assert "'nope' is not configured" in error and "fake" in error


async def test_timeout_bounds_one_execution_including_retries() -> None:
    provider = FakeProvider(latency=lambda r: 5.0 if r.dimension == "a" else 0.01)
    result = await engine_for(SimplePlugin(["a", "b"]), provider, timeout=10,
                              dimension_timeouts={"a": 0.1}).process(["x"])
    error = result.sections[0].results["a"].error or ""
    assert "'a' timed out after 0.1s" in error
    assert result.sections[0].results["b"].ok


async def test_timeout_error_is_typed_in_strict_mode() -> None:
    provider = FakeProvider(latency=lambda r: 5.0)
    with pytest.raises(DimensionTimeoutError) as info:
        await engine_for(SimplePlugin(["a"]), provider, timeout=0.05,
                         continue_on_error=False).process(["x"])
    assert info.value.dimension == "a" and info.value.limit == 0.05


async def test_strict_mode_raises_the_first_failure_and_cancels_the_rest() -> None:
    provider = FakeProvider(
        fail=lambda r, n: http_error(401) if r.metadata["section_index"] == 0 else None,
        latency=lambda r: 0.0 if r.metadata["section_index"] == 0 else 5.0)
    with pytest.raises(ProviderError) as info:
        await engine_for(SimplePlugin(["a"]), provider,
                         continue_on_error=False).process(["x", "y", "z"])
    assert info.value.status_code == 401
    assert provider.in_flight == 0


async def test_handle_process_failure_can_return_a_partial_result() -> None:
    class Plugin(SimplePlugin):
        def handle_process_failure(self, ctx: Any) -> Any:
            assert isinstance(ctx.error, ProviderError)
            return ctx.results

    provider = FakeProvider(fail=lambda r, n: http_error(401))
    result = await engine_for(Plugin(["a"]), provider,
                              continue_on_error=False).process(["x"])
    assert result.sections[0].section.content == "x"


async def test_skip_hook_skips_the_call_and_costs_nothing() -> None:
    class Plugin(SimplePlugin):
        def should_skip_section_dimension(self, ctx: Any) -> Any:
            return "short" in ctx.section.content

    provider = FakeProvider()
    result = await engine_for(Plugin(["a"]), provider).process(["short one", "long one"])
    skipped = result.sections[0].results["a"]
    assert skipped.data == {"skipped": True, "reason": "skipped by should_skip hook"}
    assert skipped.metadata["skipped"] is True
    assert len(provider.calls) == 1


async def test_skip_with_result_uses_the_given_result_marked_cached() -> None:
    class Plugin(SimplePlugin):
        async def should_skip_global_dimension(self, ctx: Any) -> Any:
            return SkipWithResult(result=DimensionResult(data={"from": "cache"}))

    provider = FakeProvider()
    result = await engine_for(Plugin([Dimension(name="g", scope="global")]),
                              provider).process(["x"])
    assert result.global_results["g"].data == {"from": "cache"}
    assert result.global_results["g"].metadata["cached"] is True
    assert provider.calls == []


class Verdict(BaseModel):
    label: str
    score: float


async def test_output_schema_validates_and_reasks_with_the_error() -> None:
    answers = iter(['{"wrong": 1}', '```json\n{"label": "ok", "score": 0.9,}\n```'])
    provider = FakeProvider(answer=lambda r: next(answers))
    plugin = SimplePlugin([Dimension(name="a", output_schema=Verdict)])
    result = await engine_for(plugin, provider).process(["x"])
    res = result.sections[0].results["a"]
    assert res.data == {"label": "ok", "score": 0.9}
    assert "previous answer was rejected" in provider.calls[1].input
    assert "label" in provider.calls[1].input
    assert res.metadata["tokens"].input_tokens == 20  # both attempts were paid for


async def test_output_schema_failure_after_retries_is_a_clear_error() -> None:
    provider = FakeProvider(answer=lambda r: {"wrong": 1})
    plugin = SimplePlugin([Dimension(name="a", output_schema=Verdict)])
    result = await engine_for(plugin, provider, max_retries=1).process(["x"])
    error = result.sections[0].results["a"].error or ""
    assert "does not match Verdict" in error and "label" in error
    assert len(provider.calls) == 2


def test_invalid_execution_values_name_the_field_and_range() -> None:
    with pytest.raises(ValidationError,
                       match=r"execution.concurrency must be between 1 and 10000, got 0"):
        ExecutionConfig(concurrency=0)
    with pytest.raises(ValidationError, match=r"execution\.max_retries"):
        DagEngine(plugin=SimplePlugin(["a"]), execution={"max_retries": -1})
    with pytest.raises(ValidationError, match=r"execution\.bogus"):
        DagEngine(plugin=SimplePlugin(["a"]), execution={"bogus": 1})
    with pytest.raises(ValidationError, match=r"rate_limits\['x'\].rpm"):
        ExecutionConfig(rate_limits={"x": {"rpm": 5}})
    with pytest.raises(ValidationError, match=r"pricing.models\['m'\].output_per_1m"):
        DagEngine(plugin=SimplePlugin(["a"]), pricing={"models": {"m": {"input_per_1m": 1}}})


def test_providers_accepts_every_documented_form() -> None:
    a, b = FakeProvider(name="a"), FakeProvider(name="b")
    plugin = SimplePlugin(["x"])
    assert DagEngine(plugin, providers={"one": a}).get_available_providers() == ["one"]
    assert DagEngine(plugin, providers=[a, b]).get_available_providers() == ["a", "b"]
    registry = ProviderRegistry([a])
    assert DagEngine(plugin, providers=registry).registry is registry
    assert registry.has("a") and registry.get("a") is a and registry.list() == ["a"]
    with pytest.raises(UnknownProviderError):
        registry.get("zzz")
