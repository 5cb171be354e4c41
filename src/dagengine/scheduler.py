"""Runs a plan: per-section pipelines, global barriers only where the DAG needs them, transforms.

Work items are (dimension, section) pairs, or a global dimension. An item becomes ready when
its own dependencies are done and goes into the ReadyQueue (ready.py: longest expected
remaining chain first, so the tail starts early). Whenever a concurrency slot frees, the
dispatcher starts the item that is first at that moment. An item holds its slot while it
runs and gives it back while it waits to retry.

What the run has done so far is its RunState; what watches it (progress, the display, the
store, the callbacks) hears of each step through its Observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, replace
from typing import Any

from ._run import Run, RunState, SectionState
from .call import CallRunner, CallSite, Slot
from .errors import DagEngineError, HookError, ValidationError
from .parsing import with_parsed
from .plugin import HookContext, Observers, maybe_await
from .ready import ReadyQueue
from .types import CallInfo, DimensionResult, Section, SkipWithResult, to_sections

FEED_WINDOW = 4096  # sections of a stream read ahead of the finished ones, at least


@dataclass(frozen=True, slots=True)
class _Item:
    dimension: str
    state: SectionState | None  # None for a global dimension


class RunFailed(Exception):
    """Carries the error that stopped a run with continue_on_error=False."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Scheduler:
    """Runs one run's items, each as soon as what it depends on is done."""

    def __init__(self, run: Run, state: RunState, observers: Observers) -> None:
        self.run = run
        self.state = state
        self.observers = observers
        self.calls = CallRunner(run, observers)
        plan = run.plan
        self._section_dependents = {
            n: tuple(d for d in plan.dependents[n] if not plan.is_global(d)) for n in plan.order
        }
        self._ready: ReadyQueue[_Item] = ReadyQueue(plan, run.call_times)
        self._slots = asyncio.Semaphore(run.config.concurrency)
        # While the input is still being read: the section dimensions armed so far (their
        # items grow with it), and how far ahead of the finished sections reading may go.
        self._growing: list[str] = []
        # A list is in memory already, and with a global dimension no section finishes
        # before the whole input is in: only a stream without one is read a window ahead,
        # and a list whose finished sections are let go (_bounded: their states are not).
        bounded = (state.feed is not None and (state.feed.total is None
                                               or state.bounded is not None)
                   and not any(plan.is_global(n) for n in plan.order))
        self._window = max(FEED_WINDOW, 4 * run.config.concurrency) if bounded else math.inf
        self._room = asyncio.Event()

    async def execute(self) -> None:
        """Execute every item; raises RunFailed on the first failure in strict mode."""
        if self.state.all_finished:
            return
        batcher = self.calls.batcher or contextlib.nullcontext()
        try:
            async with batcher, asyncio.TaskGroup() as group:
                for name in self.run.plan.order:
                    await self._arm_if_ready(name)
                if self.state.feeding:
                    group.create_task(self._feed())
                while item := await self._next_item(slot := Slot(self._slots)):
                    group.create_task(self._run_item(item, slot))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None

    # -- readiness -------------------------------------------------------------------------

    async def _arm_if_ready(self, name: str) -> None:
        """Enqueue the items of `name` whose dependencies are done, once the dimensions it
        waits for as a whole (its global dependencies) are finished."""
        state, plan = self.state, self.run.plan
        if state.armed(name):
            return
        deps = plan.dependencies[name]
        if plan.is_global(name):
            if not state.feeding and all(d in state.finished for d in deps):
                state.arm(name, 1)
                self._enqueue(_Item(name, None))
            return
        if not all(d in state.finished for d in deps if plan.is_global(d)):
            return
        snapshot = self._snapshot_for(name)
        state.snapshots[name] = snapshot
        known = state.feed.total if state.feed is not None and state.feeding else None
        state.arm(name, len(snapshot) if known is None else known)
        if state.feeding:
            self._growing.append(name)
        self._arm_states(name, snapshot)
        if not snapshot and not state.feeding:
            await self._finish_dimension(name)

    def _arm_states(self, name: str, states: list[SectionState]) -> None:
        """Enqueue the items of `name` over `states` that are ready; the others wait."""
        state, plan = self.state, self.run.plan
        section_deps = [d for d in plan.dependencies[name] if not plan.is_global(d)]
        if not section_deps:
            for section_state in states:
                self._enqueue(_Item(name, section_state))
            return
        for section_state in states:
            missing = sum(1 for d in section_deps
                          if d not in section_state.results and d not in state.finished)
            if missing:
                section_state.waiting[name] = missing
            else:
                self._enqueue(_Item(name, section_state))

    async def _feed(self) -> None:
        """Read the rest of the input as the run needs it, at most a window ahead of the
        sections that are finished; then arm what waited for the whole list."""
        state, feed = self.state, self.state.feed
        assert feed is not None
        async for chunk in feed.chunks():
            states = state.add_sections(chunk)
            for name in self._growing:
                state.snapshots[name].extend(states)
                if feed.total is None:  # a stream: as many items as sections read so far
                    state.expected[name] += len(states)
                self._arm_states(name, states)
            while len(state.current) - state.completed_sections >= self._window:
                self._room.clear()
                await self._room.wait()
        state.feeding = False
        for name in self._growing:
            state.expected[name] = len(state.snapshots[name])
            if state.done.get(name, 0) == state.expected[name]:
                await self._finish_dimension(name)
        for name in self.run.plan.order:
            await self._arm_if_ready(name)

    def _snapshot_for(self, name: str) -> list[SectionState]:
        """The sections section dimension `name` runs over, taken as it is armed (a Ray
        worker's shard narrows it to the shard's sections of that dimension)."""
        return list(self.state.current)

    @property
    def total_sections(self) -> int:
        """The run's section count as hooks and prompts see it (on a Ray worker: the run's,
        not the shard's)."""
        return self.state.total_sections

    def _enqueue(self, item: _Item) -> None:
        self._ready.put(item.dimension, None if item.state is None else item.state.index, item)

    async def _next_item(self, slot: Slot) -> _Item | None:
        """The item to run in `slot`, chosen once the slot is free (None: the run is done).

        The slot is taken only when work is ready: a dispatcher holding a slot while waiting
        for work would starve the calls that gave theirs back to wait for a retry."""
        if not await self._ready.wait():
            return None
        await slot.acquire()
        return self._ready.pop()

    def _resolve_waiting(self, dependency: str, section_state: SectionState) -> None:
        for dependent in self._section_dependents[dependency]:
            if dependent in section_state.waiting:
                self._resolve_one(dependent, section_state)

    async def _finish_dimension(self, name: str) -> None:
        state, plan = self.state, self.run.plan
        if name in state.finished:  # its last result and the end of the input, both seen
            return
        state.finished.add(name)
        if name not in state.started:
            await self._dimension_started(name)
        await self.observers.call("dimension_done", name, state.dimension_summary(name))
        for dependent in plan.dependents[name]:
            if state.armed(dependent) and not plan.is_global(dependent):
                for section_state in state.snapshots[dependent]:
                    if dependent in section_state.waiting and name not in section_state.results:
                        self._resolve_one(dependent, section_state)
            else:
                await self._arm_if_ready(dependent)
        if state.all_finished:
            self._ready.close()

    def _resolve_one(self, dependent: str, section_state: SectionState) -> None:
        """One dependency of `dependent` is settled for this section; enqueue it at the last."""
        count = section_state.waiting[dependent]
        if count > 1:
            section_state.waiting[dependent] = count - 1
        else:
            del section_state.waiting[dependent]
            self._enqueue(_Item(dependent, section_state))

    async def _dimension_started(self, name: str) -> None:
        self.state.started.add(name)
        await self.observers.call("dimension_started", name)

    # -- execution -------------------------------------------------------------------------

    async def _run_item(self, item: _Item, slot: Slot) -> None:
        try:
            if item.dimension not in self.state.started:
                await self._dimension_started(item.dimension)
            if item.state is None:
                await self._run_global(item.dimension, slot)
            else:
                await self._run_section(item.dimension, item.state, slot)
        finally:
            slot.release()

    async def _run_section(self, name: str, section_state: SectionState, slot: Slot) -> None:
        if not section_state.started:
            section_state.started = True
            await self.observers.call("section_started", section_state.index,
                                      section_state.section)
        stored = self._stored(name, section_state.index)
        if stored is not None:
            await self._complete_section(name, section_state, stored, None, restored=True)
            return
        deps = await self._dependencies_for_section(name, section_state)
        site = CallSite(self.run.plan.dimensions[name], [section_state.section],
                        section_state.index, self.total_sections, deps)
        result, error = await self._execute(site, slot, "should_skip_section_dimension")
        await self._complete_section(name, section_state, result, error)

    async def _run_global(self, name: str, slot: Slot) -> None:
        state, hooks = self.state, self.run.hooks
        sections = [s.section for s in state.current]
        stored = self._stored(name, None)
        if stored is not None:
            result, error = stored, None
        else:
            deps = state.dependencies_for_global(name)
            if hooks.has("transform_dependencies"):
                deps = await hooks.call("transform_dependencies", self._context(
                    name, True, sections=sections, dependencies=deps), deps)
            site = CallSite(self.run.plan.dimensions[name], sections, None, len(sections), deps)
            result, error = await self._execute(site, slot, "should_skip_global_dimension")
        state.global_results[name] = result
        state.count_result(name)
        await self._report(name, None, result, error, restored=stored is not None)
        if result.ok:
            await self._transform(name, result, sections)
        await self._finish_dimension(name)

    def _stored(self, name: str, index: int | None) -> DimensionResult | None:
        """The result a resumed run takes from the store, its `parsed` rebuilt from its data."""
        stored = self.run.preloaded.get((name, index))
        return None if stored is None else with_parsed(self.run.plan.dimensions[name], stored)

    async def _execute(
        self, site: CallSite, slot: Slot, skip_hook: str
    ) -> tuple[DimensionResult, BaseException | None]:
        """Skip check, the before/after hooks, and the call itself."""
        hooks, times = self.run.hooks, self.run.call_times
        if hooks.has(skip_hook):
            skip = await hooks.call(skip_hook, self._site_context(site), False)
            if skip:
                return with_parsed(site.dimension, _skipped(skip)), None
        if hooks.has("before_dimension_execute"):
            await hooks.call("before_dimension_execute", self._site_context(site))
        started = times.started(site.name)
        observed = False  # a cancelled call or a cache hit says nothing about the provider
        try:
            result, error = await self.calls.execute(site, slot)
            observed = result.call is None or not result.call.cached
        finally:
            times.finished(site.name, started, observed=observed)
        with_parsed(site.dimension, result)
        if hooks.has("after_dimension_execute"):
            await hooks.call("after_dimension_execute", self._site_context(
                site, result=result, duration=time.monotonic() - started, error=error))
        return result, error

    async def _complete_section(
        self, name: str, section_state: SectionState, result: DimensionResult,
        error: BaseException | None, *, restored: bool = False,
    ) -> None:
        state = self.state
        section_state.results[name] = result
        last = state.count_result(name)
        await self._report(name, section_state.index, result, error, restored=restored)
        self._resolve_waiting(name, section_state)
        if not section_state.reported_complete and all(
                d in section_state.results for d in state.section_dims):
            section_state.reported_complete = True
            state.completed_sections += 1
            if state.feeding and not self._room.is_set():
                self._room.set()
            if self.observers.has("section_done"):  # a SectionResult only for a listener
                await self.observers.call("section_done", section_state.index,
                                          state.section_result(section_state))
            if state.bounded is not None:  # its results are queued to the store: let it go
                state.bounded.release(state, section_state)
        if last:
            await self._finish_dimension(name)

    async def _report(self, name: str, index: int | None, result: DimensionResult,
                      error: BaseException | None, *, restored: bool) -> None:
        """Tell the observers of a result; in strict mode a failed one stops the run."""
        await self.observers.call("restored" if restored else "result", name, index, result)
        if result.error is not None:
            failure = error or RuntimeError(result.error)
            await self.observers.call("error", failure, {"dimension": name, "section_index": index})
            if not self.run.config.continue_on_error:
                raise RunFailed(failure)
        await self.observers.call("progressed")

    async def _transform(self, name: str, result: DimensionResult, sections: list[Section]) -> None:
        """Apply the dimension's transform, then the plugin's transform_sections.

        One that raises or returns something other than sections is reported through on_error
        and leaves the list as it was (with continue_on_error=False it stops the run)."""
        replacement: list[Section] | None = None
        transform = self.run.plan.dimensions[name].transform
        if transform is not None:
            try:
                answer = await maybe_await(transform(result, sections))
                if answer is not None:
                    replacement = to_sections(answer, f"{name}.transform(result, sections)")
            except ValidationError as exc:
                await self._transform_failed(name, exc)
            except Exception as exc:
                await self._transform_failed(name, HookError(f"{name}.transform", exc))
        if self.run.hooks.has("transform_sections"):
            answer = await self.run.hooks.call("transform_sections", self._context(
                name, True, sections=replacement if replacement is not None else sections,
                result=result, global_results=dict(self.state.global_results)), None)
            if answer is not None:
                try:
                    replacement = to_sections(answer, "transform_sections(ctx)")
                except ValidationError as exc:
                    await self._transform_failed(name, exc)
        if replacement is not None:
            self.state.replace_sections(replacement)

    async def _transform_failed(self, name: str, error: DagEngineError) -> None:
        await self.observers.call("error", error, {"dimension": name, "section_index": None})
        if not self.run.config.continue_on_error:
            raise RunFailed(error)

    # -- dependencies ----------------------------------------------------------------------

    async def _dependencies_for_section(
        self, name: str, section_state: SectionState
    ) -> dict[str, DimensionResult]:
        deps = self.state.dependencies_for_section(name, section_state)
        if self.run.hooks.has("transform_dependencies"):
            deps = await self.run.hooks.call("transform_dependencies", self._context(
                name, False, section=section_state.section, section_index=section_state.index,
                sections=[section_state.section], dependencies=deps), deps)
        return deps

    def _context(self, name: str, is_global: bool, **fields: Any) -> HookContext:
        return HookContext(process_id=self.run.process_id, dimension=name, is_global=is_global,
                           total_sections=self.total_sections, **fields)

    def _site_context(self, site: CallSite, **fields: Any) -> HookContext:
        global_results = dict(self.state.global_results)
        return site.context(self.run.process_id, global_results=global_results, **fields)


def _skipped(skip: Any) -> DimensionResult:
    """The result of a call a skip hook skipped: the hook's own result, or a skip marker."""
    if isinstance(skip, SkipWithResult):
        result = skip.result.model_copy(deep=True)
        result.metadata["cached"] = True
        result.metadata.setdefault("skipped", True)
        call = result.call or CallInfo.from_metadata(result.metadata) or CallInfo()
        result.call = replace(call, cached=True, skipped=bool(result.metadata["skipped"]))
        return result
    reason = skip if isinstance(skip, str) else "skipped by should_skip hook"
    return DimensionResult(data={"skipped": True, "reason": reason},
                           metadata={"skipped": True, "reason": reason, "cost": 0.0},
                           call=CallInfo(skipped=True))


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
