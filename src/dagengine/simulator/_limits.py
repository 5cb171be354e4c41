"""Requests- and tokens-per-minute limits as continuously refilled token buckets."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LimitState:
    """What the rate-limit headers report for one limit after a request was decided."""

    kind: str  # "requests" or "tokens"
    per_minute: float
    remaining: int
    reset_seconds: float  # until the bucket is full again


class TokenBucket:
    """Refills at per_minute/60 per second up to `burst_seconds` of that rate (at least 1)."""

    __slots__ = ("capacity", "kind", "level", "per_minute", "rate", "stamp")

    def __init__(self, kind: str, per_minute: float, burst_seconds: float, now: float) -> None:
        self.kind = kind
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = now

    def wait(self, cost: float, now: float) -> float:
        """Seconds until `cost` can be admitted (0 = now)."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        # A request bigger than the whole bucket could never fit: admit it once the bucket is
        # full and let the level go negative, so the long-run rate still holds.
        needed = min(cost, self.capacity)
        return max(0.0, (needed - self.level) / self.rate)

    def take(self, cost: float) -> None:
        self.level -= cost

    def state(self) -> LimitState:
        return LimitState(
            kind=self.kind,
            per_minute=self.per_minute,
            remaining=max(0, math.floor(self.level)),
            reset_seconds=max(0.0, (self.capacity - self.level) / self.rate),
        )


class RateLimits:
    """The configured buckets; a request is admitted only when every bucket has room."""

    __slots__ = ("requests", "tokens")

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        burst_seconds: float,
        now: float,
    ) -> None:
        self.requests = (
            None
            if requests_per_minute is None
            else TokenBucket("requests", requests_per_minute, burst_seconds, now)
        )
        self.tokens = (
            None
            if tokens_per_minute is None
            else TokenBucket("tokens", tokens_per_minute, burst_seconds, now)
        )

    def admit(self, tokens: int, now: float) -> float:
        """0.0 if admitted (and charged), else the seconds to wait before retrying."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.wait(1, now)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait(tokens, now))
        if wait > 1e-9:
            return wait
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(tokens)
        return 0.0

    def states(self) -> list[LimitState]:
        return [bucket.state() for bucket in (self.requests, self.tokens) if bucket is not None]
