"""The Plugin base class, the contexts its hooks receive, and the one way user code and
observers are called: `Hooks` for the plugin's hooks, `Observers` for what watches a run
(progress, the live display, the store, the process() callbacks)."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DagEngineError, HookError, HookResultError
from .types import Dimension, DimensionResult, Section, SectionResult

if TYPE_CHECKING:
    from .graph import Plan

log = logging.getLogger("dagengine")

HOOKS = (
    "define_dependencies",
    "before_process_start",
    "should_skip_section_dimension",
    "should_skip_global_dimension",
    "transform_dependencies",
    "before_dimension_execute",
    "after_dimension_execute",
    "before_provider_execute",
    "after_provider_execute",
    "handle_retry",
    "handle_provider_fallback",
    "handle_dimension_failure",
    "transform_sections",
    "finalize_results",
    "after_process_complete",
    "handle_process_failure",
)


@dataclass(slots=True)
class PromptContext:
    """What `create_prompt` gets. For a section dimension `sections` holds that one section."""

    sections: list[Section]
    dimension: str
    dependencies: dict[str, DimensionResult]
    is_global: bool
    section_index: int | None
    process_id: str = ""
    timestamp: float = field(default_factory=time.time)

    @property
    def section(self) -> Section | None:
        return self.sections[0] if self.sections and not self.is_global else None


@dataclass(slots=True, kw_only=True)
class HookContext:
    """What every optional hook gets. Fields a hook has no use for are None.

    "Call hooks" below are the hooks around one dimension's call: the skip hooks,
    before/after_dimension_execute, before/after_provider_execute, handle_retry,
    handle_provider_fallback and handle_dimension_failure.

    Also readable as a mapping (`ctx["dimension"]`) for plugins ported from dict-style code.
    """

    process_id: str
    """The run's id (every hook; "" for define_dependencies, which runs before any run)."""
    timestamp: float = field(default_factory=time.time)
    """When the context was made (Unix time)."""
    dimension: str | None = None
    """The dimension concerned: call hooks, transform_dependencies, and transform_sections
    (the global dimension that just finished)."""
    is_global: bool | None = None
    """Whether `dimension` is a global one (where `dimension` is set)."""
    sections: list[Section] | None = None
    """before_process_start: the input; call hooks and transform_dependencies: the call's
    sections (one, for a section dimension); transform_sections: the current list;
    finalize_results and handle_process_failure: the run's sections."""
    section: Section | None = None
    """The call's section (call hooks and transform_dependencies of a section dimension)."""
    section_index: int | None = None
    """Its index in the current section list (where `section` is set)."""
    total_sections: int | None = None
    """How many sections the run has now (where `dimension` is set)."""
    dependencies: dict[str, DimensionResult] | None = None
    """The results the call depends on, by dimension (call hooks; transform_dependencies
    returns its changed version)."""
    global_results: dict[str, DimensionResult] | None = None
    """Global results so far: the skip hooks, before/after_dimension_execute,
    transform_sections, finalize_results, handle_process_failure."""
    results: Any = None
    """finalize_results: the list of SectionResult; handle_process_failure: what finished
    (a ProcessResult); after_process_complete: the ProcessResult."""
    result: Any = None
    """after_dimension_execute: the DimensionResult; transform_sections: the global
    dimension's DimensionResult; after_process_complete: the ProcessResult."""
    request: Any = None
    """The ProviderRequest: before/after_provider_execute, handle_retry."""
    response: Any = None
    """The ProviderResponse (its data validated): after_provider_execute."""
    provider: str | None = None
    """The provider: before/after_provider_execute and handle_retry (the one asked),
    handle_provider_fallback (the one about to be tried)."""
    provider_options: dict[str, Any] | None = None
    """That provider's options (where `provider` is set)."""
    attempt: int | None = None
    """The attempt number on this provider, from 1: before/after_provider_execute,
    handle_retry."""
    max_attempts: int | None = None
    """Attempts allowed on this provider: before_provider_execute, handle_retry."""
    previous_attempts: list[dict[str, Any]] | None = None
    """The failed attempts so far ({"provider", "attempt", "error", "status_code"}):
    handle_retry, handle_provider_fallback, handle_dimension_failure."""
    error: BaseException | None = None
    """What failed: handle_retry, handle_provider_fallback (the last provider's error),
    handle_dimension_failure, handle_process_failure, after_dimension_execute (a failed
    call's error, else None)."""
    duration: float | None = None
    """Seconds the call has taken: after_dimension_execute, after_provider_execute,
    handle_dimension_failure."""
    metadata: Any = None
    """process(metadata=...) as before_process_start left it: before_process_start,
    finalize_results, after_process_complete, handle_process_failure."""
    dimensions: list[str] | None = None
    """Every dimension's name: define_dependencies, before_process_start."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else: handle_provider_fallback's {"failed_provider": name}."""

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value


class Plugin:
    """Names the dimensions of a workload and says how to prompt for each.

    Subclass it, set `self.dimensions`, and implement `create_prompt` and `select_provider`.
    Every optional hook below may be a plain or an `async` method; the defaults do nothing.
    """

    # Class-level defaults, so that a subclass whose __init__ skips super().__init__() still
    # works when it sets `dimensions` itself (DagEngine says so when it does not).
    id: str = "plugin"
    name: str = "plugin"
    description: str = ""
    dimensions: list[str | Dimension]

    def __init__(self, id: str = "plugin", name: str | None = None, description: str = "") -> None:
        self.id = id
        self.name = name or id
        self.description = description
        self.dimensions = []

    def create_prompt(self, ctx: PromptContext) -> str | list[dict[str, Any]] | Awaitable[Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement create_prompt(ctx)")

    def select_provider(
        self,
        dimension: str,
        sections: Sequence[Section] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement select_provider(dimension, sections, context)"
        )

    # Optional hooks. Their defaults are what the engine does when a hook is absent,
    # so the engine never calls these base versions (see Hooks.has).
    def define_dependencies(self, ctx: HookContext) -> Any:
        return {}

    def before_process_start(self, ctx: HookContext) -> Any:
        return None

    def should_skip_section_dimension(self, ctx: HookContext) -> Any:
        return False

    def should_skip_global_dimension(self, ctx: HookContext) -> Any:
        return False

    def transform_dependencies(self, ctx: HookContext) -> Any:
        return ctx.dependencies

    def before_dimension_execute(self, ctx: HookContext) -> Any:
        return None

    def after_dimension_execute(self, ctx: HookContext) -> Any:
        return None

    def before_provider_execute(self, ctx: HookContext) -> Any:
        return ctx.request

    def after_provider_execute(self, ctx: HookContext) -> Any:
        return ctx.response

    def handle_retry(self, ctx: HookContext) -> Any:
        return None

    def handle_provider_fallback(self, ctx: HookContext) -> Any:
        return None

    def handle_dimension_failure(self, ctx: HookContext) -> Any:
        return None

    def transform_sections(self, ctx: HookContext) -> Any:
        return None

    def finalize_results(self, ctx: HookContext) -> Any:
        return None

    def after_process_complete(self, ctx: HookContext) -> Any:
        return None

    def handle_process_failure(self, ctx: HookContext) -> Any:
        return None

    def __repr__(self) -> str:
        dimensions = getattr(self, "dimensions", None)
        count = "unset" if dimensions is None else len(dimensions)
        return f"<{type(self).__name__} id={self.id!r} dimensions={count}>"


ErrorReporter = Callable[[str, BaseException], Awaitable[None]]


async def maybe_await(value: Any) -> Any:
    """Await `value` if a hook or callback returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call_required(hook: str, fn: Callable[..., Any], *args: Any) -> Any:
    """What a required hook (create_prompt, select_provider) answers; what it raises becomes
    a HookError naming it, unless it is already one of the engine's errors."""
    try:
        value = fn(*args)
        if inspect.isawaitable(value):  # most are sync: no coroutine made for those
            value = await value
        return value
    except DagEngineError:
        raise
    except Exception as exc:
        raise HookError(hook, exc) from exc


class Hooks:
    """Calls a plugin's hooks: sync or async, errors reported, defaults applied."""

    def __init__(self, plugin: Plugin, report: ErrorReporter, *, strict: bool) -> None:
        self.plugin = plugin
        self._report = report
        self._strict = strict
        self._present = frozenset(name for name in HOOKS if _overrides(plugin, name))

    def has(self, name: str) -> bool:
        return name in self._present

    async def call(
        self, name: str, ctx: HookContext, default: Any = None,
        coerce: Callable[[Any], Any] | None = None,
    ) -> Any:
        """The hook's answer; `default` when it is absent, returns None, or raises.

        `coerce` makes the answer the type the engine needs and raises HookResultError for
        one it cannot use, which counts as the hook failing. A hook that fails is reported
        through on_error; with continue_on_error=False the error is raised instead (a hook
        that raised as a HookError).
        """
        if name not in self._present:
            return default
        try:
            value = await maybe_await(getattr(self.plugin, name)(ctx))
        except Exception as exc:
            await self._report(name, exc)
            if self._strict:
                raise HookError(name, exc) from exc
            return default
        if value is None:
            return default
        if coerce is None:
            return value
        try:
            return coerce(value)
        except HookResultError as exc:
            await self._report(name, exc)
            if self._strict:
                raise
            return default


def with_arity(fn: Callable[..., Any], most: int) -> Callable[..., Any]:
    """Call `fn` with as many leading positional arguments as it accepts (at most `most`)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return fn
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    count = min(most, len(positional))
    if count == most:
        return fn
    return lambda *args: fn(*args[:count])


def implements(plugin: Plugin, name: str) -> bool:
    """True when the plugin defines `name` itself instead of inheriting Plugin's version."""
    return _overrides(plugin, name)


def _overrides(plugin: Plugin, name: str) -> bool:
    if name in vars(plugin):
        return True
    own = getattr(type(plugin), name, None)
    return own is not None and own is not getattr(Plugin, name)


Callback = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider request of a call that ended (what `Observer.attempt_done` gets)."""

    dimension: str
    section_index: int | None
    number: int
    """The call's attempt number, over all its providers."""
    provider: str
    model: str | None
    """The model that answered, else the one asked for."""
    started_at: float
    """Unix time the attempt began (before the cache and the rate limiter)."""
    sent_at: float
    """Unix time its request left the rate limiter."""
    ended_at: float
    status: int | None
    error: BaseException | None
    """None: answered and accepted."""
    requested_model: str | None = None
    """The model the request asked for."""
    waited: float = 0.0
    """Seconds the request waited for the rate limiter."""
    prompt: Any = None
    """The prompt the attempt asked with (a re-ask's includes the validation error)."""


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt that will be retried (what `Observer.retrying` gets)."""

    dimension: str
    section_index: int | None
    provider: str
    model: str | None
    """The model the failed attempt asked for."""
    attempt: int
    """The failed attempt's number on this provider, from 1."""
    max_attempts: int
    wait: float
    """Seconds before the next attempt."""
    error: BaseException


class Observer:
    """Something that watches a run: progress, the live display, the store, the callbacks.

    Every method is optional, sync or async; this class mostly documents them. An observer
    that raises is logged and reported through on_error, and the run goes on. Events come in
    this order for each result: `result` (or `restored`), then `error` if it failed, then
    `progressed`; `section_done` and `dimension_done` follow once they apply.
    """

    def run_started(self, plan: Plan) -> Any:
        """The run's calls are about to start."""

    def dimension_started(self, dimension: str) -> Any:
        """The first item of `dimension` started (or it finished with none)."""

    def section_started(self, index: int, section: Section) -> Any:
        """The first item of section `index` started."""

    def request_sent(self, dimension: str, provider: str) -> Any:
        """A request left the rate limiter for `provider`."""

    def request_done(self, dimension: str, provider: str) -> Any:
        """That request ended: answered, failed or cancelled."""

    def request_routed(self, dimension: str, provider: str, target: str | None,
                       hedge: bool) -> Any:
        """That request went to pool `target` (None: not a pool), or is a hedge's duplicate
        (`hedge` True); after request_sent."""

    def attempt_done(self, attempt: Attempt) -> Any:
        """An attempt whose request was sent ended: answered, refused or failed (a cache hit
        sends none)."""

    def retry(self, dimension: str, error: BaseException) -> Any:
        """A failed attempt will be retried after its backoff."""

    def retrying(self, retry: Retry) -> Any:
        """The same retry in full: which call, why, which attempt, and the wait before the
        next (after `retry`, in the call's task)."""

    def call_started(self, dimension: str, section_index: int | None) -> Any:
        """A call (prompt, provider chain, retries) begins, in its own task: the events of
        its attempts and retries follow in that task, until `call_done`."""

    def call_done(self, dimension: str, section_index: int | None,
                  result: DimensionResult | None, error: BaseException | None) -> Any:
        """That call ended, in the same task: with `result` (and the error behind a failed
        one), or cancelled (`result` None)."""
    def batch_updated(self, batch: Any) -> Any:
        """Batch mode: a provider batch (a `_batching.BatchInfo`) was submitted, re-attached
        to, or polled (its `status` is the provider's latest)."""

    def result(self, dimension: str, index: int | None, result: DimensionResult) -> Any:
        """This run produced `result` (`index` None for a global dimension)."""

    def restored(self, dimension: str, index: int | None, result: DimensionResult) -> Any:
        """A resumed run took `result` from the store instead of calling."""

    def error(self, error: BaseException, where: dict[str, Any]) -> Any:
        """Something failed without stopping the run (on_error's arguments)."""

    def progressed(self) -> Any:
        """An item finished; the progress counts include it."""

    def section_done(self, index: int, result: SectionResult) -> Any:
        """Every section dimension has a result for section `index`."""

    def dimension_done(self, dimension: str, summary: DimensionResult) -> Any:
        """Every item of `dimension` finished."""

    def run_done(self) -> Any:
        """The run's calls are over (finished, failed or cancelled)."""


OBSERVER_EVENTS = tuple(name for name in vars(Observer) if not name.startswith("_"))


class Observers:
    """Calls the observers of a run, the way `Hooks` calls hooks: which observer implements
    which event is worked out once, and one that raises never breaks the run."""

    def __init__(self, observers: Iterable[object | None]) -> None:
        present = [o for o in observers if o is not None]
        self._methods: dict[str, tuple[Callable[..., Any], ...]] = {
            name: tuple(getattr(o, name) for o in present if _observes(o, name))
            for name in OBSERVER_EVENTS
        }

    def has(self, name: str) -> bool:
        return bool(self._methods[name])

    def call(self, name: str, *args: Any) -> Awaitable[None]:
        """Tell the observers that implement `name`; await the answer.

        Several events come per item, most observers are sync: those run here, and only an
        observer that answers an awaitable (or raises) makes a coroutine of the rest."""
        methods = self._methods[name]
        for position, method in enumerate(methods):
            try:
                value = method(*args)
            except Exception as exc:
                return self._go_on(name, args, position, exc)
            if value is not None and inspect.isawaitable(value):
                return self._go_on(name, args, position, value)
        return _NOTHING

    async def _go_on(self, name: str, args: tuple[Any, ...], position: int,
                     answer: Awaitable[Any] | Exception) -> None:
        """The rest of `call` from the observer at `position`, which raised or is pending."""
        methods = self._methods[name]
        try:
            if isinstance(answer, Exception):
                raise answer
            await answer
        except Exception as exc:
            await self._failed(name, methods[position], exc)
        for method in methods[position + 1:]:
            try:
                await maybe_await(method(*args))
            except Exception as exc:
                await self._failed(name, method, exc)

    async def _failed(self, event: str, method: Callable[..., Any], error: Exception) -> None:
        owner = type(getattr(method, "__self__", method)).__name__
        log.warning("observer %s raised in %s: %s: %s", owner, event, type(error).__name__,
                    error)
        if event == "error":
            return
        for report in self._methods["error"]:
            try:
                await maybe_await(report(error, {"observer": owner, "event": event}))
            except Exception as exc:  # already logged above; a second report would loop
                log.warning("reporting an observer's error raised %s: %s",
                            type(exc).__name__, exc)


class _Nothing:
    """An awaitable that is done at once."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield from ()


_NOTHING = _Nothing()


def _observes(observer: object, name: str) -> bool:
    impl = getattr(type(observer), name, None)
    return impl is not None and impl is not getattr(Observer, name)


class Callbacks(Observer):
    """The process() callbacks: sync or async, and one that raises never breaks the run
    (it is reported through on_error; on_error raising is logged)."""

    _TWO_ARGUMENTS = ("on_dimension_complete", "on_section_start", "on_section_complete",
                      "on_error")

    def __init__(self, callbacks: Mapping[str, Callback | None]) -> None:
        self._fns = {
            name: with_arity(fn, 2) if name in self._TWO_ARGUMENTS else fn
            for name, fn in callbacks.items() if fn is not None
        }

    @property
    def given(self) -> bool:
        """Whether process() was given any callback."""
        return bool(self._fns)

    def get(self, name: str) -> Callback | None:
        return self._fns.get(name)

    async def emit(self, name: str, *args: Any) -> None:
        fn = self._fns.get(name)
        if fn is None:
            return
        try:
            await maybe_await(fn(*args))
        except Exception as exc:
            if name == "on_error":
                log.warning("on_error callback raised %s: %s", type(exc).__name__, exc)
            else:
                await self.emit("on_error", exc, {"callback": name})

    async def hook_failed(self, hook: str, error: BaseException) -> None:
        await self.emit("on_error", error, {"hook": hook})

    async def dimension_started(self, dimension: str) -> None:
        await self.emit("on_dimension_start", dimension)

    async def section_started(self, index: int, section: Section) -> None:
        await self.emit("on_section_start", index, section)

    async def error(self, error: BaseException, where: dict[str, Any]) -> None:
        await self.emit("on_error", error, where)

    async def section_done(self, index: int, result: SectionResult) -> None:
        await self.emit("on_section_complete", index, result)

    async def dimension_done(self, dimension: str, summary: DimensionResult) -> None:
        await self.emit("on_dimension_complete", dimension, summary)
