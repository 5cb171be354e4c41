"""The run state: what a run has produced so far, and what is read from it.

The scheduler writes each result into it; the engine reads the run's results from it, and a
dimension reads what its dependencies produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cost import Pricing, summarize_costs
from .graph import Plan
from .types import DimensionResult, ProcessResult, Section, SectionResult


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
    """Each section's results and the global results, over a section list transforms may change.

    `all_states` keeps the states of sections transformed away: their results still count.
    """

    def __init__(self, plan: Plan, sections: list[Section]) -> None:
        self.plan = plan
        self.current = [SectionState(s, i) for i, s in enumerate(sections)]
        self.all_states = list(self.current)
        self.global_results: dict[str, DimensionResult] = {}
        # The sections each section dimension runs over: the list as it was when it was armed.
        self.snapshots: dict[str, list[SectionState]] = {}
        self.section_dims = [n for n in plan.order if not plan.is_global(n)]

    def process_result(self, pricing: Pricing, metadata: Any) -> ProcessResult:
        """The run's result as it stands: finished, stopped early or failed."""
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
        skipped = sum(1 for r in results if r.metadata.get("skipped"))
        data = {"total": len(snapshot), "completed": len(results), "failed": failed,
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
