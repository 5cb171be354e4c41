"""Live progress of a run: what the observers count, and the snapshots callbacks and the
display show.

How many items each dimension has and how many finished is the run state's (`RunState`);
the rate limiter owns its 429 and waiting counts. The tracker counts the rest: failures,
skips, cost, retries and requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .plugin import Callbacks, Observer
from .types import (
    BatchProgress,
    DimensionProgress,
    DimensionResult,
    ProgressUpdate,
    WorkerProgress,
)

if TYPE_CHECKING:
    from ._batching import BatchInfo
    from ._run import RunState
    from .display import ProgressDisplay
    from .graph import Plan
    from .ratelimit import RateLimiter


@dataclass(slots=True)
class _DimCounters:
    failed: int = 0
    skipped: int = 0
    cost: float = 0.0


class ProgressTracker(Observer):
    """Counts what the run state does not: failures, skips, cost, retries, requests.

    Without a run state (and a limiter) it tracks a run with nothing armed yet."""

    def __init__(self, state: RunState | None = None, limiter: RateLimiter | None = None) -> None:
        self._expected: dict[str, int] = state.expected if state is not None else {}
        self._done: dict[str, int] = state.done if state is not None else {}
        self.limiter = limiter
        self.started = time.monotonic()
        self.dims: dict[str, _DimCounters] = {}
        self.retries = 0
        self.in_flight = 0
        self.requests = 0
        self.hedges = 0
        self.by_target: dict[str, int] = {}
        self.current_dimension: str | None = None
        self.current_section: int | None = None
        self.workers: list[WorkerProgress] = []  # a run over Ray: set by its driver
        self.batches: dict[str, BatchInfo] = {}  # batch mode: the run's provider batches

    def batch_updated(self, batch: BatchInfo) -> None:
        self.batches[batch.batch_id] = batch

    def request_sent(self, dimension: str, provider: str) -> None:
        self.in_flight += 1
        self.requests += 1

    def request_routed(self, dimension: str, provider: str, target: str | None,
                       hedge: bool) -> None:
        self.hedges += hedge
        if target is not None:
            label = f"{provider}[{target}]"
            self.by_target[label] = self.by_target.get(label, 0) + 1

    def request_done(self, dimension: str, provider: str) -> None:
        self.in_flight -= 1

    def retry(self, dimension: str, error: BaseException) -> None:
        self.retries += 1

    def result(self, dimension: str, index: int | None, result: DimensionResult) -> None:
        counters = self.dims.get(dimension)
        if counters is None:
            counters = self.dims[dimension] = _DimCounters()
        call = result.call
        if result.error is not None:
            counters.failed += 1
        elif call is not None and call.skipped:
            counters.skipped += 1
        if call is not None and call.cost and not call.cached:
            counters.cost += call.cost
        self.current_dimension = dimension
        self.current_section = index

    restored = result

    @property
    def completed(self) -> int:
        return sum(self._done.values())

    @property
    def total(self) -> int:
        return sum(self._expected.values())

    def snapshot(self) -> ProgressUpdate:
        elapsed = time.monotonic() - self.started
        dims: dict[str, DimensionProgress] = {}
        completed = total = failed = skipped = 0
        cost = 0.0
        none = _DimCounters()
        for name, expected in self._expected.items():
            done = self._done.get(name, 0)
            counters = self.dims.get(name, none)
            dims[name] = DimensionProgress(
                completed=done,
                total=expected,
                percent=_percent(done, expected),
                cost=counters.cost,
                estimated_cost=_extrapolate(counters.cost, done, expected),
                failed=counters.failed,
                eta_seconds=_eta(elapsed, done, expected),
            )
            completed += done
            total += expected
            failed += counters.failed
            skipped += counters.skipped
            cost += counters.cost
        return ProgressUpdate(
            completed=completed,
            total=total,
            percent=_percent(completed, total),
            cost=cost,
            estimated_cost=_extrapolate(cost, completed, total),
            elapsed_seconds=elapsed,
            eta_seconds=_eta(elapsed, completed, total),
            current_dimension=self.current_dimension,
            current_section=self.current_section,
            dimensions=dims,
            failed=failed,
            skipped=skipped,
            retries=self.retries,
            rate_limited=self.limiter.rate_limited if self.limiter is not None else 0,
            waiting_for_capacity=self.limiter.waiting if self.limiter is not None else 0,
            in_flight=self.in_flight,
            requests_per_second=completed / elapsed if elapsed > 0 else 0.0,
            hedges=self.hedges,
            requests_by_target=dict(self.by_target),
            workers=list(self.workers),
            batches=batch_progress(self.batches.values()) if self.batches else None,
        )


@dataclass(slots=True, eq=False)
class ProgressReporter(Observer):
    """Shows progress as items finish: the live display when it is due, and on_progress
    every `every` results (and at the last)."""

    progress: ProgressTracker
    display: ProgressDisplay | None
    callbacks: Callbacks
    every: int = field(default=1)

    def run_started(self, plan: Plan) -> None:
        if self.display is not None:
            self.display.start(plan)

    async def progressed(self) -> None:
        if self.display is not None and self.display.due():
            self.display.update(self.progress.snapshot())
        if self.callbacks.get("on_progress") is not None:
            done = self.progress.completed
            if done % self.every == 0 or done >= self.progress.total:
                await self.callbacks.emit("on_progress", self.progress.snapshot())

    def batch_updated(self, batch: BatchInfo) -> None:
        # A batch run has long stretches with no result: its polls redraw the display.
        if self.display is not None and self.display.due():
            self.display.update(self.progress.snapshot())

    def run_done(self) -> None:
        if self.display is not None:
            self.display.stop(self.progress.snapshot())


def batch_progress(batches: Iterable[BatchInfo]) -> BatchProgress:
    """The batches' counts as their providers last reported them; the ETA is when the
    slowest batch in progress ends at the pace its items have been done so far."""
    progress = BatchProgress()
    now = time.monotonic()
    etas: list[float] = []
    for batch in batches:
        status = batch.status
        progress.submitted += 1
        progress.items += batch.items
        done = max(0, batch.items - status.processing) if not status.done else batch.items
        progress.items_done += done
        if status.done:
            progress.ended += 1
            continue
        progress.in_progress += 1
        if done:
            etas.append((now - batch.submitted_at) * status.processing / done)
    if etas:
        progress.eta_seconds = max(etas)
    return progress


def _percent(done: int, total: int) -> float:
    return 100.0 * done / total if total else 100.0


def _extrapolate(cost: float, done: int, total: int) -> float:
    return cost * total / done if done else 0.0


def _eta(elapsed: float, done: int, total: int) -> float:
    if done == 0:
        return 0.0
    return max(0.0, elapsed / done * (total - done))
