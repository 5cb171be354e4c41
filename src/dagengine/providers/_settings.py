"""A built-in provider's config: the allowed keys, their checks, and the environment fallback."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, MissingAPIKeyError

CONFIG_KEYS = (
    "api_key",
    "base_url",
    "timeout",
    "gateway",
    "gateway_api_key",
    "gateway_config",
    "gateway_url",
    "gateway_custom_host",
    "default_model",
    "max_tokens",
    "transport",
)
GATEWAYS = ("portkey",)
# "http": the documented wire format over one aiohttp session (fast); "sdk": the official SDK.
TRANSPORTS = ("http", "sdk")
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Settings:
    """A provider's validated config. Keys are kept out of repr."""

    api_key: str = field(repr=False)
    base_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    gateway: str | None = None
    gateway_api_key: str | None = field(default=None, repr=False)
    gateway_config: dict[str, Any] | str | None = field(default=None, repr=False)  # may hold keys
    gateway_url: str | None = None
    gateway_custom_host: str | None = None
    default_model: str | None = None
    max_tokens: int | None = None
    transport: str = "http"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(key for key in (self.api_key, self.gateway_api_key) if key)


def read_settings(name: str, config: Mapping[str, Any], env_vars: tuple[str, ...]) -> Settings:
    """Validate a provider config dict; the API key falls back to the environment."""
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigurationError(
            f"providers[{name!r}]: unknown config key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys are {', '.join(CONFIG_KEYS)}"
        )
    api_key = _optional_str(name, config, "api_key") or _from_env(env_vars)
    if not api_key:
        raise MissingAPIKeyError(name, " or ".join(env_vars))
    gateway = _optional_str(name, config, "gateway")
    if gateway is not None and gateway not in GATEWAYS:
        raise ConfigurationError(
            f"providers[{name!r}].gateway must be one of {', '.join(GATEWAYS)} or None, "
            f"got {gateway!r}"
        )
    transport = _optional_str(name, config, "transport") or "http"
    if transport not in TRANSPORTS:
        raise ConfigurationError(
            f"providers[{name!r}].transport must be one of {', '.join(map(repr, TRANSPORTS))} "
            f"('http': the wire format over aiohttp, 'sdk': the official SDK), got {transport!r}"
        )
    gateway_config = config.get("gateway_config")
    if gateway_config is not None and not isinstance(gateway_config, (dict, str)):
        raise ConfigurationError(
            f"providers[{name!r}].gateway_config must be a dict (sent as JSON) or a config id "
            f"string, got {type(gateway_config).__name__}"
        )
    return Settings(
        api_key=api_key,
        base_url=_optional_str(name, config, "base_url"),
        timeout=float(_positive(name, config, "timeout", integer=False) or DEFAULT_TIMEOUT),
        gateway=gateway,
        gateway_api_key=_optional_str(name, config, "gateway_api_key")
        or os.environ.get("PORTKEY_API_KEY")
        or None,
        gateway_config=gateway_config,
        gateway_url=_optional_str(name, config, "gateway_url"),
        gateway_custom_host=_optional_str(name, config, "gateway_custom_host"),
        default_model=_optional_str(name, config, "default_model"),
        max_tokens=_positive(name, config, "max_tokens", integer=True),
        transport=transport,
    )


def _from_env(env_vars: tuple[str, ...]) -> str | None:
    for var in env_vars:
        if value := os.environ.get(var):
            return value
    return None


def _optional_str(name: str, config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None or isinstance(value, str):
        return value or None
    raise ConfigurationError(
        f"providers[{name!r}].{key} must be a string, got {type(value).__name__}"
    )


def _positive(name: str, config: Mapping[str, Any], key: str, *, integer: bool) -> Any:
    value = config.get(key)
    if value is None:
        return None
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        noun = "integer" if integer else "number"
        raise ConfigurationError(
            f"providers[{name!r}].{key} must be a positive {noun}, got {value!r}"
        )
    return value
