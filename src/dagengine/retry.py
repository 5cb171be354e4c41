"""Which failures are retried, and how long to wait before the next attempt."""

from __future__ import annotations

import random

from .errors import OutputValidationError, ProviderError


def is_retryable(error: BaseException) -> bool:
    """408/409/429/5xx, timeouts, connection errors and unparseable or invalid output."""
    if isinstance(error, ProviderError):
        return error.retryable
    return isinstance(error, (OutputValidationError, TimeoutError, ConnectionError))


def backoff_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: float | None,
    rng: random.Random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Exponential (`base * 2**(attempt-1)`, capped) with "equal jitter": half fixed, half
    random, so retries spread out without ever collapsing to zero. When the provider sent a
    Retry-After it said when to come back, so that replaces the exponential schedule
    (growing past it only adds idle time: the rate limiter already paces the comeback);
    up to 10 % jitter on top keeps the calls it refused together from all returning in the
    same instant.
    """
    if retry_after is not None and retry_after > 0:
        return float(retry_after) * (1 + 0.1 * rng.random())
    exponential = min(cap, base * 2.0 ** (attempt - 1))
    return exponential / 2 + rng.random() * exponential / 2
