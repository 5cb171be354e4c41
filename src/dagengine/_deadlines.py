"""Time limits for thousands of calls at once: `async with time_limit(seconds):` does what
`asyncio.timeout(seconds)` does (the block's task is cancelled at the deadline and the block
raises TimeoutError; a cancellation from outside stays a cancellation), for less.

Each `asyncio.timeout` schedules a timer of its own and cancels it on the way out, and the
event loop keeps every cancelled timer in its heap until it rebuilds it: at thousands of
calls a second, each under two limits (its dimension's and its request's), that was about
7 % of a call's CPU. The limits a run uses are few durations (a dimension's timeout, a
provider's request timeout), and limits of one duration expire in the order they began. So
each event loop keeps one queue per duration, and one timer for the earliest deadline of
them all: beginning a limit appends to its queue, ending one marks it done (and drops the
done ones at the head), and the timer, when it fires, cancels what has expired and is set
again for the next deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from types import TracebackType

__all__ = ["TimeLimit", "time_limit"]

_PENDING, _DONE, _EXPIRED = 0, 1, 2
# A timer may run up to the clock's resolution before its time (asyncio's own rule).
_RESOLUTION = time.get_clock_info("monotonic").resolution


class _Limit:
    __slots__ = ("deadline", "state", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object]) -> None:
        self.deadline = deadline
        self.task: asyncio.Task[object] | None = task
        self.state = _PENDING


class _Clock:
    """One event loop's limits: a queue per duration, one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queues: dict[float, deque[_Limit]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def begin(self, seconds: float, task: asyncio.Task[object]) -> _Limit:
        limit = _Limit(self._loop.time() + seconds, task)
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = deque()
        queue.append(limit)
        if limit.deadline < self._timer_at:
            self._arm(limit.deadline)
        return limit

    def end(self, seconds: float, limit: _Limit) -> None:
        limit.state, limit.task = _DONE, None
        queue = self._queues.get(seconds)
        while queue and queue[0].state == _DONE:
            queue.popleft()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + _RESOLUTION
        earliest = math.inf
        for seconds, queue in list(self._queues.items()):
            while queue:
                head = queue[0]
                if head.state == _PENDING:
                    if head.deadline > now:
                        earliest = min(earliest, head.deadline)
                        break
                    head.state = _EXPIRED
                    assert head.task is not None
                    head.task.cancel()
                queue.popleft()
            if not queue:
                del self._queues[seconds]
        if earliest < math.inf:
            self._arm(earliest)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clock] = (
    weakref.WeakKeyDictionary())


class TimeLimit:
    """The async context manager `time_limit` returns; made for one use."""

    __slots__ = ("_cancelling", "_clock", "_limit", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("time_limit() must be used inside a task")
        loop = task.get_loop()
        clock = _clocks.get(loop)
        if clock is None:
            clock = _clocks[loop] = _Clock(loop)
        self._clock = clock
        self._cancelling = task.cancelling()
        self._limit = clock.begin(self._seconds, task)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        limit = self._limit
        if limit.state != _EXPIRED:
            self._clock.end(self._seconds, limit)
            return
        task = asyncio.current_task()
        assert task is not None
        # Our cancellation, and no other since the block began: the limit's own error.
        if task.uncancel() <= self._cancelling and kind is not None \
                and issubclass(kind, asyncio.CancelledError):
            raise TimeoutError from error


def time_limit(seconds: float) -> TimeLimit:
    """As `asyncio.timeout(seconds)` (a positive number of seconds; see the module)."""
    return TimeLimit(float(seconds))
