"""The Plugin base class, the contexts its hooks receive, and the one way hooks are called."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import DagEngineError, HookError, HookResultError
from .types import Dimension, DimensionResult, Section

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

    Also readable as a mapping (`ctx["dimension"]`) for plugins ported from dict-style code.
    """

    process_id: str
    timestamp: float = field(default_factory=time.time)
    dimension: str | None = None
    is_global: bool | None = None
    sections: list[Section] | None = None
    section: Section | None = None
    section_index: int | None = None
    total_sections: int | None = None
    dependencies: dict[str, DimensionResult] | None = None
    global_results: dict[str, DimensionResult] | None = None
    results: Any = None
    result: Any = None
    request: Any = None
    response: Any = None
    provider: str | None = None
    provider_options: dict[str, Any] | None = None
    attempt: int | None = None
    max_attempts: int | None = None
    previous_attempts: list[dict[str, Any]] | None = None
    error: BaseException | None = None
    duration: float | None = None
    metadata: Any = None
    dimensions: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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


async def resolve(value: Any) -> Any:
    """Await `value` if a hook or callback returned an awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call_required(hook: str, fn: Callable[..., Any], *args: Any) -> Any:
    """What a required hook (create_prompt, select_provider) answers; what it raises becomes
    a HookError naming it, unless it is already one of the engine's errors."""
    try:
        return await resolve(fn(*args))
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
            value = await resolve(getattr(self.plugin, name)(ctx))
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
