"""What the `dagengine` loggers say about a run, one line per event, the standard way.

    dagengine.run        INFO   run start and end (counts, tokens, cost); resume decisions
    dagengine.call       INFO   a retry (cause, attempt n/max, wait), a fallback, a re-ask
                         DEBUG  a 429 (provider/model, retry-after), a response-cache hit
    dagengine.ratelimit  INFO   a change of a learned or allowed rate (see ratelimit/_log.py)

A line names the dimension, the section's index, the provider and model; never the prompt,
the answer or a key. An error is shown by its cause ("HTTP 429", "invalid output"), not its
message, which may quote the answer. Callers on a hot path check `isEnabledFor` first.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import EmptyResponseError, OutputValidationError, ProviderError
from .types import CostSummary, ProcessResult

if TYPE_CHECKING:
    from .plugin import Retry

call_log = logging.getLogger("dagengine.call")
run_log = logging.getLogger("dagengine.run")

_MESSAGE_CHARS = 160


def where(dimension: str, section_index: int | None) -> str:
    return f"{dimension}[{'global' if section_index is None else section_index}]"


def cause(error: BaseException) -> str:
    """An error as a line shows it: its kind and status, not what the model answered."""
    if isinstance(error, EmptyResponseError):
        return "empty answer"
    if isinstance(error, OutputValidationError):
        return "invalid output"
    if isinstance(error, ProviderError):
        if error.status_code is not None:
            return f"HTTP {error.status_code}"
        # No status: a timeout or a dropped connection, which our own message describes.
        message = error.message
        return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS] + "..."
    return type(error).__name__


def _model(provider: str, model: str | None) -> str:
    return f"{provider}/{model}" if model else provider


def retry(retry: Retry) -> None:
    call_log.info("retry %s on %s after %s: attempt %d/%d failed, next in %.2fs",
                  where(retry.dimension, retry.section_index),
                  _model(retry.provider, retry.model), cause(retry.error), retry.attempt,
                  retry.max_attempts, retry.wait)


def rate_limited(dimension: str, section_index: int | None, provider: str, model: str | None,
                 error: ProviderError) -> None:
    retry_after = "none" if error.retry_after is None else f"{error.retry_after:g}s"
    call_log.debug("429 from %s for %s (retry-after %s)", _model(provider, model),
                   where(dimension, section_index), retry_after)


def reask(dimension: str, section_index: int | None, provider: str, attempt: int,
          max_attempts: int) -> None:
    call_log.info("re-ask %s on %s: attempt %d/%d failed output validation; the next asks "
                  "again with the validation error", where(dimension, section_index), provider,
                  attempt, max_attempts)


def fallback(dimension: str, section_index: int | None, failed: str, provider: str,
             error: BaseException | None) -> None:
    call_log.info("fallback %s: %s failed (%s), trying %s", where(dimension, section_index),
                  failed, "no attempt" if error is None else cause(error), provider)


def cache_hit(dimension: str, section_index: int | None, provider: str) -> None:
    call_log.debug("cache hit %s on %s: answered from the response cache",
                   where(dimension, section_index), provider)


def run_started(process_id: str, sections: int | None, dimensions: Sequence[str],
                concurrency: int, resumed: int) -> None:
    """`sections` None: a stream, read as the run goes."""
    run_log.info("run %s started: %s sections, dimensions %s, concurrency %d%s", process_id,
                 "a stream of" if sections is None else sections, ", ".join(dimensions),
                 concurrency,
                 f", {resumed} results from the store" if resumed else "")


def run_done(process_id: str, result: ProcessResult, seconds: float,
             failed: BaseException | None) -> None:
    """The run's end: results by outcome, requests, tokens and cost."""
    if not run_log.isEnabledFor(logging.INFO):
        return
    outcomes: Counter[str] = Counter()
    requests = 0
    counted = getattr(result.sections, "outcomes", None)  # a run that let its sections go
    if counted is not None:
        outcomes.update(counted)
        requests = getattr(result.sections, "requests", 0)
        results = [r for s in result.dropped_sections for r in s.results.values()]
    else:
        results = [r for s in (*result.sections, *result.dropped_sections)
                   for r in s.results.values()]
    for item in (*results, *result.global_results.values()):
        call = item.call
        if call is not None and call.skipped:
            outcomes["skipped"] += 1
        else:
            outcomes["ok" if item.error is None else "failed"] += 1
            outcomes["cached"] += call is not None and call.cached
        requests += call.attempts if call is not None else 0
    costs = result.costs or CostSummary()
    outcome = "finished" if failed is None else f"stopped ({type(failed).__name__})"
    run_log.info("run %s %s in %.1fs: %d ok, %d failed, %d skipped, %d from the cache; "
                 "%d requests, %d input + %d output tokens, $%.4f", process_id, outcome,
                 seconds, outcomes["ok"], outcomes["failed"], outcomes["skipped"],
                 outcomes["cached"], requests, costs.input_tokens, costs.output_tokens,
                 costs.total_cost)
