"""Routing a built-in provider through the Portkey gateway.

With `gateway="portkey"` a provider sends OpenAI-format chat completions (over plain HTTP, or
with the openai SDK when `transport="sdk"`) to the gateway, which translates them for the
real provider named in `x-portkey-provider` and retries as `gateway_config` says
(`DEFAULT_RETRY` when it has no `retry` section, see `with_default_retry`). Portkey's own
pools pass through: a config with `strategy` (`loadbalance`, `fallback`, ...) and `targets`,
each target with its own key or host. The hosted gateway needs a Portkey API key; a local
open-source gateway (`dagengine.gateway.LocalGateway`) needs none.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ._sdk import Backend
from ._settings import Settings
from .openai import OpenAIChatBackend, OpenAIHTTPBackend

__all__ = [
    "DEFAULT_RETRY",
    "HOSTED_GATEWAY_URL",
    "custom_host",
    "is_hosted",
    "portkey_backend",
    "portkey_headers",
    "with_default_retry",
]

HOSTED_GATEWAY_URL = "https://api.portkey.ai/v1"
# The engine leaves retries to the gateway, so a config without a retry section gets this one.
DEFAULT_RETRY = {"attempts": 3, "on_status_codes": [429, 500, 502, 503, 504]}


def portkey_backend(provider: str, portkey_provider: str, settings: Settings) -> Backend:
    """The backend of a provider in gateway mode; checks the gateway settings first."""
    url = settings.gateway_url or HOSTED_GATEWAY_URL
    if settings.gateway_api_key is None and is_hosted(url):
        raise ConfigurationError(
            f"providers[{provider!r}]: the hosted Portkey gateway ({url}) needs a Portkey API "
            f"key: set gateway_api_key or the PORTKEY_API_KEY environment variable, or point "
            f"gateway_url at a local gateway"
        )
    if (settings.gateway_custom_host or settings.base_url) and _targets_set_hosts(
        settings.gateway_config
    ):
        # The gateway's x-portkey-custom-host header overrides every target's custom_host.
        raise ConfigurationError(
            f"providers[{provider!r}]: the targets of gateway_config name their own "
            f"custom_host, which base_url / gateway_custom_host would override for all of "
            f"them (the gateway sends every target to the x-portkey-custom-host header's "
            f"host): leave base_url and gateway_custom_host unset, or drop custom_host from "
            f"the targets"
        )
    headers = portkey_headers(portkey_provider, settings)
    # The gateway turns response_format into Gemini's response schema but drops it on the way to
    # Anthropic; tools it translates for both, so Anthropic gets the schema as a forced tool.
    backend = OpenAIChatBackend if settings.transport == "sdk" else OpenAIHTTPBackend
    return backend(provider, settings, base_url=url, headers=headers,
                   schema_as_tool=portkey_provider == "anthropic")


def is_hosted(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "portkey.ai" or host.endswith(".portkey.ai")


def portkey_headers(portkey_provider: str, settings: Settings) -> dict[str, str]:
    """The x-portkey-* headers; the provider's own key goes in Authorization."""
    headers = {"x-portkey-provider": portkey_provider}
    if settings.gateway_api_key:
        headers["x-portkey-api-key"] = settings.gateway_api_key
    config = settings.gateway_config
    if isinstance(config, str):
        headers["x-portkey-config"] = config  # the id of a config saved in Portkey
    else:
        config = with_default_retry(config or {})
        headers["x-portkey-config"] = json.dumps(config, separators=(",", ":"))
    if host := custom_host(portkey_provider, settings):
        headers["x-portkey-custom-host"] = host
    return headers


def with_default_retry(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with `DEFAULT_RETRY` where none is given, so that somebody retries.

    The gateway hands a `retry` down to every target below it. On a `fallback` strategy a
    retry above the targets would retry the first target (waiting 1 + 2 + 4 s) before the
    fallback is tried, so there the default goes on the last target only: its failure is
    the call's. Other strategies get it on each target, which is what a top-level retry does.
    """
    if "retry" in config:
        return config
    targets = config.get("targets")
    if not isinstance(targets, list) or not targets or not all(
        isinstance(target, dict) for target in targets
    ):
        return {"retry": DEFAULT_RETRY, **config}
    strategy = config.get("strategy")
    if isinstance(strategy, dict) and strategy.get("mode") == "fallback":
        return {**config, "targets": [*targets[:-1], with_default_retry(targets[-1])]}
    return {**config, "targets": [with_default_retry(target) for target in targets]}


def _targets_set_hosts(config: object) -> bool:
    if not isinstance(config, dict):
        return False
    targets = config.get("targets")
    return isinstance(targets, list) and any(
        isinstance(target, dict) and ("custom_host" in target or _targets_set_hosts(target))
        for target in targets
    )


def custom_host(portkey_provider: str, settings: Settings) -> str | None:
    """Where the gateway should send the upstream request, from gateway_custom_host or base_url.

    The gateway appends its own path to the custom host: `/messages` for anthropic,
    `/chat/completions` for openai, `/v1beta/models/...` for google. The SDKs' base URLs
    differ (Anthropic's has no `/v1`, Gemini's no version), so base_url is adjusted to match.
    """
    if settings.gateway_custom_host:
        return settings.gateway_custom_host
    if not settings.base_url:
        return None
    base = settings.base_url.rstrip("/")
    if portkey_provider == "anthropic" and not base.endswith("/v1"):
        base += "/v1"
    elif portkey_provider == "google":
        base = base.removesuffix("/v1beta")
    return base
