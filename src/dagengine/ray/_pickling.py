"""The run's parts pickled for the workers, or a ConfigurationError naming what will not go.

Ray sends objects with cloudpickle; so does this, once per run, before any call. When the
whole does not pickle, the plugin's and each provider's attributes are tried one by one
(and theirs, a few levels down) so the error names the attribute to fix, not a frame of
pickle's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

from ..errors import ConfigurationError
from ..providers.base import BaseProvider, ProviderRegistry

_DEPTH = 4
# A provider's HTTP client belongs to the event loop it was opened on and opens again on
# first use: the workers open their own.
_CLIENT_ATTRIBUTES = ("_client", "_loop", "_closer", "_session")


def pickled_parts(parts: Any, plugin: Any, registry: ProviderRegistry) -> bytes:
    """cloudpickle of `parts`, which holds `plugin` and `registry` (sent without clients)."""
    from ray import cloudpickle

    for name, what in [("the plugin", plugin),
                       *((f"provider {p.name!r}", p) for p in registry)]:
        found = _unpicklable(cloudpickle, what, "")
        if found is not None:
            path, error = found
            where = f"its attribute {path}" if path else "it"
            raise ConfigurationError(
                f"{name} ({type(what).__name__}) cannot be sent to the Ray workers: {where} "
                f"cannot be pickled ({type(error).__name__}: {error}); make it picklable, or "
                f"create it on first use instead of in __init__ (e.g. keep a path, not an "
                f"open file; a client, not a lock)")
    try:
        return cast(bytes, cloudpickle.dumps(parts))  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ConfigurationError(
            f"the run cannot be sent to the Ray workers: {type(exc).__name__}: {exc}"
        ) from exc


def without_clients(registry: ProviderRegistry) -> ProviderRegistry:
    """A registry of copies of the providers, their HTTP clients (if open) left behind."""
    copies = ProviderRegistry()
    for provider in registry:
        copies.register(_without_client(provider), provider.name)
    return copies


def _without_client(provider: BaseProvider) -> BaseProvider:
    state = getattr(provider, "__dict__", None)
    if not state or not any(state.get(a) is not None for a in _CLIENT_ATTRIBUTES):
        return provider
    clone = copy.copy(provider)
    for attribute in _CLIENT_ATTRIBUTES:
        if attribute in state:
            setattr(clone, attribute, None)
    return clone


def _unpicklable(cloudpickle: Any, value: Any, path: str,
                 depth: int = 0) -> tuple[str, BaseException] | None:
    """The path of the deepest attribute of `value` that does not pickle, and why."""
    try:
        cloudpickle.dumps(value)
    except Exception as exc:
        if depth < _DEPTH:
            for name, part in _parts(value):
                found = _unpicklable(cloudpickle, part, f"{path}{name}", depth + 1)
                if found is not None:
                    return found
        return path.lstrip("."), exc
    return None


def _parts(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"[{key!r}]", item
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for position, item in enumerate(value):
            yield f"[{position}]", item
        return
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        for name, item in state.items():
            yield f".{name}", item
    for name in getattr(type(value), "__slots__", ()):
        if isinstance(name, str) and hasattr(value, name):
            yield f".{name}", getattr(value, name)
