"""A big run with a store, in bounded memory: each finished section is let go.

With a store recording the run, a plan with no global dimension (nothing needs every
section's results at once) and more than KEEP_IN_MEMORY sections, a section's state and
results are dropped once its last dimension finished: its results are already queued to the
store's writer. What the run's result needs of them is tallied on the way (each dimension's
counts, the costs, the response cache's hits), and `ProcessResult.sections` is a
`StoredSections`: a sized, indexable, read-only sequence that reads the stored run back,
row by row.

Smaller runs, and those the store does not record, keep every result in memory as before: a
result read back from the store is its JSON (data JSON cannot hold comes back as its str()).
A plugin with finalize_results, a cluster run and batch mode keep them too.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from ._run import RunState, SectionState
from .cost import CostTally, Pricing
from .types import DimensionResult, ProcessResult, Section, SectionResult

if TYPE_CHECKING:
    from ._feed import SectionFeed
    from .graph import Plan

__all__ = ["KEEP_IN_MEMORY", "BoundedRun", "FeedSections", "StoredSections"]

KEEP_IN_MEMORY = 10_000  # sections a run with a store keeps whole; beyond, it lets them go

RELEASED = SectionState(Section(content=""), -1, reported_complete=True)
"""What stands in a run's lists for a section it let go: no results, waiting for nothing."""


class BoundedRun:
    """What a run that lets its finished sections go keeps of them."""

    def __init__(self, store: Any, process_id: str, plan: Plan, sections: Sequence[Section],
                 pricing: Pricing) -> None:
        self.store = store
        self.process_id = process_id
        self.plan = plan
        self.sections = sections  # the input (the store holds it too; see StoredSections)
        self.costs = CostTally(pricing)
        # Per section dimension: [completed, failed, skipped] of the sections let go.
        self.counts: dict[str, list[int]] = {}
        self.calls = 0  # results with a call that made provider requests
        self.hits = 0  # results the response cache answered
        self.saved = 0.0
        self.released = 0
        # What the run's end logs (_logs.run_done): results by outcome, provider requests.
        self.outcomes: Counter[str] = Counter()
        self.requests = 0

    def release(self, state: RunState, section: SectionState) -> None:
        """Tally `section`'s results and drop it from the run's lists."""
        for name, result in section.results.items():
            self.tally(name, result)
        index = section.index
        for states in (state.current, state.all_states, *state.snapshots.values()):
            if index < len(states) and states[index] is section:
                states[index] = RELEASED
        self.released += 1

    def tally(self, name: str, result: DimensionResult) -> None:
        counts = self.counts.get(name)
        if counts is None:
            counts = self.counts[name] = [0, 0, 0]
        counts[0] += 1
        counts[1] += result.error is not None
        call = result.call
        counts[2] += call is not None and call.skipped
        self.costs.add(name, result)
        _count_outcome(self.outcomes, result)
        if call is not None:
            self.requests += call.attempts
            self.calls += bool(call.attempts)
            if call.saved_cost is not None:
                self.hits += 1
                self.saved += call.saved_cost

    def process_result(self, state: RunState, metadata: Any) -> ProcessResult:
        """The run's result: the live sections' results added to the tallies, the sections
        read back from the store."""
        costs = copy.deepcopy(self.costs)
        for live in state.all_states:
            for name, result in live.results.items():
                costs.add(name, result)
        for name, result in state.global_results.items():
            costs.add(name, result)
        sections = StoredSections(self.store, self.process_id, self.plan, len(self.sections))
        sections.calls, sections.hits, sections.saved = self.calls, self.hits, self.saved
        sections.outcomes, sections.requests = Counter(self.outcomes), self.requests
        for live in state.all_states:
            for result in live.results.values():
                _count_outcome(sections.outcomes, result)
                if result.call is not None:
                    sections.requests += result.call.attempts
                    sections.calls += bool(result.call.attempts)
                    if result.call.saved_cost is not None:
                        sections.hits += 1
                        sections.saved += result.call.saved_cost
        # model_construct: the sequence stays lazy (validation would read it all).
        fields: dict[str, Any] = {
            "sections": sections, "global_results": dict(state.global_results),
            "transformed_sections": (list(self.sections) if isinstance(self.sections, list)
                                     else self.sections), "costs": costs.summary(),
            "metadata": metadata, "dropped_sections": []}
        return ProcessResult.model_construct(**fields)


def _count_outcome(outcomes: Counter[str], result: DimensionResult) -> None:
    call = result.call
    if call is not None and call.skipped:
        outcomes["skipped"] += 1
    else:
        outcomes["ok" if result.error is None else "failed"] += 1
        outcomes["cached"] += call is not None and call.cached


def bounded_run(store: Any, process_id: str, plan: Plan, sections: Sequence[Section],
                pricing: Pricing, *, eligible: bool) -> BoundedRun | None:
    """A BoundedRun if this run lets its finished sections go (see the module text)."""
    if (not eligible or len(sections) <= KEEP_IN_MEMORY
            or any(plan.is_global(name) for name in plan.order)):
        return None
    return BoundedRun(store, process_id, plan, sections, pricing)


class StoredSections(Sequence[SectionResult]):
    """`ProcessResult.sections` of a run that let its sections go: read from the store as
    it is read here (iterating streams the run; an index reads one row). Read-only; `list()`
    of it is an ordinary list. A later run of the same process id replaces what it reads."""

    def __init__(self, store: Any, process_id: str, plan: Plan, count: int) -> None:
        self._store = store
        self._process_id = process_id
        self._plan = plan
        self._count = count
        self._dimensions = [n for n in plan.order if not plan.is_global(n)]
        # What the run's calls did, for the engine's response cache line and its end's log.
        self.calls = 0
        self.hits = 0
        self.saved = 0.0
        self.outcomes: Counter[str] = Counter()
        self.requests = 0

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> SectionResult: ...

    @overload
    def __getitem__(self, index: slice) -> list[SectionResult]: ...

    def __getitem__(self, index: int | slice) -> SectionResult | list[SectionResult]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not isinstance(index, int):
            raise TypeError(f"section indexes are integers, not {type(index).__name__}")
        position = index + self._count if index < 0 else index
        if not 0 <= position < self._count:
            raise IndexError(f"section index {index} out of range ({self._count} sections)")
        with self._rows() as rows:
            _, section, results = rows.row(position)
        return self._section_result(section, results)

    def __iter__(self) -> Iterator[SectionResult]:
        with self._rows() as rows:
            for index, section, results in rows:
                if index >= self._count:
                    return
                yield self._section_result(section, results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StoredSections, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, Any]) -> list[SectionResult]:
        return list(self)

    def __repr__(self) -> str:
        return f"StoredSections({self._process_id!r}, {self._count} sections)"

    def _rows(self) -> Any:
        from .store._rows import StoredRows

        self._store.flush()  # what this run queued must be visible to the reader
        return StoredRows(self._store.path, self._process_id, self._dimensions)

    def _section_result(self, section: Section | None,
                        results: dict[str, DimensionResult]) -> SectionResult:
        from .parsing import with_parsed

        ordered = {name: with_parsed(self._plan.dimensions[name], results[name])
                   for name in self._dimensions if name in results}
        return SectionResult(section=section or Section(content=""), results=ordered)



class FeedSections(Sequence[Section]):
    """`ProcessResult.transformed_sections` of a run that let its sections go and read its
    input list as it went: the caller's list, each item converted as it is read here."""

    def __init__(self, feed: SectionFeed) -> None:
        assert feed.total is not None
        self._feed = feed
        self._count = feed.total

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Section: ...

    @overload
    def __getitem__(self, index: slice) -> list[Section]: ...

    def __getitem__(self, index: int | slice) -> Section | list[Section]:
        if isinstance(index, slice):
            return [self._feed.item(i) for i in range(*index.indices(self._count))]
        return self._feed.item(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (FeedSections, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                          strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Section]:
        return list(self)

    def __repr__(self) -> str:
        return f"FeedSections({self._count} sections)"
