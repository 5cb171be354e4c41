"""What the built-in providers share: config, the call, the answer, headers and errors.

A built-in provider is an `SDKProvider` with a `Backend`: the backend speaks one wire
format through its official SDK (`anthropic.py`, `openai.py`, `gemini.py`), or the OpenAI
format through the Portkey gateway (`portkey.py`). Everything that does not depend on the
wire format lives here, once.
"""

from __future__ import annotations

import abc
import asyncio
import email.utils
import inspect
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any, ClassVar, Self

from ..errors import ConfigurationError, MissingAPIKeyError, OutputValidationError
from ..parsing import parse_answer
from ..types import ProviderRequest, ProviderResponse, TokenUsage
from .base import BaseProvider, ProviderError

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
)
GATEWAYS = ("portkey",)
DEFAULT_TIMEOUT = 60.0
# Options the provider consumes itself; every other option is passed on to the SDK call.
_OWN_OPTIONS = frozenset({"model", "max_tokens", "system", "json", "stream"})
_MAX_DETAIL = 300


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


@dataclass(slots=True)
class Call:
    """One request in the shape every backend starts from."""

    model: str
    messages: list[dict[str, Any]]  # user and assistant turns; system text is apart
    system: str | None
    max_tokens: int | None
    params: dict[str, Any]  # temperature, top_p, stop and other SDK keyword arguments
    want_json: bool


@dataclass(frozen=True, slots=True)
class Completion:
    """What a backend got back, before it becomes a ProviderResponse."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    headers: Mapping[str, str] | None = None


class Backend(abc.ABC):
    """One wire format through one SDK client, created lazily inside the running loop."""

    def __init__(self, provider: str, settings: Settings) -> None:
        self.provider = provider
        self.settings = settings
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @abc.abstractmethod
    def new_client(self) -> Any:
        """The SDK client; called on first use in each event loop."""

    @abc.abstractmethod
    async def complete(self, call: Call) -> Completion:
        """One attempt; SDK failures come out as ProviderError."""

    @abc.abstractmethod
    async def close_client(self, client: Any) -> None:
        """Release the client's connections."""

    def client(self) -> Any:
        # HTTP sessions belong to the loop that opened them: a new loop gets a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self.new_client(), loop
        return self._client

    async def aclose(self) -> None:
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await self.close_client(client)


class SDKProvider(BaseProvider):
    """A built-in provider: config handling, the call and the answer around a Backend."""

    kind: ClassVar[str]  # the built-in's name: anthropic, openai, gemini
    portkey_provider: ClassVar[str]  # its name for the Portkey gateway
    env_vars: ClassVar[tuple[str, ...]]  # where the API key may come from
    default_max_tokens: ClassVar[int | None] = None

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.handles_retries = settings.gateway is not None
        self._backend = self._gateway_backend() if settings.gateway else self.backend()

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> Self:
        return cls(name, read_settings(name, config, cls.env_vars))

    @abc.abstractmethod
    def backend(self) -> Backend:
        """The direct backend on this provider's own SDK."""

    def _gateway_backend(self) -> Backend:
        from .portkey import portkey_backend  # the gateway backend is built on this module

        return portkey_backend(self.name, self.portkey_provider, self.settings)

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        call = self._call(request)
        try:
            async with asyncio.timeout(self.settings.timeout):
                completion = await self._backend.complete(call)
        except TimeoutError:
            raise timeout_error(self.name, self.settings.timeout) from None
        return self._response(completion, call.want_json)

    async def aclose(self) -> None:
        await self._backend.aclose()

    def _call(self, request: ProviderRequest) -> Call:
        options = request.options
        model = options.get("model") or self.settings.default_model
        if not model:
            raise ProviderError(
                f"{self.name}: no model given: set options['model'] in select_provider or "
                f"default_model in the provider config",
                provider=self.name,
                retryable=False,
            )
        messages, system = split_messages(request.input, options.get("system"))
        return Call(
            model=str(model),
            messages=messages,
            system=system,
            max_tokens=options.get("max_tokens")
            or self.settings.max_tokens
            or self.default_max_tokens,
            params={k: v for k, v in options.items() if k not in _OWN_OPTIONS},
            want_json=options.get("json", True) is not False,
        )

    def _response(self, completion: Completion, want_json: bool) -> ProviderResponse:
        data: Any = completion.text
        if want_json:
            try:
                data = parse_answer(completion.text)
            except OutputValidationError as exc:
                raise ProviderError(
                    f"{self.name}: could not parse JSON in the answer ({exc}); asking again",
                    200,
                    provider=self.name,
                    retryable=True,
                ) from None
        metadata: dict[str, Any] = {
            "model": completion.model,
            "provider": self.name,
            "tokens": TokenUsage.of(completion.input_tokens, completion.output_tokens),
            "status_code": 200,
            "finish_reason": completion.finish_reason,
        }
        if completion.headers is not None and (limits := rate_limit(completion.headers)):
            metadata["rate_limit"] = limits
        return ProviderResponse(data=data, metadata=metadata)

    def __repr__(self) -> str:
        via = f" gateway={self.settings.gateway!r}" if self.settings.gateway else ""
        return f"<{type(self).__name__} name={self.name!r}{via}>"


def split_messages(
    prompt: str | list[dict[str, Any]], system: Any = None
) -> tuple[list[dict[str, Any]], str | None]:
    """User/assistant turns, and the system text from `system` and any system messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}], str(system) if system else None
    parts = [str(system)] if system else []
    turns: list[dict[str, Any]] = []
    for message in prompt:
        if message.get("role") == "system":
            parts.append(str(message.get("content", "")))
        else:
            turns.append(message)
    return turns, "\n\n".join(parts) if parts else None


def sdk_parameters(method: Any) -> frozenset[str]:
    """The keyword arguments an SDK method takes."""
    return frozenset(inspect.signature(method).parameters) - {"self", "stream"}


def sdk_kwargs(params: Mapping[str, Any], accepted: frozenset[str]) -> dict[str, Any]:
    """Options the SDK method names go as keyword arguments, the rest in `extra_body`.

    SDKs drop parameters that some models no longer take (anthropic 2.x has no
    `temperature`); the API, not the SDK, should say whether a model accepts them.
    """
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in params.items():
        if key in accepted:
            kwargs[key] = value
        else:
            extra[key] = value
    if extra:
        kwargs["extra_body"] = {**extra, **(kwargs.get("extra_body") or {})}
    return kwargs


def openai_messages(call: Call) -> list[dict[str, Any]]:
    """The call's messages in OpenAI chat format: the system text as the first message."""
    if call.system is None:
        return call.messages
    return [{"role": "system", "content": call.system}, *call.messages]


# --- headers --------------------------------------------------------------------------------

# Each: requests limit, remaining, reset; tokens limit, remaining, reset (all per minute).
_RATE_HEADERS = (
    (
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",  # RFC 3339 time
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "x-ratelimit-limit-requests",  # OpenAI, and OpenAI-compatible APIs
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",  # a duration: "1s", "6m0s", "20ms"
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ),
)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def rate_limit(headers: Mapping[str, str]) -> dict[str, float | None] | None:
    """RATE_LIMIT_KEYS from Anthropic or OpenAI rate-limit headers; None when there are none."""
    for names in _RATE_HEADERS:
        if names[0] in headers or names[3] in headers:
            break
    else:
        return None
    req_limit, req_left, req_reset, tok_limit, tok_left, tok_reset = (
        headers.get(name) for name in names
    )
    requests_remaining = _number(req_left)
    tokens_remaining = _number(tok_left)
    # The window that matters is the one that ran out; otherwise the requests window.
    reset = tok_reset if tokens_remaining == 0 and requests_remaining != 0 else req_reset
    return {
        "requests_per_minute": _number(req_limit),
        "tokens_per_minute": _number(tok_limit),
        "requests_remaining": requests_remaining,
        "tokens_remaining": tokens_remaining,
        "reset_seconds": _seconds_until(reset or tok_reset),
    }


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    if (millis := _number(headers.get("retry-after-ms"))) is not None:
        return max(millis / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _number(value)) is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _seconds_until(value: str | None) -> float | None:
    """A reset as a duration ("1s", "6m0s", "20ms", "0.5") or an RFC 3339 time."""
    if not value:
        return None
    if (seconds := _number(value)) is not None:
        return seconds
    parts = _DURATION_PART.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(when.timestamp() - time.time(), 0.0)


# --- errors ---------------------------------------------------------------------------------

_STATUS_WORDS = {401: "authentication failed", 403: "permission denied", 404: "not found"}


def status_error(
    provider: str, status: int, body: Any, headers: Mapping[str, str], settings: Settings
) -> ProviderError:
    """The error for an HTTP error status: "anthropic: 429 rate_limit_error: <message>"."""
    kind, detail = _error_detail(body)
    words = _STATUS_WORDS.get(status)
    if words:
        head = f"{status} {words}" + (f" ({kind})" if kind else "")
        if status == 401:
            detail = f"{detail}; check the API key" if detail else "check the API key"
    else:
        head = f"{status} {kind}" if kind else str(status)
    message = f"{provider}: {head}: {detail}" if detail else f"{provider}: {head}"
    return ProviderError(
        redact(message, settings),
        status,
        retry_after(headers),
        provider=provider,
        rate_limit=rate_limit(headers),
    )


def _error_detail(body: Any) -> tuple[str | None, str]:
    """(error type, message) from Anthropic, OpenAI, Gemini and Portkey error bodies."""
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        # OpenAI's `code` names the cause ("rate_limit_exceeded"); Gemini's is the number.
        code = error.get("code")
        kind = code if isinstance(code, str) and code else error.get("type") or error.get("status")
        message = error.get("message") or body.get("message") or body.get("html-message") or ""
        return (str(kind) if kind else None), _short(str(message))
    if isinstance(error, (str, bytes)):
        text = error.decode(errors="replace") if isinstance(error, bytes) else error
        return None, _short(text)
    return None, ""


def timeout_error(provider: str, timeout: float) -> ProviderError:
    return ProviderError(
        f"{provider}: no answer within {timeout:g}s (timeout)", None, provider=provider
    )


def connection_error(provider: str, exc: BaseException, settings: Settings) -> ProviderError:
    """A failure with no HTTP answer; the innermost cause says what happened."""
    root = _root_cause(exc)
    detail = str(root) or type(root).__name__
    return ProviderError(
        redact(f"{provider}: connection failed: {_short(detail)}", settings),
        None,
        provider=provider,
    )


def malformed_error(provider: str, detail: str, settings: Settings) -> ProviderError:
    """A 200 whose body is not the JSON the API promises: worth another attempt."""
    return ProviderError(
        redact(f"{provider}: malformed response body: {_short(detail)}", settings),
        200,
        provider=provider,
        retryable=True,
    )


def stainless_error(
    provider: str, exc: BaseException, sdk: ModuleType, settings: Settings
) -> ProviderError | None:
    """Map the anthropic and openai SDKs' exceptions (same names in both) to ProviderError."""
    if isinstance(exc, sdk.APIStatusError):
        return status_error(provider, exc.status_code, exc.body, exc.response.headers, settings)
    if isinstance(exc, sdk.APIConnectionError):
        root = _root_cause(exc)
        # The SDKs' aiohttp transport reports a reset connection as a connect timeout.
        if isinstance(root, TimeoutError) or "Timeout" in type(root).__name__:
            return timeout_error(provider, settings.timeout)
        return connection_error(provider, root, settings)
    if isinstance(exc, (sdk.APIResponseValidationError, ValueError)):
        return malformed_error(provider, str(exc), settings)
    return None


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


def redact(text: str, settings: Settings) -> str:
    """The text with every key of the provider replaced: error bodies may echo them."""
    for secret in settings.secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
