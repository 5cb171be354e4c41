"""One call: prompt -> provider chain -> retries -> parse and validate -> DimensionResult,
within the dimension's time limit."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ._coerce import (
    as_call_error,
    as_prompt,
    as_request,
    as_response,
    as_selection,
    reask,
    unpack_request,
    validated,
)
from ._outcome import Outcome, cached_metadata
from ._site import CallSite, Slot
from ._structured import request_schema
from .config import ExecutionConfig
from .cost import Pricing
from .errors import (
    DagEngineError,
    DimensionTimeoutError,
    EmptyResponseError,
    OutputValidationError,
    ProviderError,
    UnknownProviderError,
)
from .plugin import HookContext, Hooks, Plugin, PromptContext, call_required, with_arity
from .progress import ProgressTracker
from .providers.base import BaseProvider, ProviderRegistry
from .ratelimit import RateLimiter
from .retry import backoff_delay, is_retryable
from .types import (
    DimensionResult,
    ProviderFallback,
    ProviderRequest,
    ProviderResponse,
    ProviderSelection,
    TokenUsage,
)


class Caller:
    """Runs single calls for one run; shared by all of its work items."""

    def __init__(
        self,
        *,
        plugin: Plugin,
        hooks: Hooks,
        registry: ProviderRegistry,
        config: ExecutionConfig,
        limiter: RateLimiter,
        pricing: Pricing,
        progress: ProgressTracker,
        process_id: str,
        rng: random.Random | None = None,
    ) -> None:
        self.plugin = plugin
        self.hooks = hooks
        self.registry = registry
        self.config = config
        self.limiter = limiter
        self.pricing = pricing
        self.progress = progress
        self.process_id = process_id
        self.rng = rng or random.Random()
        # A store's response cache when the run has one: `await lookup(provider, request)`
        # -> ProviderResponse | None, and `await store(provider, request, response)`.
        self.cache: Any = None
        # The store's attempt recorder when the run has a store (StoredRun.record.attempt).
        self.on_attempt: Callable[..., None] | None = None
        self._select_provider = with_arity(plugin.select_provider, 3)

    async def execute(
        self, site: CallSite, slot: Slot
    ) -> tuple[DimensionResult, BaseException | None]:
        """The result of one call under its dimension's time limit and, if it failed, the error
        behind it."""
        started = time.monotonic()
        limit = self.config.timeout_for(site.name)
        try:
            if limit is None:
                return await self._call(site, slot)
            async with asyncio.timeout(limit):
                return await self._call(site, slot)
        except TimeoutError:
            error = DimensionTimeoutError(site.name, limit or 0.0)
            result = DimensionResult(
                error=str(error), metadata={"duration": time.monotonic() - started}
            )
            return result, error

    async def _call(
        self, site: CallSite, slot: Slot
    ) -> tuple[DimensionResult, BaseException | None]:
        started = time.monotonic()
        try:
            prompt = as_prompt(await call_required("create_prompt", self.plugin.create_prompt,
                                                PromptContext(
                sections=site.sections, dimension=site.name, dependencies=site.dependencies,
                is_global=site.is_global, section_index=site.section_index,
                process_id=self.process_id,
            )), site.name)
            selection = as_selection(await call_required(
                "select_provider", self._select_provider, site.name, site.sections,
                {"is_global": site.is_global, "section_index": site.section_index,
                 "total_sections": site.total_sections},
            ), dimension=site.name)
        except DagEngineError as error:
            return DimensionResult(error=str(error), metadata={"duration": 0.0}), error
        return await self._run_chain(site, slot, prompt, selection, started)

    async def _run_chain(
        self, site: CallSite, slot: Slot, prompt: Any, selection: ProviderSelection,
        started: float,
    ) -> tuple[DimensionResult, BaseException | None]:
        chain = [ProviderFallback(provider=selection.provider, options=selection.options),
                 *selection.fallbacks]
        outcome = Outcome()
        history: list[dict[str, Any]] = []
        last_error: BaseException = ProviderError("no provider was tried")
        request_input: Any = prompt
        for position, entry in enumerate(chain):
            options = dict(entry.options)
            if position > 0:
                decision = await self.hooks.call("handle_provider_fallback", self._context(
                    site, provider=entry.provider, provider_options=options, error=last_error,
                    previous_attempts=history,
                    extra={"failed_provider": chain[position - 1].provider},
                ), None) or {}
                if decision.get("should_fallback") is False:
                    continue
                if decision.get("modified_request") is not None:
                    request_input, options = unpack_request(decision["modified_request"],
                                                            request_input, options)
                wait = decision.get("delay", entry.retry_after)
                if wait:
                    await slot.pause(float(wait))
            result = await self._run_provider(site, slot, entry.provider, request_input, options,
                                              outcome, history, started)
            if isinstance(result, DimensionResult):
                return result, None
            last_error = result
        return await self._failed(site, last_error, outcome, history, started), last_error

    async def _run_provider(
        self, site: CallSite, slot: Slot, provider_name: str, request_input: Any,
        options: dict[str, Any], outcome: Outcome, history: list[dict[str, Any]],
        started: float,
    ) -> DimensionResult | BaseException:
        """Attempts on one provider: a result, or the error that ended them."""
        try:
            provider = self.registry.get(provider_name)
        except UnknownProviderError as exc:
            history.append({"provider": provider_name, "attempt": 0, "error": str(exc)})
            return exc
        max_attempts = 1 if provider.handles_retries else self.config.max_retries + 1
        attempt = 1
        backoff_step = 0
        schema = site.dimension.output_schema
        while True:
            request = ProviderRequest(
                input=request_input, options=options, dimension=site.name,
                is_global=site.is_global,
                metadata={"section_index": site.section_index,
                          "total_sections": site.total_sections},
                output_schema=request_schema(schema) if schema is not None else None,
            )
            if self.hooks.has("before_provider_execute"):
                request = await self.hooks.call(
                    "before_provider_execute", self._context(
                        site, request=request, provider=provider.name, provider_options=options,
                        attempt=attempt, max_attempts=max_attempts),
                    request, partial(as_request, current=request))
            outcome.attempts += 1
            outcome.provider = provider.name
            began, outcome.sent_at = time.time(), None
            try:
                answer = await self._answer(site, provider, request, options, attempt, outcome,
                                            started)
            except asyncio.CancelledError as exc:
                self._attempt_ended(site, outcome, began, options, None, exc)
                raise
            except Exception as exc:
                error = as_call_error(exc, provider.name)
            else:
                self._attempt_ended(site, outcome, began, options, answer, None)
                return answer
            self._attempt_ended(site, outcome, began, options, None, error)
            history.append({
                "provider": provider.name, "attempt": attempt, "error": str(error),
                "status_code": getattr(error, "status_code", None),
            })
            if not is_retryable(error) or attempt >= max_attempts:
                return error
            retry_after = getattr(error, "retry_after", None)
            if not retry_after:
                # Only failures the provider gave no wait for climb the exponential ladder:
                # a 500 after two paced 429s is a first server error, not a third.
                backoff_step += 1
            delay = backoff_delay(backoff_step, self.config.retry_delay,
                                  self.config.max_retry_delay, retry_after, self.rng)
            if self.hooks.has("handle_retry"):
                decision = await self.hooks.call("handle_retry", self._context(
                    site, request=request, provider=provider.name, provider_options=options,
                    error=error, attempt=attempt, max_attempts=max_attempts,
                    previous_attempts=history), None) or {}
                if decision.get("should_retry") is False:
                    return error
                if decision.get("delay") is not None:
                    delay = max(float(decision["delay"]), retry_after or 0)
                if decision.get("modified_request") is not None:
                    request_input, options = unpack_request(decision["modified_request"],
                                                            request_input, options)
                if decision.get("modified_provider") is not None:
                    switched = as_selection(decision["modified_provider"])
                    try:
                        provider = self.registry.get(switched.provider)
                    except UnknownProviderError as exc:
                        return exc
                    options = {**options, **switched.options}
            if isinstance(error, OutputValidationError):
                request_input = reask(request_input, error, schema)
            self.progress.retries += 1
            await slot.pause(delay)
            attempt += 1

    async def _answer(
        self, site: CallSite, provider: BaseProvider, request: ProviderRequest,
        options: dict[str, Any], attempt: int, outcome: Outcome, started: float,
    ) -> DimensionResult:
        """One attempt that succeeds or raises: cache or provider, validation, the after hook."""
        scope = provider.cache_name
        cached = await self.cache.lookup(scope, request) if self.cache else None
        if cached is not None and _is_empty(cached.data):
            cached = None  # stored before empty answers were refused: ask again
        response = cached or await self._send(provider, request, outcome)
        if _is_empty(response.data):
            raise EmptyResponseError(provider.name, response.metadata.get("finish_reason"))
        data, parsed = validated(site.dimension, response.data)
        if self.cache is not None and cached is None:
            await self.cache.store(scope, request, response)
        if self.hooks.has("after_provider_execute"):
            answered = response.model_copy(update={"data": data})
            response = await self.hooks.call(
                "after_provider_execute", self._context(
                    site, request=request, response=answered, provider=provider.name,
                    provider_options=options, attempt=attempt,
                    duration=time.monotonic() - started),
                answered, partial(as_response, current=answered))
            data = response.data
            if parsed is not None and data != parsed.model_dump(mode="json"):
                parsed = None  # the hook changed the answer: the scheduler rebuilds it from data
        metadata = outcome.metadata(started)
        if cached is not None:
            metadata.update(cached_metadata(cached, self.pricing, options.get("model")))
        for key in ("finish_reason", "status_code"):
            if key in response.metadata:
                metadata[key] = response.metadata[key]
        return DimensionResult(data=data, metadata=metadata, parsed=parsed)

    async def _send(
        self, provider: BaseProvider, request: ProviderRequest, outcome: Outcome
    ) -> ProviderResponse:
        model = request.options.get("model")
        permit = await self.limiter.group(provider.name, model).acquire(_estimate_tokens(request))
        outcome.sent_at = time.time()
        progress = self.progress
        progress.in_flight += 1
        progress.requests += 1
        try:
            response = await provider.execute(request)
        except ProviderError as exc:
            _report_failure(permit, exc)
            raise
        except BaseException:
            permit.failed()
            raise
        finally:
            progress.in_flight -= 1
        if response.error is not None:
            meta = response.metadata
            failure = ProviderError(response.error, meta.get("status_code"),
                                    meta.get("retry_after"), provider=provider.name,
                                    rate_limit=meta.get("rate_limit"))
            _report_failure(permit, failure)
            raise failure
        tokens = response.metadata.get("tokens")
        permit.success(tokens.total_tokens if isinstance(tokens, TokenUsage) else None,
                       response.metadata.get("rate_limit"))
        outcome.add_usage(response, self.pricing, model)
        return response

    async def _failed(
        self, site: CallSite, error: BaseException, outcome: Outcome,
        history: list[dict[str, Any]], started: float,
    ) -> DimensionResult:
        if self.hooks.has("handle_dimension_failure"):
            replacement = await self.hooks.call("handle_dimension_failure", self._context(
                site, error=error, previous_attempts=history,
                duration=time.monotonic() - started), None)
            if replacement is not None:
                result = (replacement if isinstance(replacement, DimensionResult)
                          else DimensionResult.model_validate(replacement))
                result.metadata.setdefault("recovered_from", str(error))
                return result
        message = str(error)
        if outcome.attempts > 1:
            message += f" (after {outcome.attempts} attempts)"
        return DimensionResult(error=message, metadata=outcome.metadata(started))

    def _context(self, site: CallSite, **fields: Any) -> HookContext:
        return site.context(self.process_id, **fields)

    def _attempt_ended(self, site: CallSite, outcome: Outcome, began: float,
                       options: dict[str, Any], answer: DimensionResult | None,
                       error: BaseException | None) -> None:
        """Report a provider request that ended to the run's store (the run report's
        timeline); a cache hit or an attempt that never left the rate limiter sent none."""
        if self.on_attempt is None or outcome.sent_at is None:
            return
        model = answer.metadata.get("model") if answer is not None else options.get("model")
        status = answer.metadata.get("status_code") if answer is not None else None
        self.on_attempt(site.name, site.section_index, outcome.attempts, outcome.provider,
                        model, began, outcome.sent_at, time.time(), status, error)



def _report_failure(permit: Any, exc: ProviderError) -> None:
    if exc.status_code == 429:
        permit.rate_limited(exc.retry_after, exc.rate_limit)
    else:
        permit.failed()


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
