"""Providers: the interface, the registry, and the built-ins (their wire formats over aiohttp,
or their official SDKs)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError
from ._sdk import SDKProvider
from ._settings import read_settings
from .base import RATE_LIMIT_KEYS, BaseProvider, ProviderError, ProviderRegistry

__all__ = [
    "BUILTIN_PROVIDERS",
    "RATE_LIMIT_KEYS",
    "BaseProvider",
    "ProviderError",
    "ProviderRegistry",
    "build_provider",
    "build_registry",
]

# name -> "module:Class" of an SDKProvider, imported on first use (each loads its SDK).
BUILTIN_PROVIDERS = {
    "anthropic": "dagengine.providers.anthropic:AnthropicProvider",
    "openai": "dagengine.providers.openai:OpenAIProvider",
    "gemini": "dagengine.providers.gemini:GeminiProvider",
}

ProvidersArg = ProviderRegistry | Mapping[str, Any] | list[BaseProvider] | tuple[BaseProvider, ...]


def build_provider(name: str, config: Mapping[str, Any]) -> BaseProvider:
    """A built-in provider from its config dict.

    A config may name its built-in with `type` (e.g. {"type": "openai", "base_url": ...})
    so that several providers of one kind can be configured under different names. With
    `gateway` set, the provider's backend goes through that gateway (portkey.py), else
    straight to its API; either way over HTTP with its wire format, or on the official SDK
    with `transport="sdk"`.
    """
    if "targets" in config:
        from ._pool import build_pool

        return build_pool(name, config, build_provider)
    kind = str(config.get("type", name))
    target = BUILTIN_PROVIDERS.get(kind)
    if target is None:
        raise ConfigurationError(
            f"providers[{name!r}]: unknown built-in provider {kind!r}; built-ins are "
            f"{', '.join(BUILTIN_PROVIDERS)} (or pass a BaseProvider instance)"
        )
    module_name, class_name = target.split(":")
    cls: type[SDKProvider] = getattr(importlib.import_module(module_name), class_name)
    settings = read_settings(name, {k: v for k, v in config.items() if k != "type"},
                             cls.env_vars)
    if settings.gateway:
        from .portkey import portkey_backend

        backend = portkey_backend(name, cls.portkey_provider, settings)
    else:
        backend = cls.direct_backend(name, settings)
    return cls(name, settings, backend)


def build_registry(providers: ProvidersArg | None) -> ProviderRegistry:
    """Accept every form DagEngine(providers=...) takes and return a registry."""
    if providers is None:
        return ProviderRegistry()
    if isinstance(providers, (Mapping, list, tuple)) and not providers:
        raise ConfigurationError(
            f"providers={providers!r} configures no provider: at least one provider must be "
            "configured, e.g. providers={'anthropic': {'api_key': ...}} or a list of "
            "BaseProvider instances"
        )
    if isinstance(providers, ProviderRegistry):
        return providers
    if isinstance(providers, BaseProvider):
        return ProviderRegistry([providers])
    if isinstance(providers, (list, tuple)):
        return ProviderRegistry(providers)
    if isinstance(providers, Mapping):
        registry = ProviderRegistry()
        for name, value in providers.items():
            if isinstance(value, BaseProvider):
                registry.register(value, name)
            elif isinstance(value, Mapping):
                registry.register(build_provider(name, value), name)
            else:
                raise ConfigurationError(
                    f"providers[{name!r}] must be a config dict or a BaseProvider, "
                    f"got {type(value).__name__}"
                )
        _bind_pools(registry)
        return registry
    raise ConfigurationError(
        "providers must be a dict of name -> config or BaseProvider, a list of "
        f"BaseProvider, or a ProviderRegistry; got {type(providers).__name__}"
    )


def _bind_pools(registry: ProviderRegistry) -> None:
    """Pools whose targets name other providers of the same config (providers/_pool.py)."""
    from ._pool import PoolProvider

    for provider in registry:
        if isinstance(provider, PoolProvider):
            provider.bind(registry)
