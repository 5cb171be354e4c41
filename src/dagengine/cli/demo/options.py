"""What a demo run is asked to do (`DemoOptions`) and what it did (`DemoRun`)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from ...types import DimensionResult, ProcessResult, Section
from .settings import BATCH_DELAY, DEFAULT_SEED, REQUESTS_PER_MINUTE, Backend

__all__ = ["DemoOptions", "DemoRun"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    emails: int = 100
    concurrency: int = 100
    backend: Backend | None = None  # None: anthropic when ANTHROPIC_API_KEY is set
    gateway: bool = True
    gateway_url: str | None = None  # a local gateway already running (else one is started)
    display: str | None = None  # None: the walkthrough's own progress line on stdout
    seed: int = DEFAULT_SEED
    latency_scale: float = 1.0  # multiplies the simulator's latency (tests make it small)
    requests_per_minute: float = REQUESTS_PER_MINUTE  # the simulator's limit
    mode: str = "online"  # "batch": through the provider's batch API (no gateway)
    batch_delay: float = BATCH_DELAY  # seconds a simulated batch takes (x latency_scale)

    @property
    def chosen_backend(self) -> Backend:
        if self.backend is not None:
            return self.backend
        return "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "simulator"


@dataclass(slots=True)
class DemoRun:
    """One demo run: what went in, what came back, and the report printed about it."""

    options: DemoOptions
    emails: list[Section]
    result: ProcessResult
    duration: float  # seconds spent in engine.process()
    completed_after: float | None  # when on_dimension_complete fired, seconds from the start
    backend: Backend
    gateway: Literal["local", "hosted"] | None
    simulator_stats: dict[str, Any] | None  # GET /stats after the run (simulator only)
    engine_rate_limited: int = 0  # 429s that reached the engine
    report: str = ""
    results: list[DimensionResult] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return sum(1 for r in self.results if _succeeded(r))

    @property
    def categories(self) -> Counter[str]:
        return Counter(_category(r) for r in self.results if _succeeded(r))

    @property
    def attempts(self) -> int:
        """Requests the engine sent (its own retries included)."""
        return sum(int(r.metadata.get("attempts") or 1) for r in self.results)


def _succeeded(result: DimensionResult) -> bool:
    return result.ok and result.data is not None


def _category(result: DimensionResult) -> str:
    data = result.data
    category = data.get("category") if isinstance(data, dict) else None
    return str(category) if category else "unknown"
