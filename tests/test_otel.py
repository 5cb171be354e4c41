"""OpenTelemetry spans of real simulator runs, read back through the SDK's in-memory
exporter: the run > dimension > call tree, GenAI attributes equal to the ProcessResult,
retries and rate-limit waits as events, and no key and no prompt text unless asked for."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SimplePlugin
from dagengine import (
    BaseProvider,
    ConfigurationError,
    DagEngine,
    Dimension,
    ProcessResult,
    ProviderRequest,
    ProviderResponse,
)
from dagengine.simulator import Simulator

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import StatusCode

KEY = "sk-ant-otel-SECRET-0077"
MODEL = "claude-3-5-haiku-20241022"
PROMPT_WORD = "Quetzalwobble"
ROOT = Path(__file__).resolve().parent.parent

# The process's global TracerProvider can be set once: every test here shares it (the
# Anthropic SDK's own spans go there) and reads what it exported since the test began.
# Outside these tests it samples nothing, so the suite's other runs make no spans.
_EXPORTER = InMemorySpanExporter()
_RECORDING = False


class _WhileRecording(Sampler):
    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None,
                      trace_state: Any = None) -> SamplingResult:
        if _RECORDING:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "while a test of test_otel.py runs"


def _global_provider() -> TracerProvider:
    current = trace.get_tracer_provider()
    if not isinstance(current, TracerProvider):
        trace.set_tracer_provider(TracerProvider(sampler=_WhileRecording()))
        current = trace.get_tracer_provider()
    assert isinstance(current, TracerProvider)
    return current


_global_provider().add_span_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    global _RECORDING
    _EXPORTER.clear()
    _RECORDING = True
    yield _EXPORTER
    _RECORDING = False
    _EXPORTER.clear()


def sections(count: int) -> list[str]:
    return [f"{PROMPT_WORD} review {i}: the parcel came late" for i in range(count)]


def engine(sim: Simulator, plugin: Any = None, *, tracing: Any = True, providers: Any = None,
           **execution: Any) -> DagEngine:
    plugin = plugin or SimplePlugin(["a"], provider="anthropic",
                                    options={"model": MODEL, "max_tokens": 50})
    return DagEngine(plugin, providers=providers or {
        "anthropic": {"api_key": KEY, "base_url": sim.base_url}},
        execution={"concurrency": 4, "retry_delay": 0.001, **execution}, store=False,
        tracing=tracing)


def named(exported: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exported.get_finished_spans() if s.name.startswith(prefix)]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def every_text(exported: InMemorySpanExporter) -> str:
    """Everything a backend would show of the spans, as one text."""
    return "\n".join(json.dumps(json.loads(s.to_json())) for s in exported.get_finished_spans())


def call_of(result: ProcessResult, span: ReadableSpan) -> Any:
    attributes = span.attributes or {}
    dimension = attributes["dagengine.dimension"]
    index = attributes.get("dagengine.section_index")
    if index is None:
        return result.global_results[str(dimension)].call
    return result.sections[int(index)].results[str(dimension)].call  # type: ignore[call-overload]


async def test_a_run_is_a_tree_of_run_dimension_and_call_spans_with_the_results_figures(
        spans: InMemorySpanExporter) -> None:
    plugin = SimplePlugin(["a", Dimension("summary", scope="global")], {"summary": ["a"]},
                          provider="anthropic", options={"model": MODEL, "max_tokens": 50})
    async with Simulator() as sim:
        result = await engine(sim, plugin).process(sections(3), process_id="traced")

    [run] = named(spans, "dagengine.run")
    assert run.parent is None and (run.attributes or {})["dagengine.process_id"] == "traced"
    dimensions = {str((s.attributes or {})["dagengine.dimension"]): s
                  for s in named(spans, "dimension ")}
    assert set(dimensions) == {"a", "summary"}
    assert {parent_of(s) for s in dimensions.values()} == {run.context.span_id}
    calls = named(spans, "chat")
    assert len(calls) == 4
    for span in calls:
        attributes = span.attributes or {}
        assert span.name == f"chat {MODEL}" and span.kind is trace.SpanKind.CLIENT
        assert parent_of(span) == dimensions[str(attributes["dagengine.dimension"])].context.span_id
        info = call_of(result, span)
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "anthropic"
        assert attributes["gen_ai.request.model"] == MODEL
        assert attributes["gen_ai.response.model"] == info.model
        assert attributes["gen_ai.usage.input_tokens"] == info.tokens.input_tokens > 0
        assert attributes["gen_ai.usage.output_tokens"] == info.tokens.output_tokens > 0
        assert attributes["gen_ai.response.finish_reasons"] == (info.finish_reason,)
        assert attributes["dagengine.cost_usd"] == pytest.approx(info.cost)
        assert "error.type" not in attributes
    assert sorted((s.attributes or {}).get("dagengine.section_index", -1) for s in calls) == [
        -1, 0, 1, 2]
    assert result.costs is not None
    run_attributes = run.attributes or {}
    assert run_attributes["gen_ai.usage.input_tokens"] == result.costs.input_tokens
    assert run_attributes["gen_ai.usage.output_tokens"] == result.costs.output_tokens
    assert sum(int((s.attributes or {})["gen_ai.usage.input_tokens"])  # type: ignore[arg-type]
               for s in calls) == result.costs.input_tokens


async def test_retries_are_events_on_the_call_span_with_attempt_cause_and_wait(
        spans: InMemorySpanExporter) -> None:
    async with Simulator(script=[500, 429], error_429_retry_after=0.02) as sim:
        result = await engine(sim, concurrency=1, max_retries=3).process(sections(1))
    assert result.sections[0].results["a"].ok
    [call] = named(spans, "chat")
    retries = [e for e in call.events if e.name == "dagengine.retry"]
    assert [(e.attributes or {})["dagengine.attempt"] for e in retries] == [1, 2]
    assert [(e.attributes or {})["error.type"] for e in retries] == ["500", "429"]
    assert all((e.attributes or {})["dagengine.max_attempts"] == 4 for e in retries)
    assert (retries[1].attributes or {})["dagengine.wait_seconds"] >= 0.02  # its retry-after
    assert (call.attributes or {})["dagengine.attempts"] == 3
    assert call.status.status_code is not StatusCode.ERROR


async def test_a_wait_for_the_rate_limiter_is_an_event_on_the_call_that_waited(
        spans: InMemorySpanExporter) -> None:
    # 10 requests/s, its one-second burst first: the calls past it wait for the limiter.
    async with Simulator() as sim:
        await engine(sim, concurrency=14, rate_limits={
            "anthropic": {"requests_per_minute": 600}}).process(sections(14))
    waits = [e for s in named(spans, "chat") for e in s.events
             if e.name == "dagengine.rate_limit_wait"]
    assert waits
    assert all((e.attributes or {})["dagengine.wait_seconds"] >= 0.001 for e in waits)
    assert max(float((e.attributes or {})["dagengine.wait_seconds"])  # type: ignore[arg-type]
               for e in waits) > 0.05


async def test_a_failed_call_has_error_type_and_an_error_status(
        spans: InMemorySpanExporter) -> None:
    async with Simulator(script=[400]) as sim:
        result = await engine(sim, concurrency=1, max_retries=0).process(sections(1))
    assert not result.sections[0].results["a"].ok
    [call] = named(spans, "chat")
    assert (call.attributes or {})["error.type"] == "400"
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "HTTP 400"


async def test_a_fallback_is_an_event_and_the_span_names_the_provider_that_answered(
        spans: InMemorySpanExporter) -> None:
    class WithFallback(SimplePlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "anthropic", "options": {"model": MODEL, "max_tokens": 50},
                    "fallbacks": [{"provider": "openai",
                                   "options": {"model": "gpt-4o-mini", "max_tokens": 50}}]}

    async with Simulator(script=[500]) as sim:
        providers = {"anthropic": {"api_key": KEY, "base_url": sim.base_url},
                     "openai": {"api_key": KEY, "base_url": sim.openai_base_url}}
        await engine(sim, WithFallback(["a"]), providers=providers, concurrency=1,
                     max_retries=0).process(sections(1))
    [call] = named(spans, "chat")
    [fallback] = [e for e in call.events if e.name == "dagengine.fallback"]
    assert dict(fallback.attributes or {}) == {"dagengine.from_provider": "anthropic",
                                               "dagengine.to_provider": "openai"}
    assert call.name == "chat gpt-4o-mini"
    assert (call.attributes or {})["gen_ai.provider.name"] == "openai"


async def test_no_span_holds_a_key_or_the_prompt_unless_content_capture_is_asked_for(
        spans: InMemorySpanExporter) -> None:
    async with Simulator(script=[429, 500, "schema", 400], error_429_retry_after=0.01) as sim:
        await engine(sim, concurrency=1, max_retries=2).process(sections(3))
        shown = every_text(spans)
        assert "dagengine.retry" in shown and '"error.type": "400"' in shown
        assert KEY not in shown and PROMPT_WORD.lower() not in shown.lower()
        assert "gen_ai.input.messages" not in shown and "gen_ai.output.messages" not in shown

        spans.clear()
        result = await engine(sim, tracing={"capture_content": True}).process(sections(1))
    [call] = named(spans, "chat")
    attributes = call.attributes or {}
    [message] = json.loads(str(attributes["gen_ai.input.messages"]))
    assert message["role"] == "user" and PROMPT_WORD in message["parts"][0]["content"]
    [answer] = json.loads(str(attributes["gen_ai.output.messages"]))
    assert json.loads(answer["parts"][0]["content"]) == result.sections[0].results["a"].data
    assert KEY not in every_text(spans)


async def test_the_content_switch_of_the_genai_instrumentations_turns_capture_on(
        spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    async with Simulator() as sim:
        await engine(sim).process(sections(1))
    [call] = named(spans, "chat")
    assert PROMPT_WORD in str((call.attributes or {})["gen_ai.input.messages"])


async def test_a_given_tracer_provider_gets_the_spans_instead_of_the_global_one(
        spans: InMemorySpanExporter) -> None:
    own = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(own))
    async with Simulator() as sim:
        await engine(sim, tracing={"tracer_provider": provider}).process(sections(2))
    assert len(named(own, "chat")) == 2 and len(named(own, "dagengine.run")) == 1
    assert spans.get_finished_spans() == ()


async def test_the_anthropic_sdk_keeps_its_own_spans_which_nest_under_the_call_span(
        spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_OPEN_TELEMETRY", raising=False)
    async with Simulator() as sim:
        providers = {"anthropic": {"api_key": KEY, "base_url": sim.base_url,
                                   "transport": "sdk"}}
        eng = engine(sim, providers=providers)
        await eng.process(sections(1))
        await eng.close()
        [call] = named(spans, "chat ")
        own = [s for s in spans.get_finished_spans()
               if s.instrumentation_scope is not None
               and s.instrumentation_scope.name != "dagengine"]
        assert own, "the SDK made no span: its open_telemetry switch is overridden"
        assert {parent_of(s) for s in own if parent_of(s) not in
                {o.context.span_id for o in own}} == {call.context.span_id}
        assert KEY not in every_text(spans)

        # ...and its own switch turns them off.
        spans.clear()
        monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
        eng = engine(sim, providers=providers)
        await eng.process(sections(1))
        await eng.close()
    assert {s.instrumentation_scope.name for s in spans.get_finished_spans()
            if s.instrumentation_scope is not None} == {"dagengine"}


def test_bad_tracing_options_are_refused_saying_what_to_pass() -> None:
    plugin = SimplePlugin(["a"])
    with pytest.raises(ConfigurationError, match="tracing has no option 'capture'"):
        DagEngine(plugin, tracing={"capture": True})
    with pytest.raises(ConfigurationError, match=r"capture_content'\] must be True or False"):
        DagEngine(plugin, tracing={"capture_content": "yes"})
    with pytest.raises(ConfigurationError, match="must be an OpenTelemetry TracerProvider"):
        DagEngine(plugin, tracing={"tracer_provider": object()})
    with pytest.raises(ConfigurationError, match="tracing must be True, False or a dict"):
        DagEngine(plugin, tracing="on")


def test_with_tracing_off_nothing_of_opentelemetry_is_imported(tmp_path: Path) -> None:
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from conftest import SimplePlugin
from dagengine import DagEngine
from dagengine.simulator import Simulator

async def main():
    async with Simulator(script=[500]) as sim:
        engine = DagEngine(SimplePlugin(["a"], provider="anthropic",
                                        options={{"model": {MODEL!r}, "max_tokens": 20}}),
                           providers={{"anthropic": {{"api_key": "k", "base_url": sim.base_url}}}},
                           execution={{"retry_delay": 0.001}}, store={str(tmp_path / 'r.db')!r})
        result = await engine.process(["x", "y"])
        assert all(s.results["a"].ok for s in result.sections)

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
print("clean")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


async def test_a_run_inside_a_span_of_the_callers_is_a_child_of_it(
        spans: InMemorySpanExporter) -> None:
    async with Simulator() as sim:
        with trace.get_tracer("caller").start_as_current_span("nightly job") as job:
            await engine(sim).process(sections(1))
    [run] = named(spans, "dagengine.run")
    assert parent_of(run) == job.get_span_context().span_id


async def test_a_cancelled_run_ends_every_span_it_started(
        spans: InMemorySpanExporter) -> None:
    class Hangs(BaseProvider):
        name = "hangs"

        def __init__(self) -> None:
            self.calls = 0
            self.called = asyncio.Event()  # both calls are in flight

        async def execute(self, request: ProviderRequest) -> ProviderResponse:
            self.calls += 1
            if self.calls == 2:
                self.called.set()
            await asyncio.Event().wait()  # never answers
            raise AssertionError("unreachable")

    provider = Hangs()
    eng = DagEngine(SimplePlugin(["a"], provider="hangs"), providers=[provider], store=False,
                    tracing=True)
    run = asyncio.create_task(eng.process(sections(2)))
    await provider.called.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    calls = named(spans, "chat")
    assert len(calls) == 2
    assert all((s.attributes or {})["error.type"] == "cancelled" for s in calls)
    assert len(named(spans, "dimension a")) == 1 and len(named(spans, "dagengine.run")) == 1
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached here
