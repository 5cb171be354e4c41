"""Each call as the run report reads it, and the provider requests it made.

A call's result row also holds the timing of the provider request that produced it (three
columns: no extra row for the common case of one request answered at once); each request
that failed is a row of table `failed_attempts`, with its HTTP status and its cause as a
short label ("HTTP 429", "timeout", "invalid output", ...). Only requests that left the rate
limiter are kept: a cache hit sends none.

The report reads a run's calls as CallRecords, the fields it needs taken out of the stored
JSON by SQLite (a 100k-section run reads in a second, where parsing every result would take
many), and its requests as Attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import EmptyResponseError, OutputValidationError, ProviderError
from ..types import DimensionResult, TokenUsage
from ._schema import GLOBAL_INDEX

INSERT_FAILED = "INSERT INTO failed_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SELECT_FAILED = (
    "SELECT dimension, section_index, attempt, provider, model, started_at, sent_at, ended_at, "
    "status, error FROM failed_attempts WHERE process_id = ? ORDER BY rowid"
)
_FIELDS = ("error", "metadata.model", "metadata.provider", "metadata.mode", "metadata.cost",
           "metadata.saved_cost", "metadata.cached", "metadata.skipped", "metadata.attempts",
           "metadata.duration", "metadata.status_code", "metadata.tokens.input_tokens",
           "metadata.tokens.output_tokens", "metadata.tokens.cache_read_tokens")
SELECT_CALLS = (
    "SELECT dimension, nullif(section_index, ?), recorded_at, "
    + ", ".join(f"json_extract(result, '$.{f}')" for f in _FIELDS)
    + ", request_started_at, request_sent_at, request_ended_at"
    ", json_extract(result, '$.metadata.target'), json_extract(result, '$.metadata.hedged') "
    "FROM results WHERE process_id = ? ORDER BY recorded_at"
)

# (started_at, sent_at, ended_at) of the request that produced a result
Timing = tuple[float, float, float]


class CallRecord(NamedTuple):
    """One call (a dimension over a section, or a global dimension) as stored.

    Flags are truthy values as stored; `input_tokens` is None when the call reported no
    token usage (a skip, a failure before any answer); the request_* times are those of
    the provider request that produced the result (None: no request did)."""

    dimension: str
    section_index: int | None  # None for a global dimension
    recorded_at: float | None  # Unix time the result was recorded (None: not stored)
    error: str | None
    model: str | None
    provider: str | None
    mode: str | None  # "batch" for a provider batch API; None or "online" otherwise
    cost: float | None
    saved_cost: float | None
    cached: Any
    skipped: Any
    attempts: int | None
    duration: float | None
    status_code: int | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    request_started_at: float | None
    request_sent_at: float | None
    request_ended_at: float | None
    target: str | None = None  # the pool target that answered (its name or fingerprint)
    hedged: Any = None  # a duplicate request was sent (execution.hedge)

    @classmethod
    def of(cls, dimension: str, section_index: int | None, result: DimensionResult,
           ) -> CallRecord:
        """The record of a result in memory (a ProcessResult's), with no times."""
        meta = result.metadata
        tokens = meta.get("tokens")
        usage = tokens if isinstance(tokens, TokenUsage) else None
        return cls(
            dimension, section_index, None, result.error, _text(meta.get("model")),
            _text(meta.get("provider")), _text(meta.get("mode")), _number(meta.get("cost")),
            _number(meta.get("saved_cost")), bool(meta.get("cached")),
            bool(meta.get("skipped")), _integer(meta.get("attempts")),
            _number(meta.get("duration")), _integer(meta.get("status_code")),
            None if usage is None else usage.input_tokens,
            None if usage is None else usage.output_tokens,
            None if usage is None else usage.cache_read_tokens, None, None, None,
            _text(meta.get("target")), bool(meta.get("hedged")))

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def request(self) -> Attempt | None:
        """The provider request that produced this result, if one did."""
        if self.request_sent_at is None or self.request_started_at is None:
            return None
        return Attempt(self.dimension, self.section_index, self.attempts or 1,
                       self.provider or "unknown", self.model, self.request_started_at,
                       self.request_sent_at, self.request_ended_at or self.request_sent_at,
                       self.status_code, None)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider request of a call, as the store recorded it (times: Unix seconds)."""

    dimension: str
    section_index: int | None  # None for a global dimension
    attempt: int  # 1-based, counted over the call's whole provider chain
    provider: str
    model: str | None
    started_at: float  # the attempt began: before the rate limiter let it go
    sent_at: float
    ended_at: float
    status: int | None  # HTTP status of the answer, None when there was none
    error: str | None  # None: answered and accepted; else the cause (see attempt_cause)

    @property
    def ok(self) -> bool:
        return self.error is None


def all_attempts(calls: Iterable[CallRecord], failed: Iterable[Attempt]) -> list[Attempt]:
    """A run's requests in the order they ended: those that failed, and those answered."""
    answered = [a for a in (call.request for call in calls) if a is not None]
    return sorted([*failed, *answered], key=lambda a: a.ended_at)


def failed_row(process_id: str, dimension: str, section_index: int | None, attempt: int,
               provider: str, model: str | None, timing: Timing, status: int | None,
               error: BaseException) -> tuple[Any, ...]:
    return (process_id, dimension, GLOBAL_INDEX if section_index is None else section_index,
            attempt, provider, model, *timing,
            status if status is not None else getattr(error, "status_code", None),
            attempt_cause(error))


def attempt_from_row(row: Sequence[Any]) -> Attempt:
    dimension, index, attempt, provider, model, started, sent, ended, status, error = row
    return Attempt(dimension, None if index == GLOBAL_INDEX else index, attempt, provider,
                   model, started, sent, ended, status, error)


def attempt_cause(error: BaseException) -> str:
    """A short label of why an attempt failed, the same for every attempt that failed so."""
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"  # the dimension's time limit, or the run was stopped
    if isinstance(error, EmptyResponseError):
        return "empty answer"
    if isinstance(error, OutputValidationError):
        return "invalid output"
    if isinstance(error, ProviderError):
        if error.status_code is not None:
            return f"HTTP {error.status_code}"
        text = error.message.lower()
        if "timeout" in text or "timed out" in text:
            return "timeout"
        if "connect" in text or "reset" in text or "disconnect" in text:
            return "connection error"
        return "provider error"
    return type(error).__name__


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
