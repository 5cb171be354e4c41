"""Live progress of a run: counters the scheduler and calls bump, snapshots for callbacks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .types import DimensionProgress, DimensionResult, ProgressUpdate


@dataclass(slots=True)
class _DimCounters:
    total: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    cost: float = 0.0


@dataclass(slots=True)
class ProgressTracker:
    """Counts what finished. `total` grows when a dimension is armed over a section list."""

    started: float = field(default_factory=time.monotonic)
    dims: dict[str, _DimCounters] = field(default_factory=dict)
    retries: int = 0
    in_flight: int = 0
    requests: int = 0
    current_dimension: str | None = None
    current_section: int | None = None
    # Read from the rate limiter when a snapshot is taken (it owns these counts).
    rate_limited: int = 0
    waiting_for_capacity: int = 0

    def expect(self, dimension: str, count: int) -> None:
        self.dims.setdefault(dimension, _DimCounters()).total += count

    def record(self, dimension: str, result: DimensionResult, section_index: int | None) -> None:
        c = self.dims.setdefault(dimension, _DimCounters())
        c.completed += 1
        meta = result.metadata
        if result.error is not None:
            c.failed += 1
        elif meta.get("skipped"):
            c.skipped += 1
        cost = meta.get("cost")
        if cost and not meta.get("cached"):
            c.cost += cost
        self.current_dimension = dimension
        self.current_section = section_index

    @property
    def completed(self) -> int:
        return sum(c.completed for c in self.dims.values())

    def snapshot(self) -> ProgressUpdate:
        elapsed = time.monotonic() - self.started
        dims: dict[str, DimensionProgress] = {}
        completed = total = failed = skipped = 0
        cost = 0.0
        for name, c in self.dims.items():
            dims[name] = DimensionProgress(
                completed=c.completed,
                total=c.total,
                percent=_percent(c.completed, c.total),
                cost=c.cost,
                estimated_cost=_extrapolate(c.cost, c.completed, c.total),
                failed=c.failed,
                eta_seconds=_eta(elapsed, c.completed, c.total),
            )
            completed += c.completed
            total += c.total
            failed += c.failed
            skipped += c.skipped
            cost += c.cost
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
            rate_limited=self.rate_limited,
            waiting_for_capacity=self.waiting_for_capacity,
            in_flight=self.in_flight,
            requests_per_second=completed / elapsed if elapsed > 0 else 0.0,
        )


def _percent(done: int, total: int) -> float:
    return 100.0 * done / total if total else 100.0


def _extrapolate(cost: float, done: int, total: int) -> float:
    return cost * total / done if done else 0.0


def _eta(elapsed: float, done: int, total: int) -> float:
    if done == 0:
        return 0.0
    return max(0.0, elapsed / done * (total - done))
