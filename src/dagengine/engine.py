"""DagEngine: configure once, then process() sections in five phases.

pre-process (before_process_start) -> plan (dependencies, checked graph) -> execute (the
scheduler) -> finalize (finalize_results, costs) -> post-process (after_process_complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from . import _logs
from ._batching import batch_dimensions
from ._bounded import FeedSections, StoredSections, bounded_run
from ._feed import SectionFeed
from ._gc import collector_paced
from ._hedge import Hedger
from ._preflight import preflight
from ._run import Run, RunState
from ._sync import exit_130_on, in_running_loop, run_sync
from ._tracing import run_tracer, tracing_options
from .config import ExecutionConfig
from .cost import Pricing
from .display import ProgressDisplay, make_display
from .errors import ConfigurationError, EngineUsageError, ProcessInterrupted, ValidationError
from .estimate import Estimate, estimate_run
from .graph import Plan
from .plugin import (
    Attempt,
    Callback,
    Callbacks,
    HookContext,
    Hooks,
    Observer,
    Observers,
    Plugin,
    maybe_await,
)
from .progress import ProgressReporter, ProgressTracker
from .providers import ProvidersArg, build_registry
from .ratelimit import RateLimiter
from .ready import CallTimes
from .scheduler import RunFailed, Scheduler
from .types import (
    DimensionResult,
    ProcessResult,
    ProgressUpdate,
    Section,
    SectionLike,
    SectionResult,
    to_sections,
)

if TYPE_CHECKING:
    from .store import ResponseCache, StoredRun

log = logging.getLogger("dagengine")

Sections = Iterable[SectionLike] | AsyncIterable[SectionLike]


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
        tracing: bool | Mapping[str, Any] = False,
        cluster: Any = None,
    ) -> None:
        """`cluster`: None (one process) or a `dagengine.ray.RayCluster` to run the section
        dimensions on its worker actors (see dagengine.ray).
        `store`: a path or `RunStore` to record runs in, False for none, or None (the
        default) for the per-user default store (see `dagengine.store.default_store_path`).
        `cache`: answer identical requests from the store's response cache (default: on
        whenever there is a store). `tracing`: OpenTelemetry spans of each run (True, or
        {"capture_content": bool, "tracer_provider": provider}; needs dagengine[otel])."""
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
        _check_store(store)
        # The user chose this store (not the default one): its runs keep their strict rules.
        self._store_chosen = store is not None and store is not False
        self._store: Any = _UNOPENED if store is None else (None if store is False
                                                              else _open_store(store))
        self._cache = cache
        self._tracing = tracing_options(tracing)
        if cluster is not None:
            from .ray._engine import check_cluster

            check_cluster(cluster)
        self.cluster = cluster
        if cache and (store is False or (store is None and _default_store_off())):
            raise ConfigurationError(
                "cache=True needs a store: pass store='runs.db' (the default store is off: "
                "store=False or DAGENGINE_STORE=off)")
        self._plan: Plan | None = None
        self._current: _RunHandle | None = None  # the current (or last) run
        self._active_runs = 0  # process() calls of this engine under way
        self._call_times = CallTimes()  # what calls take, learned across this engine's runs

    @property
    def store(self) -> Any:
        """The run store (a `RunStore`), or None. The default store opens on first use."""
        if self._store is _UNOPENED:
            from .store import open_default_store

            self._store = open_default_store()
        return self._store

    @store.setter
    def store(self, value: Any) -> None:
        self._store = None if value is None or value is False else _open_store(value)
        self._store_chosen = self._store is not None

    @property
    def cache(self) -> bool:
        """Whether calls are answered from (and recorded in) the store's response cache."""
        return (self.store is not None) if self._cache is None else self._cache

    @cache.setter
    def cache(self, value: bool) -> None:
        self._cache = value

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
            deps = await maybe_await(self.plugin.define_dependencies(self._dependencies_context()))
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
                deps = run_sync(lambda: maybe_await(pending))
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

    # -- the current (or last) run ---------------------------------------------------------

    def get_progress(self) -> ProgressUpdate | None:
        """The progress of the current (or last) run; None before the first."""
        return self._current.progress.snapshot() if self._current is not None else None

    def get_rate_limits(self) -> dict[str, dict[str, float | None]]:
        """Per limit group of the current (or last) run: configured, learned and allowed rates."""
        return self._current.run.limiter.snapshot() if self._current is not None else {}

    @property
    def last_result(self) -> ProcessResult | None:
        """The result of the last run, or what it had finished when it stopped early
        (cancelled or failed); None while a run has none yet."""
        return self._current.result if self._current is not None else None

    # -- estimating ------------------------------------------------------------------------

    def estimate(self, sections: Iterable[SectionLike]) -> Estimate:
        """Calls, tokens, cost (low / expected / high, USD) and wall time of processing
        `sections`, from the plugin's own prompts and the store's earlier runs, with no
        provider call. Synchronous, and usable inside a running event loop; raises what
        process() would raise before its first call. See dagengine.estimate."""
        return run_sync(lambda: estimate_run(self, sections, self._call_times))

    # -- running ---------------------------------------------------------------------------

    def run(self, sections: Sections, **kwargs: Any) -> ProcessResult:
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
        self._current = None
        try:
            run_sync(lambda: self._process_into_last_result(sections, **kwargs))
        except KeyboardInterrupt:
            self._batches_interrupted()
            exit_130_on(ProcessInterrupted)  # uncaught, it ends a script as Ctrl-C does
            raise ProcessInterrupted(self.last_result) from None
        assert self.last_result is not None
        return self.last_result

    def _batches_interrupted(self) -> None:
        """Batch mode: say which provider batches Ctrl-C left running and how to resume,
        and on a terminal offer to cancel them (see _batching.after_interrupt)."""
        handle = self._current
        if handle is None or not handle.progress.batches:
            return
        from ._batching import after_interrupt, batches_left

        after_interrupt(self.registry, batches_left(handle.progress.batches.values()),
                        handle.run.process_id, durable=handle.run.batch_ledger is not None)

    async def _process_into_last_result(self, sections: Sections,
                                        **kwargs: Any) -> None:
        # asyncio.run's main task must not hold the result: on exit, Python 3.11 restores the
        # SIGINT handler through a path that formats the task's repr, result included, which
        # takes seconds for a result of 100k sections. process() leaves it in last_result.
        try:
            await self.process(sections, **kwargs)
        finally:
            await self.close()  # the loop ends here: its sessions cannot serve another run

    async def process(
        self,
        sections: Sections,
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
        """Run every dimension over `sections`; every input section appears in the result.

        `sections`: a list, any iterable or an async iterable (not a bare str); an input
        that is not a list or tuple is read as the run goes (see dagengine._feed)."""
        if not isinstance(update_every, int) or update_every < 1:
            raise ConfigurationError(f"update_every must be an integer >= 1, got {update_every!r}")
        callbacks = Callbacks({
            "on_dimension_start": on_dimension_start,
            "on_dimension_complete": on_dimension_complete,
            "on_section_start": on_section_start,
            "on_section_complete": on_section_complete,
            "on_error": on_error,
            "on_progress": on_progress,
        })
        display = make_display(progress_display if progress_display is not None
                               else self.progress_display)
        hooks = Hooks(self.plugin, callbacks.hook_failed,
                      strict=not self.execution.continue_on_error)
        with collector_paced():
            feed = SectionFeed(sections)
            # Those that see or record every section get the whole input now; otherwise it
            # is read as the run goes, and the first call does not wait for the last section.
            # A store records a new run of a list as it reads it (a resume checks it whole);
            # a run over Ray shards the whole list from its driver.
            streamed = (_streams_input(self.store) and feed.total is not None and not resume
                        and self.cluster is None)
            whole = (hooks.has("before_process_start") or self.cluster is not None
                     or (self.store is not None and not streamed))
            items = await feed.all() if whole else []
            pid = process_id or self._default_process_id(
                items if whole else feed.first(_ID_SECTIONS), feed.total)

            items, metadata = await self._pre_process(hooks, pid, items, metadata)
            plan = await self.plan()
            if not whole and any(plan.is_global(n) for n in plan.order):
                items, whole = await feed.all(), True  # a global dimension needs them all
            if not whole:
                items = await feed.next_chunk()
            await preflight(self.plugin, plan, items, self.registry, pid,
                            total=None if whole else feed.total, mode=self.execution.mode)
        run, stored = await self._open(self._new_run(pid, plan, hooks, metadata), items,
                                       resume=resume, retry_failed=retry_failed,
                                       restart=restart, chosen_id=bool(process_id),
                                       streamed=not whole and self.store is not None)
        if stored is not None and stored.input is not None:  # the input, as it is read
            stored.input.add(items)
            feed.on_read = stored.input.add
        eligible = (stored is not None and self.cluster is None
                    and not batch_dimensions(plan.dimensions.values(), self.execution.mode)
                    and not hooks.has("finalize_results"))
        bounded = None
        if whole and self.cluster is None:  # even so the states are made as the run goes
            bounded = bounded_run(self.store, pid, plan, items, self.pricing, eligible=eligible)
            feed = SectionFeed.given(items)
            items = await feed.next_chunk()
        elif self.cluster is None and feed.total is not None:
            bounded = bounded_run(self.store, pid, plan, FeedSections(feed), self.pricing,
                                  eligible=eligible)
        state = RunState(plan, items, feed=None if self.cluster is not None else feed)
        state.bounded = bounded
        began = time.monotonic()
        _logs.run_started(pid, feed.total, plan.order, self.execution.concurrency,
                          len(run.preloaded))
        self._current = handle = _RunHandle(run, ProgressTracker(state, run.limiter))
        tracer = run_tracer(self._tracing, run) if self._tracing is not None else None
        observers = handle.observers(callbacks, display, update_every, stored, tracer)
        # From here on the store's run is open: whatever happens, it is closed once.
        try:
            result, error = await self._execute(handle, state, observers)
            if error is None:  # not a failure handle_process_failure made into a result
                result = await _finalize(run, result)
                result = await _post_process(run, result)
        except BaseException as failure:
            handle.result = handle.result or run.process_result(state)
            await self._close(stored, handle.result, failed=failure, feed=feed)
            _logs.run_done(pid, handle.result, time.monotonic() - began, failure)
            raise
        handle.result = result
        await self._close(stored, result, failed=error, feed=feed)
        _logs.run_done(pid, result, time.monotonic() - began, error)
        return result

    # -- the five phases -------------------------------------------------------------------

    async def _pre_process(self, hooks: Hooks, process_id: str, items: list[Section],
                           metadata: Any) -> tuple[list[Section], Any]:
        """1. before_process_start may replace the sections and the metadata."""
        started = await hooks.call("before_process_start", HookContext(
            process_id=process_id, sections=items, metadata=metadata,
            dimensions=[_name(d) for d in self.plugin.dimensions]), None)
        if isinstance(started, Mapping):
            if started.get("sections") is not None:
                items = to_sections(started["sections"], "before_process_start(ctx)['sections']")
            metadata = started.get("metadata", metadata)
        return items, metadata

    def _new_run(self, process_id: str, plan: Plan, hooks: Hooks, metadata: Any) -> Run:
        return Run(process_id=process_id, plan=plan, plugin=self.plugin, hooks=hooks,
                   config=self.execution, registry=self.registry,
                   limiter=RateLimiter(self.execution.rate_limits), pricing=self.pricing,
                   call_times=self._call_times, metadata=metadata,
                   hedger=Hedger.from_config(self.execution.hedge))

    async def _execute(self, handle: _RunHandle, state: RunState,
                       observers: Observers) -> tuple[ProcessResult, BaseException | None]:
        """3. The scheduler: the run's result, or what handle_process_failure made of a
        failure, with the failure."""
        run = handle.run
        await observers.call("run_started", run.plan)
        self._active_runs += 1
        # The result is built at the run's pace too: it allocates a few objects per section,
        # and at the default pace each young collection would walk every result again.
        with collector_paced():
            try:
                if self.cluster is None:
                    await Scheduler(run, state, observers).execute()
                else:
                    from .ray._engine import execute_on_cluster

                    await execute_on_cluster(self.cluster, run, state, observers,
                                             handle.progress)
            except (RunFailed, Exception) as failure:
                error = failure.error if isinstance(failure, RunFailed) else failure
                handle.result = partial = run.process_result(state)
                recovered = await run.hooks.call("handle_process_failure", HookContext(
                    process_id=run.process_id, error=error,
                    sections=[s.section for s in state.current], results=partial,
                    global_results=partial.global_results, metadata=run.metadata), None)
                if isinstance(recovered, ProcessResult):
                    return recovered, error
                raise error from None
            except asyncio.CancelledError:
                handle.result = run.process_result(state)
                raise
            finally:
                await observers.call("run_done")
                self._active_runs -= 1
            return run.process_result(state), None

    # -- durable runs (the store) ------------------------------------------------------------

    def report(self, result: ProcessResult, path: str | os.PathLike[str]) -> Path:
        """Write the run report of `result`, one self-contained HTML page, to `path`.

        With a store that holds the run, the report shows what it recorded (the timeline,
        every provider request); otherwise what the result holds."""
        from .report import write_report

        graph = self._plan.signature() if self._plan is not None else None
        return write_report(result, path, graph=graph, store=self.store,
                            title=self.plugin.name)

    def _default_process_id(self, sections: list[Section], count: int | None = None) -> str:
        if self.store is None:
            return uuid.uuid4().hex
        from .store import default_process_id

        return default_process_id(self.plugin, sections, count)

    async def _open(self, run: Run, sections: list[Section], *, resume: bool,
                    retry_failed: bool, restart: bool, chosen_id: bool,
                    streamed: bool = False) -> tuple[Run, StoredRun | None]:
        """`run` with the results and the response cache the store (if any) has for it, and
        the run opened in the store (or None).

        A run whose id and store the user both chose keeps the store's strict rules: an
        existing id needs resume=True or restart=True, and one another process is writing
        is refused. Otherwise (the default store, or the default id) nobody asked for that
        id to be durable: without resume=True an earlier run of the id is replaced (the
        cache still answers its calls), and while another process writes it this run goes
        unrecorded, with a warning, instead of failing.
        """
        store = self.store
        if store is None:
            if resume:
                raise ConfigurationError(
                    "resume=True needs a store: the default store is off (store=False or "
                    "DAGENGINE_STORE=off); pass DagEngine(store='runs.db')")
            return run, None
        from .store import RunInUseError

        strict = chosen_id and self._store_chosen
        cache: ResponseCache | None = store.cache(self.pricing) if self.cache else None
        try:
            stored: StoredRun = await store.open_run(
                run.process_id, sections=sections, plan=run.plan, plugin=self.plugin,
                resume=resume, retry_failed=retry_failed,
                restart=restart or not (strict or resume),
                **({"streamed": True} if streamed else {}))
        except RunInUseError as exc:
            if strict or resume:
                raise
            log.warning("%s; this run is not recorded (its calls still use the response "
                        "cache), and it pays for what that run has not finished yet", exc)
            return replace(run, cache=cache), None
        if stored.resumed:
            plan = run.plan
            expected = sum(1 if plan.is_global(n) else len(sections) for n in plan.order)
            log.info("resumed run %s from %s: %d of %d results from the store, %d to run",
                     run.process_id, store.path, len(stored.preloaded), expected,
                     expected - len(stored.preloaded))
        elif resume:
            log.info("resume: no earlier run %s in %s, so every call runs", run.process_id,
                     store.path)
        ledger = getattr(store, "batch_ledger", None)  # batch mode's record of its batches
        return replace(run, cache=cache, preloaded=stored.preloaded,
                       batch_ledger=ledger(run.process_id) if ledger is not None else None
                       ), stored

    async def _close(self, stored: StoredRun | None, result: ProcessResult,
                     failed: BaseException | None, feed: SectionFeed | None = None) -> None:
        if stored is None:
            return
        store = self.store
        if stored.input is not None and feed is not None:  # the rest of the list, then its hash
            feed.rest_of_list()
            stored.input.finish()
        await store.close_run(stored.process_id, result, failed=failed)
        if isinstance(result.sections, StoredSections):  # a run that let its sections go
            hit_count, made, saved = (result.sections.hits, result.sections.calls,
                                      result.sections.saved)
        else:
            calls = [r.call for s in (*result.sections, *result.dropped_sections)
                     for r in s.results.values()]
            calls += [r.call for r in result.global_results.values()]
            hits = [c for c in calls if c is not None and c.saved_cost is not None]
            hit_count = len(hits)
            made = sum(1 for c in calls if c is not None and c.attempts)
            saved = sum(c.saved_cost or 0.0 for c in hits)
        if not hit_count:
            return
        # Loud when nobody asked for the store nor the cache: replayed answers must not pass
        # for fresh ones.
        quiet = self._store_chosen or self._cache is not None
        log.log(logging.INFO if quiet else logging.WARNING,
                "run %s: %d of %d calls answered from the response cache in %s (saved $%.4f); "
                "pass cache=False for fresh calls, or store=False for no store",
                stored.process_id, hit_count, max(made, hit_count), store.path, saved)


@dataclass(slots=True, eq=False)
class _RunHandle:
    """What the engine keeps of its current (or last) run: get_progress(), get_rate_limits()
    and last_result read it. Not the run's state: a finished run's results live on in its
    result alone."""

    run: Run
    progress: ProgressTracker
    result: ProcessResult | None = None  # once it ended, or what it had when it stopped

    def observers(self, callbacks: Callbacks, display: ProgressDisplay | None,
                  update_every: int, stored: StoredRun | None,
                  tracer: Observer | None = None) -> Observers:
        """Progress counts first (what the others show includes them), then the store;
        the spans (if tracing) last."""
        reporter = None
        if display is not None or callbacks.get("on_progress") is not None:
            reporter = ProgressReporter(self.progress, display, callbacks, update_every)
        recorder = _StoreRecorder(stored) if stored is not None else None
        return Observers([self.progress, recorder, reporter,
                          callbacks if callbacks.given else None, tracer])


class _StoreRecorder(Observer):
    """Records in the store each result this run produces (not those it restored), and
    each provider request its calls made (the run report's timeline)."""

    def __init__(self, stored: StoredRun) -> None:
        self._record = stored.record

    def attempt_done(self, attempt: Attempt) -> None:
        self._record.attempt(attempt.dimension, attempt.section_index, attempt.number,
                             attempt.provider, attempt.model, attempt.started_at,
                             attempt.sent_at, attempt.ended_at, attempt.status, attempt.error)

    def result(self, dimension: str, index: int | None, result: DimensionResult) -> None:
        self._record(dimension, index, result)


async def _finalize(run: Run, result: ProcessResult) -> ProcessResult:
    """4. finalize_results may replace the section results and the global results."""
    if run.hooks.has("finalize_results"):
        final = await run.hooks.call("finalize_results", HookContext(
            process_id=run.process_id, results=result.sections,
            global_results=result.global_results,
            sections=[s.section for s in result.sections], metadata=run.metadata), None)
        _apply_finalized(result, final)
    return result


async def _post_process(run: Run, result: ProcessResult) -> ProcessResult:
    """5. after_process_complete may replace the result."""
    after = await run.hooks.call("after_process_complete", HookContext(
        process_id=run.process_id, result=result, results=result, metadata=run.metadata), None)
    return after if isinstance(after, ProcessResult) else result


def _apply_finalized(result: ProcessResult, final: Any) -> None:
    if final is None:
        return
    if isinstance(final, list):
        result.sections = [s if isinstance(s, SectionResult) else SectionResult.model_validate(s)
                           for s in final]
    elif isinstance(final, Mapping):
        if "sections" in final:
            _apply_finalized(result, list(final["sections"]))
        if "global_results" in final:
            result.global_results = dict(final["global_results"])


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


_UNOPENED: Any = object()  # the default store, not opened yet


def _open_store(store: Any) -> Any:
    from .store import open_store

    return open_store(store)


def _check_store(store: Any) -> None:
    if store is None or store is False or isinstance(store, (str, os.PathLike)):
        return
    if not callable(getattr(store, "open_run", None)):
        raise ConfigurationError(
            f"store must be a file path, a RunStore, False (no store) or None (the default "
            f"store), got {type(store).__name__}")


_ID_SECTIONS = 1000  # store._default.ID_SECTIONS: the sections a default process id hashes


def _streams_input(store: Any) -> bool:
    """Whether `store` records a run's input as the run reads it (a RunStore does)."""
    if store is None:
        return False
    from .store import RunStore

    return isinstance(store, RunStore)


def _default_store_off() -> bool:
    from .store import default_store_path

    return default_store_path() is None


__all__ = ["DagEngine"]
