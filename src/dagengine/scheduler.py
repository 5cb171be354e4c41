"""Runs a plan: per-section pipelines, global barriers only where the DAG needs them, transforms.

Work items are (dimension, section) pairs, or a global dimension. An item becomes ready when
its own dependencies are done and goes into the ReadyQueue (ready.py: longest expected
remaining chain first, so the tail starts early). Whenever a concurrency slot frees, the
dispatcher starts the item that is first at that moment. An item holds its slot while it
runs and gives it back while it waits to retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._coerce import skipped, with_parsed
from ._run_state import RunState, SectionState
from ._site import CallSite, Slot
from .call import Caller
from .config import ExecutionConfig
from .errors import DagEngineError, HookError, ValidationError
from .graph import Plan
from .plugin import HookContext, Hooks, resolve
from .progress import ProgressTracker
from .ready import CallTimes, ReadyQueue
from .types import DimensionResult, Section, to_sections

Emit = Callable[..., Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Item:
    dimension: str
    state: SectionState | None  # None for a global dimension


class RunFailed(Exception):
    """Carries the error that stopped a run with continue_on_error=False."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# Results the scheduler should take as done instead of calling (a resumed run), and where it
# reports each finished result (the store). Keys: (dimension, section index or None).
Preloaded = Mapping[tuple[str, int | None], DimensionResult]
Recorder = Callable[[str, int | None, DimensionResult], Awaitable[None] | None]


class Scheduler:
    def __init__(
        self,
        *,
        plan: Plan,
        caller: Caller,
        hooks: Hooks,
        config: ExecutionConfig,
        progress: ProgressTracker,
        emit: Emit,
        process_id: str,
        sections: list[Section],
        preloaded: Preloaded | None = None,
        recorder: Recorder | None = None,
        on_progress: Callable[[], Awaitable[None]] | None = None,
        times: CallTimes | None = None,
    ) -> None:
        self.plan = plan
        self.caller = caller
        self.hooks = hooks
        self.config = config
        self.progress = progress
        self.emit = emit
        self.process_id = process_id
        self.run_state = RunState(plan, sections)
        self._preloaded = preloaded or {}
        self._recorder = recorder
        # A store's recorder also takes each provider request a call makes (StoredRun.record).
        caller.on_attempt = getattr(recorder, "attempt", None)
        self._on_progress = on_progress
        self._remaining: dict[str, int] = {}
        self._armed: set[str] = set()
        self._finished: set[str] = set()
        self._started_dims: set[str] = set()
        self._unfinished = set(plan.order)
        self._section_dependents = {
            n: tuple(d for d in plan.dependents[n] if not plan.is_global(d)) for n in plan.order
        }
        self._ready: ReadyQueue[_Item] = ReadyQueue(plan, times)
        self._slots = asyncio.Semaphore(config.concurrency)

    async def run(self) -> None:
        """Execute every item; raises RunFailed on the first failure in strict mode."""
        if not self._unfinished:
            return
        try:
            async with asyncio.TaskGroup() as group:
                for name in self.plan.order:
                    await self._maybe_arm(name)
                while item := await self._next_item(slot := Slot(self._slots)):
                    group.create_task(self._run_item(item, slot))
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None

    # -- readiness -------------------------------------------------------------------------

    async def _maybe_arm(self, name: str) -> None:
        if name in self._armed:
            return
        deps = self.plan.dependencies[name]
        if self.plan.is_global(name):
            if all(d in self._finished for d in deps):
                self._armed.add(name)
                self._remaining[name] = 1
                self.progress.expect(name, 1)
                self._enqueue(_Item(name, None))
            return
        if not all(d in self._finished for d in deps if self.plan.is_global(d)):
            return
        self._armed.add(name)
        snapshot = list(self.run_state.current)
        self.run_state.snapshots[name] = snapshot
        self._remaining[name] = len(snapshot)
        self.progress.expect(name, len(snapshot))
        section_deps = [d for d in deps if not self.plan.is_global(d)]
        for state in snapshot:
            missing = sum(1 for d in section_deps
                          if d not in state.results and d not in self._finished)
            if missing:
                state.waiting[name] = missing
            else:
                self._enqueue(_Item(name, state))
        if not snapshot:
            await self._finish_dimension(name)

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

    def _resolve_waiting(self, dependency: str, state: SectionState) -> None:
        for dependent in self._section_dependents[dependency]:
            if dependent in state.waiting:
                self._resolve_one(dependent, state)

    async def _finish_dimension(self, name: str) -> None:
        self._finished.add(name)
        self._unfinished.discard(name)
        if name not in self._started_dims:
            await self._dimension_started(name)
        await self.emit("on_dimension_complete", name, self.run_state.dimension_summary(name))
        for dependent in self.plan.dependents[name]:
            if dependent in self._armed and not self.plan.is_global(dependent):
                for state in self.run_state.snapshots[dependent]:
                    if dependent in state.waiting and name not in state.results:
                        self._resolve_one(dependent, state)
            else:
                await self._maybe_arm(dependent)
        if not self._unfinished:
            self._ready.close()

    def _resolve_one(self, dependent: str, state: SectionState) -> None:
        """One dependency of `dependent` is settled for `state`; enqueue it at the last."""
        count = state.waiting[dependent]
        if count > 1:
            state.waiting[dependent] = count - 1
        else:
            del state.waiting[dependent]
            self._enqueue(_Item(dependent, state))

    async def _dimension_started(self, name: str) -> None:
        self._started_dims.add(name)
        await self.emit("on_dimension_start", name)

    # -- execution -------------------------------------------------------------------------

    async def _run_item(self, item: _Item, slot: Slot) -> None:
        try:
            if item.dimension not in self._started_dims:
                await self._dimension_started(item.dimension)
            if item.state is None:
                await self._run_global(item.dimension, slot)
            else:
                await self._run_section(item.dimension, item.state, slot)
        finally:
            slot.release()

    async def _run_section(self, name: str, state: SectionState, slot: Slot) -> None:
        if not state.started:
            state.started = True
            await self.emit("on_section_start", state.index, state.section)
        stored = self._stored(name, state.index)
        if stored is not None:
            await self._complete_section(name, state, stored, None, record=False)
            return
        deps = await self._dependencies_for_section(name, state)
        site = CallSite(self.plan.dimensions[name], [state.section], state.index,
                        len(self.run_state.current), deps)
        result, error = await self._execute(site, slot, "should_skip_section_dimension")
        await self._complete_section(name, state, result, error)

    async def _run_global(self, name: str, slot: Slot) -> None:
        sections = [s.section for s in self.run_state.current]
        stored = self._stored(name, None)
        if stored is not None:
            result, error = stored, None
        else:
            deps = self.run_state.dependencies_for_global(name)
            if self.hooks.has("transform_dependencies"):
                deps = await self.hooks.call("transform_dependencies", self._context(
                    name, True, sections=sections, dependencies=deps), deps)
            site = CallSite(self.plan.dimensions[name], sections, None, len(sections), deps)
            result, error = await self._execute(site, slot, "should_skip_global_dimension")
        self.run_state.global_results[name] = result
        self.progress.record(name, result, None)
        if stored is None:
            await self._record(name, None, result)
        await self._after_result(name, None, result, error)
        if result.ok:
            await self._transform(name, result, sections)
        self._remaining[name] = 0
        await self._finish_dimension(name)

    def _stored(self, name: str, index: int | None) -> DimensionResult | None:
        """The result a resumed run takes from the store, its `parsed` rebuilt from its data."""
        stored = self._preloaded.get((name, index))
        return None if stored is None else with_parsed(self.plan.dimensions[name], stored)

    async def _execute(
        self, site: CallSite, slot: Slot, skip_hook: str
    ) -> tuple[DimensionResult, BaseException | None]:
        """Skip check, the before/after hooks, and the call itself."""
        if self.hooks.has(skip_hook):
            skip = await self.hooks.call(skip_hook, self._site_context(site), False)
            if skip:
                return with_parsed(site.dimension, skipped(skip)), None
        if self.hooks.has("before_dimension_execute"):
            await self.hooks.call("before_dimension_execute", self._site_context(site))
        started = self._ready.times.started(site.name)
        observed = False  # a cancelled call or a cache hit says nothing about the provider
        try:
            result, error = await self.caller.execute(site, slot)
            observed = not result.metadata.get("cached")
        finally:
            self._ready.times.finished(site.name, started, observed=observed)
        with_parsed(site.dimension, result)
        if self.hooks.has("after_dimension_execute"):
            await self.hooks.call("after_dimension_execute", self._site_context(
                site, result=result, duration=time.monotonic() - started, error=error))
        return result, error

    async def _complete_section(
        self, name: str, state: SectionState, result: DimensionResult,
        error: BaseException | None, *, record: bool = True,
    ) -> None:
        state.results[name] = result
        self.progress.record(name, result, state.index)
        if record:
            await self._record(name, state.index, result)
        await self._after_result(name, state.index, result, error)
        self._resolve_waiting(name, state)
        self._remaining[name] -= 1
        dims = self.run_state.section_dims
        if not state.reported_complete and all(d in state.results for d in dims):
            state.reported_complete = True
            await self.emit("on_section_complete", state.index,
                            self.run_state.section_result(state))
        if self._remaining[name] == 0:
            await self._finish_dimension(name)

    async def _after_result(
        self, name: str, index: int | None, result: DimensionResult, error: BaseException | None
    ) -> None:
        if result.error is not None:
            await self.emit("on_error", error or RuntimeError(result.error),
                            {"dimension": name, "section_index": index})
            if not self.config.continue_on_error:
                raise RunFailed(error or RuntimeError(result.error))
        if self._on_progress is not None:
            await self._on_progress()

    async def _record(self, name: str, index: int | None, result: DimensionResult) -> None:
        if self._recorder is not None:
            await resolve(self._recorder(name, index, result))

    async def _transform(self, name: str, result: DimensionResult, sections: list[Section]) -> None:
        """Apply the dimension's transform, then the plugin's transform_sections.

        One that raises or returns something other than sections is reported through on_error
        and leaves the list as it was (with continue_on_error=False it stops the run)."""
        replacement: list[Section] | None = None
        transform = self.plan.dimensions[name].transform
        if transform is not None:
            try:
                answer = await resolve(transform(result, sections))
                if answer is not None:
                    replacement = to_sections(answer, f"{name}.transform(result, sections)")
            except ValidationError as exc:
                await self._transform_failed(name, exc)
            except Exception as exc:
                await self._transform_failed(name, HookError(f"{name}.transform", exc))
        if self.hooks.has("transform_sections"):
            answer = await self.hooks.call("transform_sections", self._context(
                name, True, sections=replacement if replacement is not None else sections,
                result=result, global_results=dict(self.run_state.global_results)), None)
            if answer is not None:
                try:
                    replacement = to_sections(answer, "transform_sections(ctx)")
                except ValidationError as exc:
                    await self._transform_failed(name, exc)
        if replacement is not None:
            self.run_state.replace_sections(replacement)

    async def _transform_failed(self, name: str, error: DagEngineError) -> None:
        await self.emit("on_error", error, {"dimension": name, "section_index": None})
        if not self.config.continue_on_error:
            raise RunFailed(error)

    # -- dependencies ----------------------------------------------------------------------

    async def _dependencies_for_section(
        self, name: str, state: SectionState
    ) -> dict[str, DimensionResult]:
        deps = self.run_state.dependencies_for_section(name, state)
        if self.hooks.has("transform_dependencies"):
            deps = await self.hooks.call("transform_dependencies", self._context(
                name, False, section=state.section, section_index=state.index,
                sections=[state.section], dependencies=deps), deps)
        return deps

    def _context(self, name: str, is_global: bool, **fields: Any) -> HookContext:
        return HookContext(process_id=self.process_id, dimension=name, is_global=is_global,
                           total_sections=len(self.run_state.current), **fields)

    def _site_context(self, site: CallSite, **fields: Any) -> HookContext:
        global_results = dict(self.run_state.global_results)
        return site.context(self.process_id, global_results=global_results, **fields)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
