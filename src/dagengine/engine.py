"""DagEngine: configure once, then process() sections in five phases.

pre-process (before_process_start) -> plan (dependencies, checked graph) -> execute (the
scheduler) -> finalize (finalize_results, costs) -> post-process (after_process_complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Self

from ._callbacks import Callback, Callbacks, progress_emitter
from ._coerce import apply_finalized
from ._preflight import preflight
from ._sync import exit_130_on, in_running_loop, run_sync
from .call import Caller
from .config import ExecutionConfig
from .cost import Pricing
from .display import ProgressDisplay, make_display
from .errors import ConfigurationError, EngineUsageError, ProcessInterrupted, ValidationError
from .graph import Plan
from .plugin import HookContext, Hooks, Plugin, resolve
from .progress import ProgressTracker
from .providers import ProvidersArg, build_registry
from .ratelimit import RateLimiter
from .ready import CallTimes
from .scheduler import Preloaded, Recorder, RunFailed, Scheduler
from .types import ProcessResult, ProgressUpdate, Section, SectionLike, to_sections

log = logging.getLogger("dagengine")


class DagEngine:
    """Runs a plugin's dimensions over sections with the configured providers."""

    def __init__(
        self,
        plugin: Plugin,
        providers: ProvidersArg | None = None,
        execution: ExecutionConfig | Mapping[str, Any] | None = None,
        pricing: Mapping[str, Any] | None = None,
        progress_display: Any = None,
        *,
        store: Any = None,
        cache: bool | None = None,
    ) -> None:
        if not isinstance(plugin, Plugin):
            raise ConfigurationError(
                f"plugin must be a dagengine.Plugin instance, got {type(plugin).__name__}"
            )
        _check_initialised(plugin)
        self.plugin = plugin
        self.execution = ExecutionConfig.from_value(execution)
        self.registry = build_registry(providers)
        self.pricing = Pricing(pricing)
        self.progress_display = progress_display
        self.store = _open_store(store)
        self.cache = (self.store is not None) if cache is None else cache
        if self.cache and self.store is None:
            raise ConfigurationError("cache=True needs a store: pass store='runs.db'")
        self._plan: Plan | None = None
        # What the last run had finished when it stopped early (cancelled or failed).
        self.last_result: ProcessResult | None = None
        self._progress: ProgressTracker | None = None
        self._limiter: RateLimiter | None = None
        self._active_runs = 0  # process() calls of this engine under way
        self._call_times = CallTimes()  # what calls take, learned across this engine's runs

    def __repr__(self) -> str:
        return (f"DagEngine(plugin={self.plugin!r}, providers={self.registry.list()}, "
                f"concurrency={self.execution.concurrency})")

    # -- lifetime --------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the providers' HTTP sessions. They are opened on first use and kept across
        runs on one event loop; a later run opens them again. A session left open is closed
        when its event loop shuts down (asyncio.run does that)."""
        for provider in self.registry:
            try:
                await provider.aclose()
            except Exception as exc:  # closing must not hide the run's own outcome
                log.warning("closing provider %r failed: %s", provider.name, exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- graph -----------------------------------------------------------------------------

    async def plan(self) -> Plan:
        """Check the dimension graph (unknown names, self-dependencies, cycles) and order it."""
        with _define_dependencies_errors():
            deps = await resolve(self.plugin.define_dependencies(self._dependencies_context()))
        return self._planned(deps)

    def _plan_now(self) -> Plan:
        """The plan, made here if need be: the graph exports are synchronous."""
        if self._plan is not None:
            return self._plan
        if not in_running_loop():
            return asyncio.run(self.plan())
        # Inside a running loop (a notebook cell) a sync define_dependencies is called here
        # and an async one awaited on a worker thread's loop: this loop cannot be re-entered.
        with _define_dependencies_errors():
            deps = self.plugin.define_dependencies(self._dependencies_context())
            if inspect.isawaitable(deps):
                pending = deps
                deps = run_sync(lambda: resolve(pending))
        return self._planned(deps)

    def _dependencies_context(self) -> HookContext:
        return HookContext(process_id="", dimensions=[_name(d) for d in self.plugin.dimensions])

    def _planned(self, deps: Any) -> Plan:
        plan = Plan.build(self.plugin.dimensions, deps or {})
        _check_timeouts(self.execution, plan)
        self._plan = plan
        return plan

    def get_graph_analytics(self) -> dict[str, Any]:
        return self._plan_now().analytics()

    def export_graph_dot(self) -> str:
        return self._plan_now().to_dot(self.plugin.name)

    def export_graph_json(self) -> dict[str, Any]:
        return self._plan_now().to_json()

    def get_available_providers(self) -> list[str]:
        return self.registry.list()

    def get_progress(self) -> ProgressUpdate | None:
        """The progress of the current (or last) run; None before the first."""
        if self._progress is None:
            return None
        return self._snapshot(self._progress)

    def get_rate_limits(self) -> dict[str, dict[str, float | None]]:
        """Per limit group of the current (or last) run: configured, learned and allowed rates."""
        return self._limiter.snapshot() if self._limiter is not None else {}

    def _snapshot(self, progress: ProgressTracker) -> ProgressUpdate:
        if self._limiter is not None:
            progress.rate_limited = self._limiter.rate_limited
            progress.waiting_for_capacity = self._limiter.waiting
        return progress.snapshot()

    # -- running ---------------------------------------------------------------------------

    def run(self, sections: Iterable[SectionLike], **kwargs: Any) -> ProcessResult:
        """Synchronous `process()`, also inside a running event loop (a notebook cell): the
        run then goes on a worker thread with its own loop while this thread waits.

        Ctrl-C cancels the run, lets it commit what finished, and raises ProcessInterrupted.
        """
        if self._active_runs and in_running_loop():
            # Waiting here would block the loop that the other run needs to go on.
            raise EngineUsageError(
                "DagEngine.run() was called inside a running event loop while a process() "
                "of this engine runs in it; use `await engine.process(...)` instead"
            )
        self.last_result = None
        try:
            run_sync(lambda: self._process_into_last_result(sections, **kwargs))
        except KeyboardInterrupt:
            exit_130_on(ProcessInterrupted)  # uncaught, it ends a script as Ctrl-C does
            raise ProcessInterrupted(self.last_result) from None
        assert self.last_result is not None
        return self.last_result

    async def _process_into_last_result(self, sections: Iterable[SectionLike],
                                        **kwargs: Any) -> None:
        # asyncio.run's main task must not hold the result: on exit, Python 3.11 restores the
        # SIGINT handler through a path that formats the task's repr, result included, which
        # takes seconds for a result of 100k sections.
        try:
            self.last_result = await self.process(sections, **kwargs)
        finally:
            await self.close()  # the loop ends here: its sessions cannot serve another run

    async def process(
        self,
        sections: Iterable[SectionLike],
        *,
        process_id: str | None = None,
        metadata: Any = None,
        on_progress: Callback | None = None,
        update_every: int = 1,
        progress_display: Any = None,
        on_dimension_start: Callback | None = None,
        on_dimension_complete: Callback | None = None,
        on_section_start: Callback | None = None,
        on_section_complete: Callback | None = None,
        on_error: Callback | None = None,
        resume: bool = False,
        retry_failed: bool = True,
        restart: bool = False,
    ) -> ProcessResult:
        """Run every dimension over `sections`; every input section appears in the result."""
        if not isinstance(update_every, int) or update_every < 1:
            raise ConfigurationError(f"update_every must be an integer >= 1, got {update_every!r}")
        pid = process_id or uuid.uuid4().hex
        callbacks = Callbacks({
            "on_dimension_start": on_dimension_start,
            "on_dimension_complete": on_dimension_complete,
            "on_section_start": on_section_start,
            "on_section_complete": on_section_complete,
            "on_error": on_error,
            "on_progress": on_progress,
        })
        hooks = Hooks(self.plugin, callbacks.hook_failed,
                      strict=not self.execution.continue_on_error)
        items = to_sections(sections)

        # 1. pre-process
        started = await hooks.call("before_process_start", HookContext(
            process_id=pid, sections=items, metadata=metadata,
            dimensions=[_name(d) for d in self.plugin.dimensions]), None)
        if isinstance(started, Mapping):
            if started.get("sections") is not None:
                items = to_sections(started["sections"], "before_process_start(ctx)['sections']")
            metadata = started.get("metadata", metadata)

        # 2. plan, and check that each dimension can build its first request
        plan = await self.plan()
        await preflight(self.plugin, plan, items, self.registry, pid)

        progress = ProgressTracker()
        self._progress = progress
        limiter = RateLimiter(self.execution.rate_limits)
        self._limiter = limiter
        display = make_display(progress_display if progress_display is not None
                               else self.progress_display)
        emit_progress = progress_emitter(callbacks, progress, update_every, display,
                                         lambda: self._snapshot(progress))
        caller = Caller(plugin=self.plugin, hooks=hooks, registry=self.registry,
                        config=self.execution, limiter=limiter, pricing=self.pricing,
                        progress=progress, process_id=pid)
        preloaded, recorder, caller_cache = await self._open_run(
            pid, items, plan, resume=resume, retry_failed=retry_failed, restart=restart)
        if caller_cache is not None:
            caller.cache = caller_cache
        scheduler = Scheduler(
            plan=plan, caller=caller, hooks=hooks, config=self.execution, progress=progress,
            emit=callbacks.emit, process_id=pid, sections=items, preloaded=preloaded,
            recorder=recorder, on_progress=emit_progress, times=self._call_times,
        )
        # From here on the store's run is open: whatever happens, it is closed once.
        try:
            result, error = await self._run_phases(scheduler, hooks, display, progress, pid,
                                                   metadata, plan)
        except BaseException as failure:
            partial = self.last_result or scheduler.run_state.process_result(self.pricing, metadata)
            await self._close_run(pid, partial, failed=failure)
            raise
        await self._close_run(pid, result, failed=error)
        return result

    async def _run_phases(
        self, scheduler: Scheduler, hooks: Hooks, display: ProgressDisplay | None,
        progress: ProgressTracker, pid: str, metadata: Any, plan: Plan,
    ) -> tuple[ProcessResult, BaseException | None]:
        """Execute, finalize, post-process: the result, and the failure it recovered from."""
        # 3. execute
        if display is not None:
            display.start(plan)
        self._active_runs += 1
        try:
            await scheduler.run()
        except (RunFailed, Exception) as failure:
            error = failure.error if isinstance(failure, RunFailed) else failure
            partial = scheduler.run_state.process_result(self.pricing, metadata)
            self.last_result = partial
            recovered = await hooks.call("handle_process_failure", HookContext(
                process_id=pid, error=error,
                sections=[s.section for s in scheduler.run_state.current],
                results=partial, global_results=partial.global_results, metadata=metadata),
                None)
            if isinstance(recovered, ProcessResult):
                return recovered, error
            raise error from None
        except asyncio.CancelledError:
            self.last_result = scheduler.run_state.process_result(self.pricing, metadata)
            raise
        finally:
            if display is not None:
                display.stop(self._snapshot(progress))
            self._active_runs -= 1

        # 4. finalize
        result = scheduler.run_state.process_result(self.pricing, metadata)
        if hooks.has("finalize_results"):
            final = await hooks.call("finalize_results", HookContext(
                process_id=pid, results=result.sections, global_results=result.global_results,
                sections=[s.section for s in result.sections], metadata=metadata), None)
            apply_finalized(result, final)

        # 5. post-process
        after = await hooks.call("after_process_complete", HookContext(
            process_id=pid, result=result, results=result, metadata=metadata), None)
        if isinstance(after, ProcessResult):
            result = after
        return result, None

    # -- durable runs (the store) ------------------------------------------------------------

    async def _open_run(
        self, process_id: str, sections: list[Section], plan: Plan, *, resume: bool,
        retry_failed: bool, restart: bool,
    ) -> tuple[Preloaded | None, Recorder | None, Any]:
        if self.store is None:
            if resume:
                raise ConfigurationError("resume=True needs a store: DagEngine(store='runs.db')")
            return None, None, None
        run = await self.store.open_run(
            process_id, sections=sections, plan=plan, plugin=self.plugin, resume=resume,
            retry_failed=retry_failed, restart=restart)
        cache = self.store.cache(self.pricing) if self.cache else None
        return run.preloaded, run.record, cache

    async def _close_run(self, process_id: str, result: ProcessResult,
                         failed: BaseException | None) -> None:
        if self.store is not None:
            await self.store.close_run(process_id, result, failed=failed)


def _check_initialised(plugin: Plugin) -> None:
    """Plugin.__init__ sets only defaults, except `dimensions`: a subclass that skips it
    works as long as it sets `self.dimensions` itself."""
    if not hasattr(plugin, "dimensions"):
        cls = type(plugin).__name__
        raise ConfigurationError(
            f"{cls} has no dimensions: its __init__ must call super().__init__(name, ...) "
            f"and set self.dimensions = [...] (e.g. super().__init__({cls.lower()!r}); "
            f"self.dimensions = ['summary'])"
        )


def _check_timeouts(execution: ExecutionConfig, plan: Plan) -> None:
    for name in execution.dimension_timeouts:
        if name not in plan.dimensions:
            raise ValidationError(
                "execution.dimension_timeouts",
                f"keyed by the plugin's dimensions ({', '.join(plan.order)})", name,
                shown=f"unknown dimension {name!r}")


def _name(item: Any) -> str:
    return item if isinstance(item, str) else str(getattr(item, "name", item))


@contextlib.contextmanager
def _define_dependencies_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise ConfigurationError(
            f"define_dependencies raised {type(exc).__name__}: {exc}"
        ) from exc


def _open_store(store: Any) -> Any:
    if store is None:
        return None
    from .store import open_store

    return open_store(store)


__all__ = ["DagEngine"]
