"""Hedged requests (`execution.hedge`): what calls take, learned online per (provider, model,
dimension), and the budget that caps the duplicates.

A call still running past the configured quantile of its key's latency gets one duplicate;
the first answer wins (dagengine/_pool.py races them). The quantile is read from the last
WINDOW answers, and only once MIN_SAMPLES are in: before that, nothing is hedged.

The budget: a duplicate is sent only if, counting it, duplicates stay at most `budget` x the
run's requests (every request the run sent, duplicates and retries included). The check and
the counting happen together, on the event loop's one thread, so it holds at every moment.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from typing import Any

MIN_SAMPLES = 20  # answers of a key before its quantile is trusted
WINDOW = 1000  # answers a key's quantile is read from (the latest: latency drifts)

LatencyKey = tuple[str, str | None, str]  # (provider, model, dimension)


class LatencyQuantile:
    """One quantile of the latest WINDOW samples: a sorted copy beside them in arrival
    order, so adding one is a binary search and reading is an index."""

    __slots__ = ("_order", "_quantile", "_sorted")

    def __init__(self, quantile: float) -> None:
        self._quantile = quantile
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def add(self, seconds: float) -> None:
        self._order.append(seconds)
        bisect.insort(self._sorted, seconds)
        if len(self._order) > WINDOW:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    @property
    def count(self) -> int:
        return len(self._order)

    @property
    def value(self) -> float | None:
        """The quantile, None with fewer than MIN_SAMPLES samples."""
        n = len(self._sorted)
        if n < MIN_SAMPLES:
            return None
        return self._sorted[min(n - 1, int(self._quantile * n))]


class Hedger:
    """One run's hedging: the latency of each key, and the count behind the budget."""

    def __init__(self, quantile: float, budget: float) -> None:
        self.quantile = quantile
        self.budget = budget
        self.requests = 0  # requests the run sent, duplicates included
        self.hedges = 0  # duplicates sent
        self.won = 0  # duplicates that answered first
        self._latency: dict[LatencyKey, LatencyQuantile] = {}

    @classmethod
    def from_config(cls, hedge: Mapping[str, Any] | None) -> Hedger | None:
        if hedge is None:
            return None
        return cls(float(hedge["quantile"]), float(hedge["budget"]))

    def threshold(self, key: LatencyKey) -> float | None:
        """Seconds after which a call of `key` still running gets a duplicate; None while
        too little is known."""
        latency = self._latency.get(key)
        return latency.value if latency is not None else None

    def record(self, key: LatencyKey, seconds: float) -> None:
        """An answer's latency (or, for a call a duplicate overtook, how long it had run by
        then: above the quantile either way, which is all the quantile reads of it)."""
        latency = self._latency.get(key)
        if latency is None:
            latency = self._latency[key] = LatencyQuantile(self.quantile)
        latency.add(seconds)

    def sent(self) -> None:
        """A request that is not a duplicate left for its provider."""
        self.requests += 1

    def reserve(self) -> bool:
        """Count one duplicate (and its request) if the budget allows it; False if not."""
        if self.hedges + 1 > self.budget * (self.requests + 1):
            return False
        self.hedges += 1
        self.requests += 1
        return True

    def snapshot(self) -> dict[str, float]:
        return {"requests": self.requests, "hedges": self.hedges, "won": self.won,
                "budget": self.budget}
