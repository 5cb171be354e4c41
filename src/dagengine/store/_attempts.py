"""The provider requests of each call: when they began, were sent and ended, and how.

Only requests that left the rate limiter are kept (a cache hit sends none). The request
that produced a result is kept in the result's row (three columns: no extra row for the
common case of one request answered at once); each one that failed is a row of table
`failed_attempts` with its HTTP status and cause, a short label ("HTTP 429", "timeout",
"invalid output", ...). `RunStore.attempts()` reads both back as one list of Attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import EmptyResponseError, OutputValidationError, ProviderError
from ._schema import GLOBAL_INDEX

INSERT_FAILED = "INSERT INTO failed_attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SELECT_ATTEMPTS = """
SELECT dimension, section_index, attempt, provider, model, started_at, sent_at, ended_at,
       status, error
FROM failed_attempts WHERE process_id = ?1
UNION ALL
SELECT dimension, section_index, coalesce(json_extract(result, '$.metadata.attempts'), 1),
       coalesce(json_extract(result, '$.metadata.provider'), '?'),
       json_extract(result, '$.metadata.model'), request_started_at, request_sent_at,
       request_ended_at, json_extract(result, '$.metadata.status_code'), NULL
FROM results WHERE process_id = ?1 AND request_sent_at IS NOT NULL
ORDER BY 8
"""

# (started_at, sent_at, ended_at) of the request that produced a result
Timing = tuple[float, float, float]


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


def failed_row(process_id: str, dimension: str, section_index: int | None, attempt: int,
               provider: str, model: str | None, timing: Timing, status: int | None,
               error: BaseException) -> tuple[Any, ...]:
    return (process_id, dimension, GLOBAL_INDEX if section_index is None else section_index,
            attempt, provider, model, *timing,
            status if status is not None else getattr(error, "status_code", None),
            attempt_cause(error))


def attempt_from_row(row: Sequence[Any]) -> Attempt:
    dimension, index, attempt, provider, model, started, sent, ended, status, error = row
    return Attempt(dimension, None if index == GLOBAL_INDEX else index, int(attempt),
                   str(provider), model, started, sent, ended,
                   status if isinstance(status, int) else None, error)


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
