"""Reading provider HTTP answers: rate-limit and retry-after headers, and errors.

Every error message passes through `redact`, so no API key (nor a key inside the gateway
config) reaches an error, a log, a repr or the store. Details are shortened after
redaction, so that a cut never leaves the start of a key behind.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import datetime
from types import ModuleType
from typing import Any

from ._settings import Settings
from .base import ProviderError

_MAX_DETAIL = 300


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
    detail = _short(redact(detail, settings))
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
        return (str(kind) if kind else None), str(message)
    if isinstance(error, (str, bytes)):
        text = error.decode(errors="replace") if isinstance(error, bytes) else error
        return None, text
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
        f"{provider}: connection failed: {_short(redact(detail, settings))}",
        None,
        provider=provider,
    )


def malformed_error(provider: str, detail: str, settings: Settings) -> ProviderError:
    """A 200 whose body is not the JSON the API promises: worth another attempt."""
    return ProviderError(
        f"{provider}: malformed response body: {_short(redact(detail, settings))}",
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
