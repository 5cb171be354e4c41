"""DimensionResult.call: the typed information of the call behind each result, kept beside
the metadata keys it replaces, stored with the result and read back on resume."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import (
    CallInfo,
    DagEngine,
    Dimension,
    DimensionResult,
    ProcessResult,
    ProviderRequest,
    ProviderResponse,
    SkipWithResult,
    TokenUsage,
)

PRICING = {"models": {"fake-model": {"input_per_1m": 1.0, "output_per_1m": 2.0}}}
ONE_CALL = (10 * 1.0 + 5 * 2.0) / 1e6


def engine_for(plugin: Any, provider: FakeProvider, **kwargs: Any) -> DagEngine:
    return DagEngine(plugin, providers=[provider], pricing=PRICING,
                     execution={"concurrency": 4, "retry_delay": 0.001}, **kwargs)


def results_of(result: ProcessResult, dimension: str = "a") -> list[DimensionResult]:
    return [s.results[dimension] for s in result.sections]


class Reasoned(FakeProvider):
    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        response = await super().execute(request)
        response.metadata["finish_reason"] = "stop"
        return response


async def test_each_result_carries_its_call_as_typed_attributes() -> None:
    provider = Reasoned(fail=lambda r, n: http_error(500) if n == 1 else None)

    result = await engine_for(SimplePlugin(["a"]), provider).process(["x"])

    call = results_of(result)[0].call
    assert isinstance(call, CallInfo)
    assert (call.model, call.provider, call.attempts) == ("fake-model", "fake", 2)
    assert call.tokens == TokenUsage.of(10, 5)
    assert call.cost == pytest.approx(ONE_CALL)
    assert (call.cached, call.skipped, call.saved_cost) == (False, False, None)
    assert call.finish_reason == "stop" and call.status_code == 200
    assert call.duration > 0


async def test_the_metadata_keys_keep_the_same_figures() -> None:
    result = await engine_for(SimplePlugin(["a"]), FakeProvider()).process(["x"])

    res = results_of(result)[0]
    assert res.call is not None
    for key in ("model", "provider", "tokens", "cost", "cached", "attempts", "duration",
                "status_code"):
        assert res.metadata[key] == getattr(res.call, key), key
    assert "call" not in res.to_dict()


class Label(BaseModel):
    label: str


async def test_tokens_of_attempts_that_failed_validation_are_on_the_call() -> None:
    provider = FakeProvider(answer=lambda r: {"label": "ok"} if "rejected" in str(r.input)
                            else {"wrong": 1})
    plugin = SimplePlugin([Dimension("a", output_schema=Label)])

    result = await engine_for(plugin, provider).process(["x"])

    call = results_of(result)[0].call
    assert call is not None and call.attempts == 2
    assert call.tokens == TokenUsage.of(20, 10)  # both answers were paid for
    assert result.costs is not None and result.costs.total_cost == pytest.approx(2 * ONE_CALL)


async def test_a_failed_call_has_call_information_and_counts_for_its_dimension() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(400))

    result = await engine_for(SimplePlugin(["a"]), provider).process(["x"])

    res = results_of(result)[0]
    assert not res.ok and res.call is not None
    assert (res.call.provider, res.call.attempts, res.call.cost) == ("fake", 1, 0.0)
    assert result.costs is not None and result.costs.by_dimension["a"].calls == 1


async def test_a_skipped_call_says_so_and_costs_nothing() -> None:
    class Skips(SimplePlugin):
        def should_skip_section_dimension(self, ctx: Any) -> Any:
            return "not needed" if ctx.section_index == 0 else False

    result = await engine_for(Skips(["a"]), FakeProvider()).process(["x", "y"])

    skipped, called = results_of(result)
    assert skipped.call == CallInfo(skipped=True)
    assert called.call is not None and not called.call.skipped
    assert result.costs is not None and result.costs.by_dimension["a"].calls == 1


async def test_a_skip_hooks_result_built_with_metadata_only_still_reports_its_savings() -> None:
    class Skips(SimplePlugin):
        def should_skip_section_dimension(self, ctx: Any) -> Any:
            return SkipWithResult(result=DimensionResult(
                data="known", metadata={"saved_cost": 0.25, "model": "fake-model"}))

    result = await engine_for(Skips(["a"]), FakeProvider()).process(["x"])

    call = results_of(result)[0].call
    assert call is not None and call.cached and call.skipped and call.saved_cost == 0.25
    assert result.costs is not None
    assert (result.costs.cached_calls, result.costs.cache_savings) == (1, 0.25)


async def test_a_timed_out_call_has_no_call_information() -> None:
    provider = FakeProvider(latency=lambda r: 5.0)

    result = await DagEngine(SimplePlugin(["a"]), providers=[provider],
                             execution={"timeout": 0.05}).process(["x"])

    res = results_of(result)[0]
    assert not res.ok and res.call is None and res.metadata["duration"] > 0


async def test_a_cache_hit_is_cached_costs_nothing_and_reports_what_it_saved(
        tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await engine_for(SimplePlugin(["a"]), FakeProvider(), store=path).process(
        ["x"], process_id="first")

    result = await engine_for(SimplePlugin(["a"]), FakeProvider(), store=path).process(
        ["x"], process_id="second")

    call = results_of(result)[0].call
    assert call is not None and call.cached
    assert call.cost == 0.0 and call.saved_cost == pytest.approx(ONE_CALL)
    assert call.tokens == TokenUsage.of(10, 5)


async def test_call_is_stored_with_the_result_and_read_back_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    first = await engine_for(SimplePlugin(["a"]), FakeProvider(), store=path).process(
        ["x", "y"], process_id="p")

    again = FakeProvider()
    resumed = await engine_for(SimplePlugin(["a"]), again, store=path).process(
        ["x", "y"], process_id="p", resume=True)

    assert again.calls == []
    assert [r.call for r in results_of(resumed)] == [r.call for r in results_of(first)]
    assert resumed.costs == first.costs


async def test_rows_stored_before_results_had_a_call_load_with_it_rebuilt(
        tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    first = await engine_for(SimplePlugin(["a"]), FakeProvider(), store=path).process(
        ["x", "y"], process_id="p")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE results SET result = json_remove(result, '$.call')")
    conn.commit()
    conn.close()

    resumed = await engine_for(SimplePlugin(["a"]), FakeProvider(), store=path).process(
        ["x", "y"], process_id="p", resume=True)

    for old, new in zip(results_of(first), results_of(resumed), strict=True):
        assert new.call is not None and old.call is not None
        assert replace(new.call, duration=0.0) == replace(old.call, duration=0.0)
        assert isinstance(new.metadata["tokens"], TokenUsage)
    assert resumed.costs == first.costs


def test_call_information_is_read_from_the_metadata_keys_of_older_results() -> None:
    tokens = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}

    info = CallInfo.from_metadata({"model": "m", "tokens": tokens, "cost": 0.5,
                                   "attempts": "junk", "reason": "why"})

    assert info == CallInfo(model="m", tokens=TokenUsage.of(3, 4), cost=0.5)
    assert CallInfo.from_metadata({"duration": 1.0}) is None  # no call was described
    assert CallInfo.from_metadata({"skipped": True}) == CallInfo(skipped=True)
