"""The exception hierarchy: every error the engine raises derives from DagEngineError."""

from __future__ import annotations

import reprlib
from collections.abc import Sequence


class DagEngineError(Exception):
    """Base class of every error raised by dagengine."""


class ConfigurationError(DagEngineError, ValueError):
    """The engine, a provider or a plugin is configured in a way that cannot work."""


class ValidationError(ConfigurationError):
    """A configuration value is outside its allowed range or of the wrong type.

    `shown` replaces the value's repr in the message where the repr alone would not say
    what is wrong (its type, a missing key); a long value is shown shortened.
    """

    def __init__(self, field: str, expected: str, got: object, *,
                 shown: str | None = None) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        super().__init__(f"{field} must be {expected}, got {shown or _short_repr(got)}")


def _short_repr(value: object) -> str:
    # A whole document passed where a list was expected must not fill the terminal.
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = 60
    return shortener.repr(value)


class UnknownProviderError(ConfigurationError):
    """A plugin selected a provider that is not configured."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        self.name = name
        self.available = list(available)
        names = ", ".join(self.available) or "none"
        super().__init__(
            f"provider {name!r} is not configured (configured: {names}); "
            f"add it to DagEngine(providers=...)"
        )


class MissingAPIKeyError(ConfigurationError):
    """A built-in provider has no API key in its config or environment."""

    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        self.env_var = env_var
        super().__init__(
            f"provider {provider!r} has no API key: pass providers={{{provider!r}: "
            f"{{'api_key': ...}}}} or set the {env_var} environment variable"
        )


class DependencyError(ConfigurationError):
    """The dimension graph names an unknown dimension or a dimension depends on itself."""


class CircularDependencyError(DependencyError):
    """The dimension graph has a cycle; `cycle` lists it, each depending on the next."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(
            "circular dependency between dimensions: "
            + " -> ".join(self.cycle)
            + " (each depends on the next); remove one of these dependencies"
        )


class EngineUsageError(DagEngineError, RuntimeError):
    """The engine was called in a way it does not support (e.g. run() inside an event loop)."""


class ProviderError(DagEngineError):
    """A provider call failed.

    `status_code` is the HTTP status when there was one (None for timeouts and connection
    errors); `retry_after` is the wait in seconds the provider asked for, if any.
    """

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        retry_after: float | None = None,
        *,
        provider: str | None = None,
        retryable: bool | None = None,
        rate_limit: dict[str, float | None] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.provider = provider
        self._retryable = retryable
        # Limits the provider announced in its headers (see providers.base.RATE_LIMIT_KEYS).
        self.rate_limit = rate_limit

    @property
    def retryable(self) -> bool:
        """408, 409, 429, 5xx and failures without a status (timeouts, resets) are retried."""
        if self._retryable is not None:
            return self._retryable
        code = self.status_code
        return code is None or code in (408, 409, 429) or code >= 500

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.message!r}, status_code={self.status_code!r}, "
            f"retry_after={self.retry_after!r})"
        )


class OutputValidationError(DagEngineError):
    """The provider's answer could not be parsed or did not match the dimension's schema."""


class DimensionTimeoutError(DagEngineError, TimeoutError):
    """One section-dimension execution, retries included, ran past its time limit."""

    def __init__(self, dimension: str, limit: float) -> None:
        self.dimension = dimension
        self.limit = limit
        super().__init__(f"dimension {dimension!r} timed out after {limit:g}s")


class HookError(DagEngineError):
    """A plugin hook or a callback raised."""

    def __init__(self, hook: str, error: BaseException) -> None:
        self.hook = hook
        self.error = error
        super().__init__(f"{hook} raised {type(error).__name__}: {error}")


class HookResultError(ConfigurationError):
    """A plugin hook returned a value of a kind it may not return; the message says which."""

    def __init__(self, hook: str, message: str) -> None:
        self.hook = hook
        super().__init__(message)


class PreflightError(ConfigurationError):
    """The check before a run's first call found a dimension that cannot work; no call was made.

    `dimension` is the dimension concerned (None when the plugin has no dimensions at all).
    """

    def __init__(self, dimension: str | None, message: str) -> None:
        self.dimension = dimension
        where = f"dimension {dimension!r}: " if dimension is not None else ""
        super().__init__(f"preflight refused the run before any call: {where}{message}")


class EmptyResponseError(ProviderError):
    """A provider answered, but with nothing: empty or blank text, or no data. Retried."""

    def __init__(self, provider: str, finish_reason: object = None) -> None:
        super().__init__(
            f"{provider} answered with an empty response (finish_reason={finish_reason})",
            200,
            provider=provider,
            retryable=True,
        )
        self.finish_reason = finish_reason


class StoreError(DagEngineError):
    """The run store cannot be used as asked (not a store, newer schema, run mismatch, locked)."""


class MissingExtraError(DagEngineError, ImportError):
    """A feature needs an optional dependency that is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"this needs the {package!r} package, which is not installed: "
            f"pip install 'dagengine[{extra}]'"
        )


class GatewayError(DagEngineError):
    """The local Portkey gateway cannot be installed, started or reached."""


class ProcessInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped `DagEngine.run()`; `result` holds what finished before it.

    A KeyboardInterrupt, so code that does not care still stops as usual. With a store the
    finished results are also committed, and `resume=True` continues the run.
    """

    def __init__(self, result: object) -> None:
        super().__init__("interrupted; the results that finished are in .result")
        self.result = result
