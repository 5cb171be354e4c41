"""One call: the prompt, then the provider chain, within the dimension's time limit.

A call is a stack of layers, each handling one concern (as httpx's `send` stack):

    send                       prompt and provider selection; the time limit
    _send_handling_fallbacks   the selection's providers in turn, and handle_provider_fallback
    _send_handling_retries     attempts on one provider: backoff, handle_retry, re-asking
    _send_one_attempt          the response cache, the rate-limit permit, the provider,
                               output validation, after_provider_execute

`CallRunner` is shared by a run's calls; each call's own state is a `_Call`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from . import _logs, _permitted, _pool
from ._batching import Batcher, batch_dimensions
from ._deadlines import time_limit
from ._logs import call_log
from ._run import Run
from ._structured import request_schema
from .errors import (
    ConfigurationError,
    DagEngineError,
    DimensionTimeoutError,
    EmptyResponseError,
    OutputValidationError,
    ProviderError,
    UnknownProviderError,
)
from .parsing import reask, validated
from .plugin import (
    Attempt,
    HookContext,
    Observers,
    PromptContext,
    Retry,
    call_required,
    with_arity,
)
from .providers.base import BaseProvider
from .retry import backoff_delay, is_retryable
from .types import (
    CallInfo,
    Dimension,
    DimensionResult,
    FallbackDecision,
    Prompt,
    ProviderFallback,
    ProviderRequest,
    ProviderResponse,
    ProviderSelection,
    RetryDecision,
    Section,
    TokenUsage,
    to_prompt,
)


class Slot:
    """The concurrency slot a work item holds; given back while the item waits to retry."""

    __slots__ = ("_semaphore", "held")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore = semaphore
        self.held = False

    async def acquire(self) -> None:
        await self._semaphore.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._semaphore.release()

    async def pause(self, seconds: float) -> None:
        self.release()
        if seconds > 0:
            await asyncio.sleep(seconds)
        await self.acquire()


@dataclass(slots=True)
class CallSite:
    """Where a call belongs: one dimension over one section (or over all, for a global one)."""

    dimension: Dimension
    sections: list[Section]
    section_index: int | None
    total_sections: int
    dependencies: dict[str, DimensionResult]

    @property
    def name(self) -> str:
        return self.dimension.name

    @property
    def is_global(self) -> bool:
        return self.dimension.is_global

    def context(self, process_id: str, **fields: Any) -> HookContext:
        """The hook context of this call, with `fields` added."""
        return HookContext(
            process_id=process_id, dimension=self.name, is_global=self.is_global,
            sections=self.sections, section=None if self.is_global else self.sections[0],
            section_index=self.section_index, total_sections=self.total_sections,
            dependencies=self.dependencies, **fields,
        )


@dataclass(slots=True)
class Usage:
    """What a call's attempts so far used: tokens and cost add up over every attempt,
    including those whose answer failed validation."""

    tokens: TokenUsage | None = None  # the provider's own object while one attempt counted
    cost: float = 0.0
    attempts: int = 0
    model: str | None = None
    provider: str | None = None
    target: str | None = None
    hedged: bool = False
    mode: str = "online"  # "batch" once an attempt was answered through a batch API

    def add(self, response: ProviderResponse, run: Run, model: str | None, *,
            batch: bool = False) -> None:
        tokens = _tokens(response)
        answered_model = response.metadata.get("model") or model
        if tokens is not None:
            self.tokens = tokens if self.tokens is None else self.tokens + tokens
            self.cost += run.pricing.cost(answered_model, tokens, batch=batch)
        self.model = answered_model
        if batch:
            self.mode = "batch"

    def info(self, started: float) -> CallInfo:
        tokens = self.tokens if self.tokens is not None else TokenUsage()
        return CallInfo(model=self.model, provider=self.provider, tokens=tokens,
                        cost=self.cost, attempts=self.attempts,
                        duration=time.monotonic() - started, target=self.target,
                        hedged=self.hedged, mode=self.mode)

    def routed(self, sent: _pool.Sent) -> None:
        """A pool's or a hedge's request came back: its target, the cancelled duplicate's
        cost."""
        self.target = sent.target
        if sent.hedged:
            self.hedged = True
            self.tokens = (sent.lost_tokens if self.tokens is None
                           else self.tokens + sent.lost_tokens)
            self.cost += sent.lost_cost


class CallRunner:
    """Runs one run's calls; shared by all of its work items."""

    def __init__(self, run: Run, observers: Observers) -> None:
        self.run = run
        self.observers = observers
        self.select_provider = with_arity(run.plugin.select_provider, 3)
        # Batch mode (see _batching): the scheduler enters it around the run's calls.
        self.batcher = (Batcher(run, observers)
                        if batch_dimensions(run.plan.dimensions.values(), run.config.mode)
                        else None)

    def in_batch(self, dimension: Dimension) -> bool:
        return self.batcher is not None and self.batcher.covers(dimension)

    def time_limit(self, site: CallSite) -> float | None:
        """The call's time limit: `timeout` online; in batch mode (a batch may take a day)
        only an explicit `dimension_timeouts` entry."""
        config = self.run.config
        if self.in_batch(site.dimension):
            return config.dimension_timeouts.get(site.name)
        return config.timeout_for(site.name)

    async def execute(
        self, site: CallSite, slot: Slot
    ) -> tuple[DimensionResult, BaseException | None]:
        """The result of one call under its dimension's time limit and, if it failed, the error
        behind it."""
        if not self.observers.has("call_started"):
            return await _Call(self, site, slot).send()
        await self.observers.call("call_started", site.name, site.section_index)
        result: DimensionResult | None = None
        error: BaseException | None = None
        try:
            result, error = await _Call(self, site, slot).send()
        finally:  # cancelled too: an observer's span of the call must end
            await self.observers.call("call_done", site.name, site.section_index, result, error)
        return result, error


class _Call:
    """One call in flight: where it belongs, what it sends next, what it has used so far."""

    __slots__ = ("attempt", "backoff_step", "error", "history", "input", "max_attempts",
                 "observers", "options", "provider", "run", "runner", "sent_at", "site", "slot",
                 "started", "usage", "waited")

    def __init__(self, runner: CallRunner, site: CallSite, slot: Slot) -> None:
        self.runner = runner
        self.run = runner.run
        self.observers = runner.observers
        self.site = site
        self.slot = slot
        self.started = time.monotonic()
        self.usage = Usage()
        self.history: list[dict[str, Any]] = []
        # What the current provider's next attempt sends, and where it stands.
        self.input: Prompt = ""
        self.options: dict[str, Any] = {}
        self.provider: BaseProvider | None = None
        self.attempt = 0
        self.max_attempts = 0
        self.backoff_step = 0  # failures on this provider that came without a wait
        self.sent_at: float | None = None  # Unix time this attempt's request left the limiter
        self.waited = 0.0  # ...after waiting this long in it
        self.error: BaseException | None = None  # what ended the last provider's attempts

    async def send(self) -> tuple[DimensionResult, BaseException | None]:
        """The call's result within its dimension's time limit, and the error behind it."""
        limit = self.runner.time_limit(self.site)
        try:
            if limit is None:
                return await self._send_handling_fallbacks()
            async with time_limit(limit):
                return await self._send_handling_fallbacks()
        except TimeoutError:
            error = DimensionTimeoutError(self.site.name, limit or 0.0)
            result = DimensionResult(
                error=str(error), metadata={"duration": time.monotonic() - self.started}
            )
            return result, error

    async def _send_handling_fallbacks(self) -> tuple[DimensionResult, BaseException | None]:
        try:
            prompt, selection = await self._prompt_and_selection()
        except DagEngineError as exc:
            return DimensionResult(error=str(exc), metadata={"duration": 0.0}), exc
        # The selection itself heads the chain: it has what a first entry needs.
        chain: list[ProviderSelection | ProviderFallback] = [selection, *selection.fallbacks]
        for position, entry in enumerate(chain):
            self.input, self.options = prompt, dict(entry.options)
            if isinstance(entry, ProviderFallback):
                decision = await self._fallback_decision(entry, chain[position - 1])
                if not decision.should_fallback:
                    continue
                _logs.fallback(self.site.name, self.site.section_index,
                               chain[position - 1].provider, entry.provider, self.error)
                # A changed request carries on to the providers after this one.
                prompt, self.options = decision.changed_request(prompt, self.options)
                self.input = prompt
                wait = decision.wait(entry.retry_after)
                if wait:
                    await self.slot.pause(wait)
            answer = await self._send_handling_retries(entry.provider)
            if isinstance(answer, DimensionResult):
                return answer, None
            self.error = answer
        error = self.error or ProviderError("no provider was tried")
        return await self._failed(error), error

    async def _prompt_and_selection(self) -> tuple[Prompt, ProviderSelection]:
        site = self.site
        prompt = to_prompt(await call_required("create_prompt", self.run.plugin.create_prompt,
                                               PromptContext(
            sections=site.sections, dimension=site.name, dependencies=site.dependencies,
            is_global=site.is_global, section_index=site.section_index,
            process_id=self.run.process_id,
        )), site.name)
        selection = ProviderSelection.from_value(await call_required(
            "select_provider", self.runner.select_provider, site.name, site.sections,
            {"is_global": site.is_global, "section_index": site.section_index,
             "total_sections": site.total_sections},
        ), dimension=site.name)
        return prompt, selection

    async def _fallback_decision(self, entry: ProviderFallback,
                                 failed: ProviderSelection | ProviderFallback) -> FallbackDecision:
        decision: FallbackDecision = await self.run.hooks.call(
            "handle_provider_fallback", self._context(
                provider=entry.provider, provider_options=self.options, error=self.error,
                previous_attempts=self.history, extra={"failed_provider": failed.provider}),
            FallbackDecision(), FallbackDecision.from_value)
        return decision

    async def _send_handling_retries(self, provider_name: str) -> DimensionResult | BaseException:
        """Attempts on one provider: a result, or the error that ended them."""
        try:
            self.provider = provider = self.run.registry.get(provider_name)
        except UnknownProviderError as exc:
            self.history.append({"provider": provider_name, "attempt": 0, "error": str(exc)})
            return exc
        self.max_attempts = 1 if provider.handles_retries else self.run.config.max_retries + 1
        self.attempt, self.backoff_step = 1, 0
        while True:
            request = await self._request()
            answer = await self._timed_attempt(request)
            if isinstance(answer, DimensionResult):
                return answer
            error = answer
            self.history.append({
                "provider": self.provider_name, "attempt": self.attempt, "error": str(error),
                "status_code": getattr(error, "status_code", None),
            })
            if (isinstance(error, ProviderError) and error.status_code == 429
                    and call_log.isEnabledFor(logging.DEBUG)):
                _logs.rate_limited(self.site.name, self.site.section_index, self.provider_name,
                                   self.options.get("model"), error)
            if not is_retryable(error) or self.attempt >= self.max_attempts:
                return error
            wait = await self._retry(request, error)
            if isinstance(wait, BaseException):
                return wait
            await self.observers.call("retry", self.site.name, error)
            if self.observers.has("retrying") or call_log.isEnabledFor(logging.INFO):
                await self._retrying(error, wait)
            await self.slot.pause(wait)
            self.attempt += 1

    async def _retrying(self, error: BaseException, wait: float) -> None:
        retry = Retry(dimension=self.site.name, section_index=self.site.section_index,
                      provider=self.provider_name, model=self.options.get("model"),
                      attempt=self.attempt, max_attempts=self.max_attempts, wait=wait,
                      error=error)
        _logs.retry(retry)
        await self.observers.call("retrying", retry)

    async def _retry(self, request: ProviderRequest,
                     error: BaseException) -> float | BaseException:
        """The backoff, and what handle_retry decides, applied: the wait before the next
        attempt, or the error that ends the attempts on this provider."""
        retry_after = getattr(error, "retry_after", None)
        if not retry_after:
            # Only failures the provider gave no wait for climb the exponential ladder:
            # a 500 after two paced 429s is a first server error, not a third.
            self.backoff_step += 1
        config = self.run.config
        delay = backoff_delay(self.backoff_step, config.retry_delay, config.max_retry_delay,
                              retry_after, self.run.rng)
        if self.run.hooks.has("handle_retry"):
            decision: RetryDecision = await self.run.hooks.call("handle_retry", self._context(
                request=request, provider=self.provider_name, provider_options=self.options,
                error=error, attempt=self.attempt, max_attempts=self.max_attempts,
                previous_attempts=self.history), RetryDecision(), RetryDecision.from_value)
            if not decision.should_retry:
                return error
            if decision.delay is not None:
                delay = max(decision.delay, retry_after or 0)
            self.input, self.options = decision.changed_request(self.input, self.options)
            if decision.modified_provider is not None:
                try:
                    self.provider = self.run.registry.get(decision.modified_provider.provider)
                except UnknownProviderError as exc:
                    return exc
                self.options = {**self.options, **decision.modified_provider.options}
        if isinstance(error, OutputValidationError):
            self.input = reask(self.input, error, self.site.dimension.output_schema)
            _logs.reask(self.site.name, self.site.section_index, self.provider_name,
                        self.attempt, self.max_attempts)
        return delay

    async def _request(self) -> ProviderRequest:
        """The next attempt's request, as before_provider_execute leaves it."""
        site, schema = self.site, self.site.dimension.output_schema
        request = ProviderRequest(
            input=self.input, options=self.options, dimension=site.name,
            is_global=site.is_global,
            metadata={"section_index": site.section_index, "total_sections": site.total_sections},
            output_schema=request_schema(schema) if schema is not None else None,
        )
        if self.run.hooks.has("before_provider_execute"):
            current = request
            request = await self.run.hooks.call(
                "before_provider_execute", self._context(
                    request=request, provider=self.provider_name, provider_options=self.options,
                    attempt=self.attempt, max_attempts=self.max_attempts),
                request, lambda value: ProviderRequest.from_value(value, current))
        self.usage.attempts += 1
        self.usage.provider = self.provider_name
        return request

    async def _timed_attempt(self, request: ProviderRequest) -> DimensionResult | Exception:
        """One attempt: its result, or the error it ended in; the observers hear of it when
        its request was sent."""
        began, self.sent_at = time.time(), None
        try:
            answer = await self._send_one_attempt(request)
        except asyncio.CancelledError as exc:
            await self._attempt_done(began, None, exc)
            raise
        except Exception as exc:
            error = _as_call_error(exc, self.provider_name)
            await self._attempt_done(began, None, error)
            return error
        if self.observers.has("attempt_done"):  # no coroutine per call for nobody
            await self._attempt_done(began, answer, None)
        return answer

    async def _attempt_done(self, began: float, answer: DimensionResult | None,
                            error: BaseException | None) -> None:
        """Tell the observers of an attempt whose request was sent (a cache hit sent none)."""
        if self.sent_at is None or not self.observers.has("attempt_done"):
            return
        call = answer.call if answer is not None else None
        await self.observers.call("attempt_done", Attempt(
            dimension=self.site.name, section_index=self.site.section_index,
            number=self.usage.attempts, provider=self.usage.provider or self.provider_name,
            model=call.model if call is not None else self.options.get("model"),
            started_at=began, sent_at=self.sent_at, ended_at=time.time(),
            status=call.status_code if call is not None else None, error=error,
            requested_model=self.options.get("model"), waited=self.waited, prompt=self.input))

    async def _send_one_attempt(self, request: ProviderRequest) -> DimensionResult:
        """One attempt that succeeds or raises: cache or provider, validation, the after hook."""
        name, cache = self.provider_name, self.run.cache
        assert self.provider is not None  # set by _send_handling_retries before any attempt
        cached = scope = None
        if cache is not None:  # the scope is a digest: not worth making for no cache
            scope = self.provider.cache_name
            cached = await cache.lookup(scope, request)
        if cached is not None and _is_empty(cached.data):
            cached = None  # stored before empty answers were refused: ask again
        if cached is not None and call_log.isEnabledFor(logging.DEBUG):
            _logs.cache_hit(self.site.name, self.site.section_index, name)
        response = cached or await self._send_to_provider(request)
        if _is_empty(response.data):
            raise EmptyResponseError(name, response.metadata.get("finish_reason"))
        data, parsed = validated(self.site.dimension, response.data)
        if cache is not None and cached is None:
            assert scope is not None
            await cache.store(scope, request, response)
        if self.run.hooks.has("after_provider_execute"):
            answered = response.model_copy(update={"data": data})
            response = await self.run.hooks.call(
                "after_provider_execute", self._context(
                    request=request, response=answered, provider=name,
                    provider_options=self.options, attempt=self.attempt,
                    duration=time.monotonic() - self.started),
                answered, lambda value: ProviderResponse.from_value(value, answered))
            data = response.data
            if parsed is not None and data != parsed.model_dump(mode="json"):
                parsed = None  # the hook changed the answer: the scheduler rebuilds it from data
        info = self._answered(response, cached, self.options.get("model"))
        return DimensionResult(data=data, metadata=_metadata(info), call=info, parsed=parsed)

    async def _send_to_provider(self, request: ProviderRequest) -> ProviderResponse:
        """The provider's answer to `request`, within the rate limits."""
        provider, dimension = self.provider, self.site.name
        assert provider is not None  # set by _send_handling_retries before any attempt
        if self.runner.in_batch(self.site.dimension):
            return await self._send_to_batch(provider, request)
        model = request.options.get("model")
        if _pool.routes(self.run, provider):
            sent = await _pool.send(self.run, self.observers, provider, request,
                                    self.site.dimension, _estimate_tokens(request),
                                    self._mark_sent)
            self.usage.routed(sent)
            self.usage.add(sent.response, self.run, model)
            return sent.response
        group = self.run.limiter.group(provider.name, model, ramp=not provider.handles_retries)
        asked = time.time()
        permit = await group.acquire(_estimate_tokens(request))
        self.sent_at = time.time()
        self.waited = self.sent_at - asked
        await self.observers.call("request_sent", dimension, provider.name)
        response = await _permitted.execute(provider, request, permit, self.observers,
                                            dimension, provider.name)
        self.usage.add(response, self.run, model)
        return response

    async def _send_to_batch(self, provider: BaseProvider,
                             request: ProviderRequest) -> ProviderResponse:
        """The answer to `request` from one of the provider's batches (see _batching): no
        rate-limit permit, and no concurrency slot held while the batch runs."""
        batcher = self.runner.batcher
        assert batcher is not None
        self.sent_at = time.time()
        self.slot.release()
        try:
            response = await batcher.send(provider, request, self.site.name,
                                          self.site.section_index, self.usage.attempts)
        except Exception:
            await self.slot.acquire()  # the call goes on (retry, fallback) with its slot
            raise
        await self.slot.acquire()
        if response.error is not None:
            meta = response.metadata
            raise ProviderError(response.error, meta.get("status_code"),
                                meta.get("retry_after"), provider=provider.name)
        self.usage.add(response, self.run, request.options.get("model"), batch=True)
        return response

    def _answered(self, response: ProviderResponse, cached: ProviderResponse | None,
                  model: str | None) -> CallInfo:
        """The call information of an answer: a cache hit costs nothing, and what it would
        have cost is reported as saved."""
        info = self.usage.info(self.started)
        if cached is not None:
            tokens = _tokens(cached)
            info.model = cached.metadata.get("model") or model
            info.tokens = tokens or TokenUsage()
            info.cost = 0.0
            info.cached = True
            info.saved_cost = self.run.pricing.cost(info.model, tokens)
        finish_reason, status_code = (response.metadata.get(key)
                                      for key in ("finish_reason", "status_code"))
        info.finish_reason = finish_reason if isinstance(finish_reason, str) else None
        info.status_code = status_code if type(status_code) is int else None
        return info

    async def _failed(self, error: BaseException) -> DimensionResult:
        """The result of a call every provider failed: handle_dimension_failure's, or the
        last error."""
        hooks = self.run.hooks
        if hooks.has("handle_dimension_failure"):
            replacement = await hooks.call("handle_dimension_failure", self._context(
                error=error, previous_attempts=self.history,
                duration=time.monotonic() - self.started), None)
            if replacement is not None:
                result = (replacement if isinstance(replacement, DimensionResult)
                          else DimensionResult.model_validate(replacement))
                result.metadata.setdefault("recovered_from", str(error))
                if result.call is None:
                    result.call = CallInfo.from_metadata(result.metadata)
                return result
        message = str(error)
        if self.usage.attempts > 1:
            message += f" (after {self.usage.attempts} attempts)"
        info = self.usage.info(self.started)
        return DimensionResult(error=message, metadata=_metadata(info), call=info)

    def _mark_sent(self) -> None:
        """A routed request left the limiter; after the attempt's first, one a pool moved
        on to after a refusal, which counts as an attempt of its own."""
        if self.sent_at is None:
            self.sent_at = time.time()
        else:
            self.usage.attempts += 1

    @property
    def provider_name(self) -> str:
        return self.provider.name if self.provider is not None else ""

    def _context(self, **fields: Any) -> HookContext:
        return self.site.context(self.run.process_id, **fields)


def _metadata(info: CallInfo) -> dict[str, Any]:
    """The documented metadata keys of a call, kept beside `DimensionResult.call` for code
    that reads them."""
    metadata: dict[str, Any] = {
        "model": info.model, "provider": info.provider, "tokens": info.tokens,
        "cost": info.cost, "cached": info.cached, "attempts": info.attempts,
        "duration": info.duration,
    }
    if info.mode != "online":
        metadata["mode"] = info.mode
    if info.cached:
        metadata["saved_cost"] = info.saved_cost
    if info.finish_reason is not None:
        metadata["finish_reason"] = info.finish_reason
    if info.status_code is not None:
        metadata["status_code"] = info.status_code
    if info.target is not None:
        metadata["target"] = info.target
    if info.hedged:
        metadata["hedged"] = True
    return metadata


def _tokens(response: ProviderResponse) -> TokenUsage | None:
    """The tokens a provider reported; its metadata is the provider's own, so checked."""
    tokens = response.metadata.get("tokens")
    return tokens if isinstance(tokens, TokenUsage) else None



def _is_empty(data: Any) -> bool:
    """An answer with nothing in it: no data, or text that is empty or only whitespace.

    Refused for every dimension, plain text or JSON: no analysis has a use for it, and a
    model that answered nothing (an overloaded backend, a filter, max_tokens spent on
    thinking) often answers the same request the next time."""
    return data is None or (isinstance(data, str) and not data.strip())


def _estimate_tokens(request: ProviderRequest) -> int:
    text = request.input
    chars = len(text) if isinstance(text, str) else sum(len(str(m.get("content", "")))
                                                       for m in text)
    return chars // 4 + int(request.options.get("max_tokens") or 1024)


def _as_call_error(exc: Exception, provider: str) -> Exception:
    """What provider code raised, as the engine's error (a foreign one is not retried)."""
    if isinstance(exc, (ProviderError, OutputValidationError, ConfigurationError)):
        return exc
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return ProviderError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider)
    return ProviderError(f"{provider}: provider raised {type(exc).__name__}: {exc}",
                         provider=provider, retryable=False)
