"""Which ready call takes the next free slot.

Globals go first: everything after a global waits for it. Among section dimensions, the one
heading the longest expected remaining chain goes first, in seconds, as learned from the run's
own calls: a slow dimension (a long essay) starts before a quick one even when the quick one
has more steps after it. Expected chains within NEAR of the longest count as equal, and among
those the deepest chain in calls goes first, then the oldest section, so a section's
independent dimensions start together and its chain ends early; the noise of a few
heavy-tailed durations cannot reorder dimensions that are alike.

A dimension's expected duration (CallTimes) is the mean over its finished calls and, for the
calls still in flight, the time they have run so far: a slow dimension shows itself while its
first calls are still running, not only once they end. An engine keeps one CallTimes for all
its runs, so a second run starts from what the first learned. A dimension nobody has started
yet goes first once, so that something is learned about it early; until then every dimension
counts as equally slow, which makes the order simply deepest chain first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .graph import Plan

__all__ = ["CallTimes", "ReadyQueue"]

T = TypeVar("T")

NEAR = 1.5  # expected chains within this factor of the longest are treated as equal
PRIOR_WEIGHT = 5  # a dimension's mean duration starts from the run's mean, as if seen this often
REFRESH_SECONDS = 0.05  # how stale the expected chains may be (computing them costs per pick)
MEMORY = 2000  # finished calls a dimension's mean remembers; older ones fade by halves


@dataclass(slots=True)
class _Durations:
    calls: int = 0  # started, finished or not
    seconds: float = 0.0  # of the finished calls
    running: int = 0
    running_since: float = 0.0  # sum of the start times of the calls in flight, run-relative

    def elapsed(self, now: float) -> float:
        return self.seconds + self.running * now - self.running_since


class CallTimes:
    """How long each dimension's calls take, learned from the calls that started."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._epoch = clock()  # start times are summed relative to it, keeping the sums small
        self._durations: defaultdict[str, _Durations] = defaultdict(_Durations)
        self.dimensions_seen = 0  # grows when a dimension's first call starts

    def started(self, dimension: str) -> float:
        """A call of `dimension` starts; returns the start time to hand back to finished()."""
        now = self._clock()
        durations = self._durations[dimension]
        durations.calls += 1
        durations.running += 1
        durations.running_since += now - self._epoch
        if durations.calls == 1:
            self.dimensions_seen += 1
        return now

    def finished(self, dimension: str, started: float, *, observed: bool = True) -> None:
        """The call started at `started` ended; observed=False (a cache hit) learns nothing."""
        durations = self._durations[dimension]
        durations.running -= 1
        durations.running_since -= started - self._epoch
        if not observed:
            durations.calls -= 1
            return
        durations.seconds += self._clock() - started
        done = durations.calls - durations.running
        if done > MEMORY:
            durations.seconds /= 2
            durations.calls = durations.running + done // 2

    def now(self) -> float:
        return self._clock()

    def seen(self, dimension: str) -> bool:
        durations = self._durations.get(dimension)
        return durations is not None and durations.calls > 0

    def means(self, dimensions: Iterable[str]) -> dict[str, float]:
        """Expected seconds of a call of each dimension, drawn towards the mean of all calls
        while a dimension has few of its own."""
        now = self._clock() - self._epoch
        seen = [d for d in self._durations.values() if d.calls]
        count = sum(d.calls for d in seen)
        prior = sum(d.elapsed(now) for d in seen) / count if count else 1.0
        means = {}
        for name in dimensions:
            durations = self._durations.get(name) or _Durations()
            means[name] = (durations.elapsed(now) + PRIOR_WEIGHT * prior) / (
                durations.calls + PRIOR_WEIGHT
            )
        return means


class ReadyQueue(Generic[T]):
    """Ready items per dimension, for one consumer (the dispatcher) and any producers.

    The consumer waits for an item, then for a free slot, and only then pops: the item that
    is first when the slot frees is the one that runs, and no slot sits idle waiting for work.
    """

    def __init__(self, plan: Plan, times: CallTimes | None = None) -> None:
        self._plan = plan
        self.times = times or CallTimes()
        self._globals: deque[T] = deque()
        self._sections: dict[str, list[tuple[int, int, T]]] = {}
        self._section_items = 0
        self._seq = itertools.count()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._chains: dict[str, float] = {}
        self._chains_at = -math.inf
        self._chains_seen = -1  # times.dimensions_seen when the chains were computed

    def put(self, dimension: str, section_index: int | None, item: T) -> None:
        """Add a ready item; `section_index` None marks a global dimension."""
        if section_index is None:
            self._globals.append(item)
        else:
            heap = self._sections.setdefault(dimension, [])
            heapq.heappush(heap, (section_index, next(self._seq), item))
            self._section_items += 1
        self._wake()

    def close(self) -> None:
        """No more items: get() returns None once the queue is empty."""
        self._closed = True
        self._wake()

    async def wait(self) -> bool:
        """Until an item is ready (True) or the queue is closed and empty (False)."""
        while not self._globals and not self._section_items:
            if self._closed:
                return False
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return True

    def pop(self) -> T:
        """The item to run next; call after wait() returned True."""
        if self._globals:
            return self._globals.popleft()
        self._section_items -= 1
        return heapq.heappop(self._sections[self._next_dimension()])[2]

    async def get(self) -> T | None:
        return self.pop() if await self.wait() else None

    def expected_chains(self) -> dict[str, float]:
        """Each dimension's expected seconds from its start to the end of the run."""
        means = self.times.means(self._plan.order)
        chains: dict[str, float] = {}
        for name in reversed(self._plan.order):
            after = max((chains[d] for d in self._plan.dependents[name]), default=0.0)
            chains[name] = means[name] + after
        return chains

    def _next_dimension(self) -> str:
        ready = [d for d, heap in self._sections.items() if heap]
        unseen = [d for d in ready if not self.times.seen(d)]
        ready = unseen or ready
        if len(ready) == 1:
            return ready[0]
        now = self.times.now()
        if (now - self._chains_at > REFRESH_SECONDS
                or self._chains_seen != self.times.dimensions_seen):
            self._chains, self._chains_at = self.expected_chains(), now
            self._chains_seen = self.times.dimensions_seen
        chains = self._chains
        longest = max(chains[d] for d in ready)
        depth = self._plan.remaining_depth
        return min(
            (d for d in ready if chains[d] * NEAR >= longest),
            key=lambda d: (-depth[d], self._sections[d][0][:2]),
        )

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
