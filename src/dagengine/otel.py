"""OpenTelemetry spans of a run, with the GenAI semantic conventions (`dagengine[otel]`).

Turned on by `DagEngine(..., tracing=True)` (see dagengine/_tracing.py for the options);
this module is imported only then. `RunTracer` is an observer of the run:

    dagengine.run                 one per process() call
      dimension {name}            one per dimension, from its first item to its last
        chat {model}              one per call (its attempts, retries and fallbacks):
                                  gen_ai.* attributes, token usage, error.type; events
                                  for each retry and each wait for the rate limiter

A call's span is the current span while the call runs, so spans the provider's SDK or an
HTTP instrumentation makes nest under it. Prompt and answer are on the span only with
capture_content; keys never are (dagengine's own error causes are recorded, not provider
messages).
"""

from __future__ import annotations

import json
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import _logs
from ._version import __version__
from .errors import ProviderError
from .plugin import Attempt, Observer, Retry

if TYPE_CHECKING:
    from ._run import Run
    from .graph import Plan
    from .types import DimensionResult

SCOPE = "dagengine"
RATE_LIMIT_WAIT_EVENT_SECONDS = 0.001  # shorter waits are the limiter's own bookkeeping

# gen_ai.provider.name (and the older gen_ai.system) of the built-in provider kinds.
_SYSTEMS = {"anthropic": "anthropic", "openai": "openai", "gemini": "gcp.gemini"}


@dataclass(slots=True)
class _CallSpan:
    span: Span
    token: Token[otel_context.Context]
    provider: str | None = None  # of the last attempt
    requested_model: str | None = None
    prompt: Any = None
    attempts: list[str] = field(default_factory=list)


_current: ContextVar[_CallSpan | None] = ContextVar("dagengine_call_span", default=None)


class RunTracer(Observer):
    """The spans of one run."""

    def __init__(self, run: Run, *, capture_content: bool = False,
                 tracer_provider: Any = None) -> None:
        """`tracer_provider`: None for the global one."""
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        self._capture = capture_content
        self._run = run
        self._run_span: Span | None = None
        self._dimensions: dict[str, Span] = {}
        self._calls = self._failed = 0
        self._input_tokens = self._output_tokens = 0
        self._cost = 0.0

    # -- the run and its dimensions ------------------------------------------------------

    def run_started(self, plan: Plan) -> None:
        self._run_span = self._tracer.start_span("dagengine.run", attributes={
            "dagengine.process_id": self._run.process_id,
            "dagengine.plugin": self._run.plugin.name,
            "dagengine.dimensions": list(plan.order),
        })

    def dimension_started(self, dimension: str) -> None:
        self._dimensions[dimension] = self._tracer.start_span(
            f"dimension {dimension}", context=self._in(self._run_span), attributes={
                "dagengine.dimension": dimension,
                "dagengine.dimension.global": self._run.plan.is_global(dimension),
            })

    def dimension_done(self, dimension: str, summary: DimensionResult) -> None:
        span = self._dimensions.pop(dimension, None)
        if span is not None:
            span.end()

    def run_done(self) -> None:
        for span in self._dimensions.values():  # a run that stopped early
            span.end()
        self._dimensions.clear()
        if self._run_span is None:
            return
        self._run_span.set_attributes({
            "dagengine.calls": self._calls, "dagengine.failed_calls": self._failed,
            "gen_ai.usage.input_tokens": self._input_tokens,
            "gen_ai.usage.output_tokens": self._output_tokens,
            "dagengine.cost_usd": self._cost,
        })
        self._run_span.end()

    # -- one call ------------------------------------------------------------------------

    def call_started(self, dimension: str, section_index: int | None) -> None:
        parent = self._dimensions.get(dimension, self._run_span)
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat",
                                      "dagengine.dimension": dimension}
        if section_index is not None:
            attributes["dagengine.section_index"] = section_index
        span = self._tracer.start_span("chat", context=self._in(parent), kind=SpanKind.CLIENT,
                                       attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        _current.set(_CallSpan(span, token))

    def attempt_done(self, attempt: Attempt) -> None:
        call = _current.get()
        if call is None:
            return
        if call.provider is not None and attempt.provider != call.provider:
            call.span.add_event("dagengine.fallback", {
                "dagengine.from_provider": call.provider,
                "dagengine.to_provider": attempt.provider}, timestamp=_ns(attempt.started_at))
        call.provider = attempt.provider
        call.requested_model = attempt.requested_model or attempt.model
        call.prompt = attempt.prompt
        if attempt.waited >= RATE_LIMIT_WAIT_EVENT_SECONDS:
            call.span.add_event("dagengine.rate_limit_wait", {
                "dagengine.attempt": attempt.number, "dagengine.provider": attempt.provider,
                "dagengine.wait_seconds": attempt.waited}, timestamp=_ns(attempt.sent_at))

    def retrying(self, retry: Retry) -> None:
        call = _current.get()
        if call is None:
            return
        attributes: dict[str, Any] = {
            "dagengine.attempt": retry.attempt, "dagengine.max_attempts": retry.max_attempts,
            "dagengine.provider": retry.provider, "dagengine.wait_seconds": retry.wait,
            "error.type": _error_type(retry.error), "dagengine.cause": _logs.cause(retry.error),
        }
        if retry.model:
            attributes["gen_ai.request.model"] = retry.model
        call.span.add_event("dagengine.retry", attributes)

    def call_done(self, dimension: str, section_index: int | None,
                  result: DimensionResult | None, error: BaseException | None) -> None:
        call = _current.get()
        if call is None:
            return
        _current.set(None)
        otel_context.detach(call.token)
        span = call.span
        try:
            self._finish(call, result, error)
        finally:
            span.end()

    def _finish(self, call: _CallSpan, result: DimensionResult | None,
                error: BaseException | None) -> None:
        span, info = call.span, result.call if result is not None else None
        self._calls += 1
        provider = info.provider if info is not None and info.provider else call.provider
        model = call.requested_model or (info.model if info is not None else None)
        attributes: dict[str, Any] = {}
        if provider:
            system = self._system(provider)
            attributes["gen_ai.provider.name"] = attributes["gen_ai.system"] = system
            attributes["dagengine.provider"] = provider
        if model:
            attributes["gen_ai.request.model"] = model
            span.update_name(f"chat {model}")
        if info is not None:
            tokens = info.tokens
            attributes.update({
                "gen_ai.usage.input_tokens": tokens.input_tokens,
                "gen_ai.usage.output_tokens": tokens.output_tokens,
                "dagengine.attempts": info.attempts, "dagengine.cost_usd": info.cost,
                "dagengine.cached": info.cached,
            })
            if tokens.cache_read_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = tokens.cache_read_tokens
            if tokens.cache_write_tokens:
                attributes["gen_ai.usage.cache_creation.input_tokens"] = tokens.cache_write_tokens
            if info.model:
                attributes["gen_ai.response.model"] = info.model
            if info.finish_reason:
                attributes["gen_ai.response.finish_reasons"] = [info.finish_reason]
            self._input_tokens += tokens.input_tokens
            self._output_tokens += tokens.output_tokens
            self._cost += info.cost
        if self._capture:
            if call.prompt is not None:
                attributes["gen_ai.input.messages"] = _input_messages(call.prompt)
            if result is not None and result.ok:
                attributes["gen_ai.output.messages"] = _output_messages(
                    result.data, info.finish_reason if info is not None else None)
        span.set_attributes(attributes)
        if result is None:  # cancelled
            span.set_attribute("error.type", "cancelled")
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
        elif result.error is not None:
            self._failed += 1
            span.set_attribute("error.type", _error_type(error) if error else "_OTHER")
            span.set_status(Status(StatusCode.ERROR, _logs.cause(error) if error else None))

    def _system(self, provider: str) -> str:
        registry = self._run.registry
        kind = getattr(registry.get(provider), "kind", None) if registry.has(provider) else None
        return _SYSTEMS.get(kind or "", kind or provider)

    @staticmethod
    def _in(span: Span | None) -> otel_context.Context | None:
        return trace.set_span_in_context(span) if span is not None else None


def _ns(unix_seconds: float) -> int:
    return int(unix_seconds * 1e9)


def _error_type(error: BaseException) -> str:
    """error.type: the HTTP status of a provider's refusal, else the error's class."""
    if isinstance(error, ProviderError) and error.status_code is not None and (
            type(error) is ProviderError):
        return str(error.status_code)
    return type(error).__name__


def _input_messages(prompt: Any) -> str:
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [m for m in prompt if isinstance(m, dict)]
    return json.dumps([
        {"role": m.get("role", "user"), "parts": [{"type": "text", "content": _text(
            m.get("content"))}]} for m in messages])


def _output_messages(data: Any, finish_reason: str | None) -> str:
    message: dict[str, Any] = {"role": "assistant",
                               "parts": [{"type": "text", "content": _text(data)}]}
    if finish_reason:
        message["finish_reason"] = finish_reason
    return json.dumps([message])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


__all__ = ["RunTracer"]
