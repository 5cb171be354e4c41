"""A run is one object (Run: its dependencies; RunState: what it did so far) watched by
observers called one way (Observers), and one call is one object (call.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import DagEngine, DimensionResult, ExecutionConfig, ProviderError
from dagengine._run import Run, RunState
from dagengine.call import CallRunner, CallSite, Slot, Usage
from dagengine.cost import Pricing
from dagengine.plugin import Callbacks, Hooks, Observer, Observers
from dagengine.providers import build_registry
from dagengine.ratelimit import RateLimiter
from dagengine.ready import CallTimes
from dagengine.scheduler import Scheduler
from dagengine.types import Section


class Recording(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def dimension_started(self, dimension: str) -> None:
        self.events.append(("dimension_started", dimension))

    def section_started(self, index: int, section: Section) -> None:
        self.events.append(("section_started", index))

    def request_sent(self, dimension: str, provider: str) -> None:
        self.events.append(("request_sent", dimension, provider))

    def request_done(self, dimension: str, provider: str) -> None:
        self.events.append(("request_done", dimension, provider))

    def retry(self, dimension: str, error: BaseException) -> None:
        self.events.append(("retry", dimension))

    async def result(self, dimension: str, index: int | None, result: DimensionResult) -> None:
        await asyncio.sleep(0)  # an async observer is awaited
        self.events.append(("result", dimension, index, result.ok))

    def progressed(self) -> None:
        self.events.append(("progressed",))

    def section_done(self, index: int, result: Any) -> None:
        self.events.append(("section_done", index))

    def dimension_done(self, dimension: str, summary: DimensionResult) -> None:
        self.events.append(("dimension_done", dimension, summary.data["completed"]))


async def run_scheduler(provider: FakeProvider, observer: Observer) -> RunState:
    plugin = SimplePlugin(["a"])
    engine = DagEngine(plugin, providers=[provider])
    plan = await engine.plan()
    config = ExecutionConfig(retry_delay=0.001)
    run = Run(process_id="p", plan=plan, plugin=plugin, config=config,
              hooks=Hooks(plugin, Callbacks({}).hook_failed, strict=False),
              registry=build_registry([provider]), limiter=RateLimiter(config.rate_limits),
              pricing=Pricing(), call_times=CallTimes())
    state = RunState(plan, [Section(content="x")])
    await Scheduler(run, state, Observers([observer])).execute()
    return state


def test_the_scheduler_and_the_call_take_at_most_three_arguments() -> None:
    for constructor in (Scheduler.__init__, CallRunner.__init__):
        assert len(inspect.signature(constructor).parameters) - 1 <= 3


def test_one_call_lives_in_one_module() -> None:
    assert {CallSite, Slot, Usage, CallRunner}
    for gone in ("_site", "_outcome", "_coerce", "_callbacks", "_run_state"):
        assert importlib.util.find_spec(f"dagengine.{gone}") is None


async def test_the_scheduler_runs_a_run_and_its_observers_hear_each_step_in_order() -> None:
    recording = Recording()
    provider = FakeProvider(fail=lambda r, n: http_error(500) if n == 1 else None)

    state = await run_scheduler(provider, recording)

    assert state.current[0].results["a"].ok and state.finished == {"a"}
    assert recording.events == [
        ("dimension_started", "a"), ("section_started", 0),
        ("request_sent", "a", "fake"), ("request_done", "a", "fake"), ("retry", "a"),
        ("request_sent", "a", "fake"), ("request_done", "a", "fake"),
        ("result", "a", 0, True), ("progressed",), ("section_done", 0),
        ("dimension_done", "a", 1),
    ]


async def test_an_observer_that_raises_is_reported_and_the_others_still_hear() -> None:
    class Broken(Observer):
        def result(self, dimension: str, index: int | None, result: DimensionResult) -> None:
            raise RuntimeError("observer bug")

    recording = Recording()
    errors: list[tuple[BaseException, Any]] = []
    observers = Observers([Broken(), recording,
                           Callbacks({"on_error": lambda e, where: errors.append((e, where))})])

    await observers.call("result", "a", 0, DimensionResult(data=1))

    assert recording.events == [("result", "a", 0, True)]
    assert [(str(e), where) for e, where in errors] == [
        ("observer bug", {"observer": "Broken", "event": "result"})]


async def test_observers_are_asked_only_for_the_events_they_implement() -> None:
    observers = Observers([Recording(), None])

    assert observers.has("result") and observers.has("retry")
    assert not observers.has("run_done") and not observers.has("restored")


async def test_each_dimension_is_reported_done_once_while_section_callbacks_wait() -> None:
    done: list[str] = []

    async def on_section_complete(index: int, result: Any) -> None:
        await asyncio.sleep(0.01)

    engine = DagEngine(SimplePlugin(["a", "b"], {"b": ["a"]}), providers=[FakeProvider()],
                       execution={"concurrency": 4})
    result = await engine.process(["x", "y", "z"], on_section_complete=on_section_complete,
                                  on_dimension_complete=lambda name, r: done.append(name))

    assert sorted(done) == ["a", "b"]
    assert all(s.results["b"].ok for s in result.sections)


async def test_get_progress_reads_the_last_run_and_its_rate_limiter() -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(429) if n == 1 else None)
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider],
                       execution={"retry_delay": 0.001})
    assert engine.get_progress() is None and engine.get_rate_limits() == {}

    result = await engine.process(["x", "y"])

    progress = engine.get_progress()
    assert progress is not None
    assert (progress.completed, progress.total, progress.retries) == (2, 2, 2)
    assert progress.rate_limited == 2 and progress.in_flight == 0
    assert set(engine.get_rate_limits()) == {"fake/fake-model"}
    assert engine.last_result is result


@pytest.mark.parametrize("strict", [False, True])
async def test_a_run_that_fails_leaves_what_it_finished_in_last_result(strict: bool) -> None:
    provider = FakeProvider(fail=lambda r, n: http_error(400) if r.input == "a: y" else None)
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider],
                       execution={"continue_on_error": not strict, "concurrency": 1})

    if strict:
        with pytest.raises(ProviderError, match="HTTP 400"):
            await engine.process(["x", "y"])
    else:
        await engine.process(["x", "y"])

    assert engine.last_result is not None
    assert engine.last_result.sections[0].results["a"].ok
