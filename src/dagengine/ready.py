"""Which ready call takes the next free slot.

Globals go first: everything after a global waits for it. Among section dimensions, the one
heading the longest expected remaining chain goes first, in seconds, as learned from the
durations of the calls finished so far: a slow dimension (a long summary) starts before a
quick one even when the quick one has more steps after it. Expected chains within NEAR of the
longest count as equal, and among those the deepest chain in calls goes first, then the
oldest section, so a section's independent dimensions start together and its chain ends
early; the noise of a few heavy-tailed durations then cannot reorder dimensions that are
alike. Before anything has finished, every dimension is assumed equally slow, which makes
the order simply deepest chain first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from typing import Generic, TypeVar

from .graph import Plan

__all__ = ["ReadyQueue"]

T = TypeVar("T")

NEAR = 1.5  # expected chains within this factor of the longest are treated as equal
PRIOR_WEIGHT = 5  # a dimension's mean duration starts from the run's mean, as if seen this often


class ReadyQueue(Generic[T]):
    """Ready items per dimension, for one consumer (the dispatcher) and any producers."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._globals: deque[T] = deque()
        self._sections: dict[str, list[tuple[int, int, T]]] = {}
        self._seq = itertools.count()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._total = (0.0, 0)
        self._chains: dict[str, float] | None = None

    def put(self, dimension: str, section_index: int | None, item: T) -> None:
        """Add a ready item; `section_index` None marks a global dimension."""
        if section_index is None:
            self._globals.append(item)
        else:
            heap = self._sections.setdefault(dimension, [])
            heapq.heappush(heap, (section_index, next(self._seq), item))
        self._wake()

    def close(self) -> None:
        """No more items: get() returns None once the queue is empty."""
        self._closed = True
        self._wake()

    def observe(self, dimension: str, seconds: float) -> None:
        """A call of `dimension` took `seconds`: refine what its chains are expected to take."""
        self._seconds[dimension] = self._seconds.get(dimension, 0.0) + seconds
        self._calls[dimension] = self._calls.get(dimension, 0) + 1
        total, count = self._total
        self._total = (total + seconds, count + 1)
        self._chains = None

    async def get(self) -> T | None:
        while not self._globals and not any(self._sections.values()):
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._globals:
            return self._globals.popleft()
        return heapq.heappop(self._sections[self._next_dimension()])[2]

    def expected_chains(self) -> dict[str, float]:
        """Each dimension's expected seconds from its start to the end of the run."""
        if self._chains is None:
            total, count = self._total
            prior = total / count if count else 1.0
            chains: dict[str, float] = {}
            for name in reversed(self._plan.order):
                mean = (self._seconds.get(name, 0.0) + PRIOR_WEIGHT * prior) / (
                    self._calls.get(name, 0) + PRIOR_WEIGHT
                )
                after = max((chains[d] for d in self._plan.dependents[name]), default=0.0)
                chains[name] = mean + after
            self._chains = chains
        return self._chains

    def _next_dimension(self) -> str:
        ready = [d for d, heap in self._sections.items() if heap]
        if len(ready) == 1:
            return ready[0]
        chains = self.expected_chains()
        longest = max(chains[d] for d in ready)
        depth = self._plan.remaining_depth
        return min(
            (d for d in ready if chains[d] * NEAR >= longest),
            key=lambda d: (-depth[d], self._sections[d][0][:2]),
        )

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
