"""A built-in provider's config: the allowed keys, their checks, the environment fallback, and
the secrets in it that no error, log, repr or store may show."""

from __future__ import annotations

import json
import os
import re
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
    # The values of the key-like fields of gateway_config (see config_secrets).
    config_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every key this provider holds, longest first (one may contain another)."""
        keys = {key for key in (self.api_key, self.gateway_api_key) if key}
        keys.update(self.config_secrets)
        return tuple(sorted(keys, key=len, reverse=True))


# Field names whose values are secrets: api_key, virtual_key, any *_key, authorization,
# secret, token, password, in any case and spelling (apiKey, x-api-key, aws_session_token).
_SECRET_WORDS = frozenset({"authorization", "secret", "token", "password", "passwd"})
_LAST_WORDS = frozenset({"key", "apikey", "virtualkey"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
MIN_SECRET_LENGTH = 4  # shorter values would garble every message they were scrubbed from


def is_secret_field(name: str) -> bool:
    words = [w.lower() for w in _WORD.findall(name)]
    return bool(words) and (words[-1] in _LAST_WORDS or not _SECRET_WORDS.isdisjoint(words))


def config_secrets(config: Any) -> tuple[str, ...]:
    """The values of every key-like field of a gateway config, at any depth.

    A config given as a string is a config id (no secret), or JSON that is read the same way.
    """
    if isinstance(config, str):
        if not config.lstrip().startswith("{"):
            return ()
        try:
            config = json.loads(config)
        except ValueError:
            return (config,)  # broken JSON that may hold keys: all of it is secret
    found: list[str] = []
    _collect(config, found, secret=False)
    return tuple(dict.fromkeys(v for v in found if len(v) >= MIN_SECRET_LENGTH))


def _collect(value: Any, found: list[str], *, secret: bool) -> None:
    if isinstance(value, Mapping):
        for name, item in value.items():
            _collect(item, found, secret=secret or is_secret_field(str(name)))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect(item, found, secret=secret)
    elif secret and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        found.append(str(value))
        scheme, _, credentials = str(value).partition(" ")
        if scheme.lower() in ("bearer", "basic", "token"):  # an echo may show only the rest
            found.append(credentials)


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
    gateway_config = _gateway_config(name, config.get("gateway_config"))
    return Settings(
        api_key=api_key,
        base_url=_optional_str(name, config, "base_url"),
        timeout=float(_positive(name, config, "timeout", integer=False) or DEFAULT_TIMEOUT),
        gateway=gateway,
        gateway_api_key=_optional_str(name, config, "gateway_api_key")
        or os.environ.get("PORTKEY_API_KEY")
        or None,
        gateway_config=gateway_config,
        config_secrets=config_secrets(gateway_config),
        gateway_url=_optional_str(name, config, "gateway_url"),
        gateway_custom_host=_optional_str(name, config, "gateway_custom_host"),
        default_model=_optional_str(name, config, "default_model"),
        max_tokens=_positive(name, config, "max_tokens", integer=True),
        transport=transport,
    )


def _gateway_config(name: str, value: Any) -> dict[str, Any] | str | None:
    """The config as it will be sent: a copy, checked to be JSON. No value is quoted in
    the errors: a config holds keys."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"providers[{name!r}].gateway_config must be a dict (sent as JSON) or a config id "
            f"string, got {type(value).__name__}"
        )
    try:
        copied: dict[str, Any] = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:  # TypeError names the type only, never a value
        raise ConfigurationError(
            f"providers[{name!r}].gateway_config must hold only JSON values (dicts, lists, "
            f"strings, numbers, booleans, None): {exc}"
        ) from None
    return copied


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
