"""The continuous token bucket each limit of a group paces with."""

from __future__ import annotations

_EPS = 1e-9  # rounding slack when a timer fires exactly at a bucket's refill time


class Bucket:
    """A continuous token bucket holding at most one second's worth (at least 1), or
    `capacity` when one is given."""

    __slots__ = ("available", "capacity", "fixed_capacity", "rate")

    def __init__(self, rate: float, available: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.fixed_capacity = capacity
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self.available = min(available, self.capacity)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        if self.fixed_capacity is None:
            self.capacity = max(1.0, rate)
        self.available = min(self.available, self.capacity)

    def add(self, amount: float) -> None:
        self.available = min(self.capacity, self.available + amount)

    def delay(self, amount: float) -> float:
        """Seconds until `amount` fits; an amount above capacity fits a full bucket."""
        short = min(amount, self.capacity) - self.available
        return short / self.rate if short > _EPS else 0.0
