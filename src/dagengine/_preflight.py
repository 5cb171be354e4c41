"""The check before a run's first paid call: can each dimension build its first request?

A mistake that every call of a dimension shares (no `create_prompt`, a prompt hook that
raises or forgets to return, a provider name that is not configured, no model) would
otherwise pass planning and fail once per section, after the run has started paying for the
other dimensions. So, before any call, for each dimension in plan order:

- `select_provider` for its first section (all sections, for a global dimension): every
  provider of the selection, fallbacks included, must be configured and accept its options
  (`BaseProvider.check_options`: a built-in needs a model or a `default_model`);
- `create_prompt` for that same section, where the run would render it the same way: the
  dimension depends on nothing, and the plugin has no skip hook for its scope (the first
  section may be one it skips) and does not rewrite dependencies.

Only these two hooks are called, each at most once per dimension, and no provider.
"""

from __future__ import annotations

from ._batching import no_batch_api
from .errors import DagEngineError, PreflightError
from .graph import Plan
from .plugin import Plugin, PromptContext, call_required, implements, with_arity
from .providers.base import ProviderRegistry
from .types import ProviderFallback, ProviderSelection, Section, to_prompt


async def preflight(
    plugin: Plugin, plan: Plan, sections: list[Section], registry: ProviderRegistry,
    process_id: str, total: int | None = None, *, mode: str = "online",
) -> None:
    """Raise PreflightError, naming the dimension, for the first one that cannot work.

    `sections` may be the first ones of an input still being read (none of its dimensions
    is global then), `total` the input's length as far as it is known."""
    owner = type(plugin).__name__
    for hook, signature in (("create_prompt", "ctx"),
                            ("select_provider", "dimension, sections, context")):
        if not implements(plugin, hook):
            raise PreflightError(plan.order[0], f"{owner} does not implement {hook}"
                                                f"({signature}), which every dimension needs")
    select = with_arity(plugin.select_provider, 3)
    for name in plan.order:
        dimension = plan.dimensions[name]
        if not dimension.is_global and not sections:
            continue  # no section, no call
        site = sections if dimension.is_global else sections[:1]
        index = None if dimension.is_global else 0
        scope = "global" if dimension.is_global else "section"
        # The run renders this prompt the same way only if nothing may skip the call or
        # rewrite its (empty) dependencies first.
        renders = not plan.dependencies[name] and not any(
            implements(plugin, hook)
            for hook in (f"should_skip_{scope}_dimension", "transform_dependencies"))
        try:
            selection = ProviderSelection.from_value(await call_required(
                "select_provider", select, name, site,
                {"is_global": dimension.is_global, "section_index": index,
                 "total_sections": len(sections) if total is None else total}),
                dimension=name)
            # A before_provider_execute hook may still set the model.
            _check_providers(selection, registry,
                             options_final=not implements(plugin, "before_provider_execute"),
                             batch=name if (dimension.mode or mode) == "batch" else None)
            if renders:
                to_prompt(await call_required(
                    "create_prompt", plugin.create_prompt, PromptContext(
                        sections=site, dimension=name, dependencies={},
                        is_global=dimension.is_global, section_index=index,
                        process_id=process_id)), name)
        except DagEngineError as error:
            raise PreflightError(name, str(error)) from error


def _check_providers(
    selection: ProviderSelection, registry: ProviderRegistry, *, options_final: bool,
    batch: str | None = None,
) -> None:
    """`batch`: the dimension's name when it runs in batch mode (each provider then needs a
    batch API)."""
    chain = [ProviderFallback(provider=selection.provider, options=selection.options),
             *selection.fallbacks]
    for entry in chain:
        provider = registry.get(entry.provider)  # UnknownProviderError names the configured
        if batch is not None and provider.batch_api() is None:
            raise no_batch_api(batch, entry.provider)
        if options_final:
            provider.check_options(entry.options)

