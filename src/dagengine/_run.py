"""One run: what it works with (`Run`, fixed for its length) and what it has done so far
(`RunState`: results, and how far each dimension got).

The engine builds both once per process() call and hands them, with the run's observers, to
the scheduler; every call of the run reads its dependencies from the same `Run`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._feed import SectionFeed
from ._hedge import Hedger
from .config import ExecutionConfig
from .cost import Pricing, summarize_costs
from .graph import Plan
from .plugin import Hooks, Plugin
from .providers.base import ProviderRegistry
from .ratelimit import RateLimiter
from .ready import CallTimes
from .types import (
    DimensionResult,
    ProcessResult,
    ProviderRequest,
    ProviderResponse,
    Section,
    SectionResult,
)

if TYPE_CHECKING:
    from .store._batches import BatchLedger

# Results a resumed run takes as done instead of calling, by (dimension, section index or
# None for a global dimension).
Preloaded = Mapping[tuple[str, int | None], DimensionResult]


class ResponseCache(Protocol):
    """Answers identical requests from earlier answers (the store's response cache)."""

    async def lookup(self, provider_name: str,
                     request: ProviderRequest) -> ProviderResponse | None: ...

    async def store(self, provider_name: str, request: ProviderRequest,
                    response: ProviderResponse) -> None: ...


class LetsSectionsGo(Protocol):
    """What a run that lets its finished sections go keeps of them (_bounded.BoundedRun)."""

    counts: dict[str, list[int]]  # per dimension: completed, failed, skipped, of those

    def release(self, state: RunState, section: SectionState) -> None: ...

    def process_result(self, state: RunState, metadata: Any) -> ProcessResult: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """What one run works with, the same from its first call to its last."""

    process_id: str
    plan: Plan
    plugin: Plugin
    hooks: Hooks
    config: ExecutionConfig
    registry: ProviderRegistry
    limiter: RateLimiter
    pricing: Pricing
    call_times: CallTimes
    """What calls take, learned over the engine's runs (the dispatcher's order)."""
    metadata: Any = None
    """process(metadata=...), as before_process_start left it."""
    cache: ResponseCache | None = None
    preloaded: Preloaded = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    """The jitter of retry backoffs."""
    hedger: Hedger | None = None
    """execution.hedge's latencies and budget, for this run (dagengine/_hedge.py)."""
    batch_ledger: BatchLedger | None = None
    """Where batch mode records its provider batches (the store's), if the run has a store."""

    def process_result(self, state: RunState) -> ProcessResult:
        """The run's result as `state` stands: finished, stopped early or failed."""
        return state.process_result(self.pricing, self.metadata)


@dataclass(slots=True, eq=False)
class SectionState:
    """One section's place in the run: its results and what its waiting dimensions still need."""

    section: Section
    index: int
    results: dict[str, DimensionResult] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    started: bool = False
    reported_complete: bool = False


class RunState:
    """Each section's results and the global results, over a section list transforms may
    change, and how far each dimension got.

    `all_states` keeps the states of sections transformed away: their results still count.
    A dimension is armed once its items are known (`expected`, over the section list as it
    was then: `snapshots`); `done` counts its results, and it is finished once their
    completion is reported.
    """

    def __init__(self, plan: Plan, sections: list[Section],
                 feed: SectionFeed | None = None) -> None:
        self.plan = plan
        # Where more sections come from while the run goes (see _feed.py); None: all given.
        self.feed = feed
        self.feeding = feed is not None
        self.completed_sections = 0  # sections whose every dimension has its result
        self.current = [SectionState(s, i) for i, s in enumerate(sections)]
        self.all_states = list(self.current)
        self.global_results: dict[str, DimensionResult] = {}
        # The sections each section dimension runs over: the list as it was when it was armed.
        self.snapshots: dict[str, list[SectionState]] = {}
        self.section_dims = [n for n in plan.order if not plan.is_global(n)]
        self.expected: dict[str, int] = {}  # items of each armed dimension
        self.done: dict[str, int] = {}  # results of each dimension so far
        self.started: set[str] = set()  # dimensions whose start was reported
        self.finished: set[str] = set()  # dimensions whose completion was reported
        # Set when the run lets its finished sections go (a big run with a store: _bounded).
        self.bounded: LetsSectionsGo | None = None

    def armed(self, name: str) -> bool:
        return name in self.expected

    def arm(self, name: str, count: int) -> None:
        self.expected[name] = count
        self.done.setdefault(name, 0)

    def count_result(self, name: str) -> bool:
        """One more result of `name`; True when it was the dimension's last (never while
        sections are still coming in)."""
        self.done[name] = done = self.done.get(name, 0) + 1
        return done == self.expected.get(name) and not self.feeding

    @property
    def total_sections(self) -> int:
        """The number of sections: of the input while it is still being read (as far as it
        is known: a list's length, or what a stream gave so far), else of the current list."""
        if self.feeding and self.feed is not None and self.feed.total is not None:
            return self.feed.total
        return len(self.current)

    def add_sections(self, sections: list[Section]) -> list[SectionState]:
        """More sections of the input, at the end of the list; their states."""
        start = len(self.current)
        states = [SectionState(s, start + i) for i, s in enumerate(sections)]
        self.current.extend(states)
        self.all_states.extend(states)
        return states

    @property
    def all_finished(self) -> bool:
        return len(self.finished) == len(self.plan.order)

    def process_result(self, pricing: Pricing, metadata: Any) -> ProcessResult:
        """The run's result as it stands: finished, stopped early or failed."""
        if self.feeding and self.feed is not None:
            # A run that stopped while reading a list still shows every one of its sections.
            self.add_sections(self.feed.rest_of_list())
        if self.bounded is not None:
            return self.bounded.process_result(self, metadata)
        return ProcessResult(
            sections=self.section_results(),
            global_results=dict(self.global_results),
            transformed_sections=[s.section for s in self.current],
            costs=summarize_costs(self.all_results(), pricing),
            metadata=metadata,
            dropped_sections=self.dropped_results(),
        )

    def section_results(self) -> list[SectionResult]:
        return [self.section_result(s) for s in self.current]

    def dropped_results(self) -> list[SectionResult]:
        kept = {id(s) for s in self.current}
        return [self.section_result(s) for s in self.all_states if id(s) not in kept]

    def all_results(self) -> list[tuple[str, DimensionResult]]:
        """Every result the run produced, including those of sections since transformed away."""
        pairs = [(d, r) for s in self.all_states for d, r in s.results.items()]
        pairs.extend(self.global_results.items())
        return pairs

    def section_result(self, state: SectionState) -> SectionResult:
        ordered = {d: state.results[d] for d in self.section_dims if d in state.results}
        return SectionResult(section=state.section, results=ordered)

    def dimension_summary(self, name: str) -> DimensionResult:
        if self.plan.is_global(name):
            return self.global_results.get(name) or DimensionResult(error="did not run")
        snapshot = self.snapshots.get(name, [])
        results = [s.results[name] for s in snapshot if name in s.results]
        failed = sum(1 for r in results if r.error is not None)
        skipped = sum(1 for r in results if r.call is not None and r.call.skipped)
        completed = len(results)
        if self.bounded is not None and name in self.bounded.counts:  # sections let go
            let_go, let_go_failed, let_go_skipped = self.bounded.counts[name]
            completed, failed, skipped = (completed + let_go, failed + let_go_failed,
                                          skipped + let_go_skipped)
        data = {"total": len(snapshot), "completed": completed, "failed": failed,
                "skipped": skipped}
        error = f"{failed} of {len(snapshot)} sections failed" if failed else None
        return DimensionResult(data=data, error=error)

    def dependencies_for_section(
        self, name: str, state: SectionState
    ) -> dict[str, DimensionResult]:
        deps: dict[str, DimensionResult] = {}
        for dep in self.plan.dependencies[name]:
            if self.plan.is_global(dep):
                deps[dep] = self.global_results.get(dep) or _missing(dep)
            else:
                deps[dep] = state.results.get(dep) or _missing(dep)
        return deps

    def dependencies_for_global(self, name: str) -> dict[str, DimensionResult]:
        deps: dict[str, DimensionResult] = {}
        for dep in self.plan.dependencies[name]:
            if self.plan.is_global(dep):
                deps[dep] = self.global_results.get(dep) or _missing(dep)
                continue
            snapshot = self.snapshots.get(dep, [])
            deps[dep] = DimensionResult(data={
                "sections": [s.results.get(dep) or _missing(dep) for s in snapshot],
                "aggregated": True,
                "total_sections": len(snapshot),
            })
        return deps

    def replace_sections(self, sections: list[Section]) -> None:
        by_identity = {id(s.section): s for s in self.current}
        used: set[int] = set()
        states: list[SectionState] = []
        for index, section in enumerate(sections):
            state = by_identity.get(id(section))
            if state is None or id(state) in used:
                state = SectionState(section, index)
                self.all_states.append(state)
            state.index = index
            used.add(id(state))
            states.append(state)
        self.current = states


def _missing(dependency: str) -> DimensionResult:
    return DimensionResult(
        error=f"dimension {dependency!r} has no result for this section "
        "(the section list was transformed after it ran)"
    )
