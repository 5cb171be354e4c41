"""dagengine.testing: FunctionProvider and virtual time, as a user's tests would use them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dagengine.testing
from conftest import SimplePlugin, http_error
from dagengine import DagEngine, ProviderRequest, ProviderResponse, TokenUsage
from dagengine.testing import FunctionProvider, VirtualTimeLoop, in_virtual_time


def engine_for(provider: FunctionProvider, **execution: Any) -> DagEngine:
    return DagEngine(SimplePlugin(["a"], provider=provider.name), providers=[provider],
                     execution={"retry_delay": 1.0, **execution}, store=False)


def test_function_provider_is_the_spec_name() -> None:
    assert dagengine.testing.FunctionProvider is FunctionProvider
    assert set(dagengine.testing.__all__) >= {"FunctionProvider", "VirtualTimeLoop",
                                              "in_virtual_time"}


@in_virtual_time
async def test_answers_come_from_the_function_and_calls_are_recorded_in_loop_time() -> None:
    provider = FunctionProvider(lambda r: {"echo": r.input}, latency=lambda r: 2.0,
                                name="echo", tokens=(7, 3))

    async with engine_for(provider, concurrency=1) as engine:  # closing it closes providers
        result = await engine.process(["x", "y"])

    assert [s.results["a"].data for s in result.sections] == [{"echo": "a: x"},
                                                               {"echo": "a: y"}]
    assert [(c.start, c.end) for c in provider.calls] == [(0.0, 2.0), (2.0, 4.0)]
    assert [c.section_index for c in provider.calls] == [0, 1]
    assert result.sections[0].results["a"].metadata["tokens"] == TokenUsage.of(7, 3)
    assert provider.max_in_flight == 1 and provider.in_flight == 0
    assert provider.closed == 1


@in_virtual_time
async def test_fail_gets_the_attempt_number_and_the_engine_retries() -> None:
    seen: list[int] = []

    def fail(request: ProviderRequest, attempt: int) -> BaseException | None:
        seen.append(attempt)
        return http_error(500) if attempt < 3 else None

    provider = FunctionProvider(fail=fail, latency=0.5)

    result = await engine_for(provider, max_retries=3).process(["x"])

    assert result.sections[0].results["a"].ok
    assert seen == [1, 2, 3]
    assert len(provider.calls_for(ProviderRequest(input="", dimension="a",
                                                  metadata={"section_index": 0}))) == 3


@in_virtual_time
async def test_without_recording_attempts_are_still_counted() -> None:
    provider = FunctionProvider(fail=lambda r, n: http_error(503) if n == 1 else None,
                                record=False)

    result = await engine_for(provider, max_retries=1).process(["x", "y"])

    assert all(s.results["a"].ok for s in result.sections)
    assert provider.calls == []


async def test_an_async_answer_and_a_whole_response_are_taken_as_given() -> None:
    async def answer(request: ProviderRequest) -> ProviderResponse:
        await asyncio.sleep(0)
        return ProviderResponse(data={"n": 1}, metadata={"model": "m-1", "status_code": 200,
                                                         "tokens": TokenUsage.of(1, 1)})

    provider = FunctionProvider(answer)

    response = await provider.execute(ProviderRequest(input="hi", options={"model": "x"}))

    assert response.data == {"n": 1} and response.metadata["model"] == "m-1"


async def test_answers_report_the_requested_model_else_its_own() -> None:
    provider = FunctionProvider(model="own")

    named = await provider.execute(ProviderRequest(input="hi", options={"model": "asked"}))
    unnamed = await provider.execute(ProviderRequest(input="hi"))

    assert (named.metadata["model"], unnamed.metadata["model"]) == ("asked", "own")


@pytest.fixture
def seconds() -> float:
    return 30.0


@in_virtual_time
async def test_virtual_time_jumps_to_the_next_timer_and_passes_fixtures(seconds: float) -> None:
    loop = asyncio.get_running_loop()

    await asyncio.sleep(seconds)
    async with asyncio.timeout(5):
        await asyncio.sleep(4.5)

    assert isinstance(loop, VirtualTimeLoop)
    assert loop.time() == seconds + 4.5


def test_a_virtual_time_loop_with_nothing_to_wait_for_says_deadlock() -> None:
    async def stuck() -> None:
        await asyncio.get_running_loop().create_future()

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner, \
            pytest.raises(RuntimeError, match="deadlock"):
        runner.run(stuck())
