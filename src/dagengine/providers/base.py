"""The provider interface, and the registry the engine looks providers up in."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ProviderError, UnknownProviderError
from ..types import ProviderRequest, ProviderResponse

if TYPE_CHECKING:
    from ._batch import BatchAPI

__all__ = ["RATE_LIMIT_KEYS", "BaseProvider", "ProviderError", "ProviderRegistry"]

# Keys of the `rate_limit` dict a provider may put in ProviderResponse.metadata["rate_limit"]
# or ProviderError.rate_limit, read from the provider's rate-limit headers. Every value is
# optional (None or absent when the provider did not say).
RATE_LIMIT_KEYS = (
    "requests_per_minute",  # the request limit per minute
    "tokens_per_minute",  # the token limit per minute
    "requests_remaining",  # requests left in the current window
    "tokens_remaining",  # tokens left in the current window
    "reset_seconds",  # seconds until the window resets
)


class BaseProvider(abc.ABC):
    """A backend that answers ProviderRequests.

    Implement `execute`; raise ProviderError (with status_code / retry_after when known) or
    return a ProviderResponse with `error` set. The engine does the retrying, so a provider
    makes exactly one attempt per call. A provider that retries on its own side (a
    gateway) sets `handles_retries = True` and the engine then makes one attempt per call.
    """

    name: str = "provider"
    handles_retries: bool = False

    @abc.abstractmethod
    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        """Answer one request."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook for providers with clients
        """Release connections. Called by `engine.close()` (and at the end of `engine.run()`);
        a provider used again afterwards opens them again."""

    def check_options(self, options: Mapping[str, Any]) -> None:  # noqa: B027 - optional
        """Raise ConfigurationError if no request with these options could ever be sent (no
        model, say), without sending one: the engine asks before a run's first call."""

    def batch_api(self) -> BatchAPI | None:
        """This provider's batch API (see providers._batch), or None when it has none; a
        dimension in batch mode needs one."""
        return None

    @property
    def cache_scope(self) -> str:
        """What else, besides the request, decides this provider's answers (such as the URL
        it sends to), as text; part of the response cache's key, so the same request sent to
        a simulator and to the real API are different entries. Never include secrets."""
        return ""

    @property
    def cache_name(self) -> str:
        """The provider as the response cache keys it: its name, and a digest of its scope
        (which may name hosts that should not be written out)."""
        scope = self.cache_scope
        if not scope:
            return self.name
        return f"{self.name}@{hashlib.sha256(scope.encode()).hexdigest()[:16]}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


class ProviderRegistry:
    """Providers by name."""

    def __init__(self, providers: Iterable[BaseProvider] = ()) -> None:
        self._providers: dict[str, BaseProvider] = {}
        for provider in providers:
            self.register(provider)

    def register(self, provider: BaseProvider, name: str | None = None) -> None:
        if not isinstance(provider, BaseProvider):
            raise TypeError(
                f"providers must be BaseProvider instances, got {type(provider).__name__}"
            )
        self._providers[name or provider.name] = provider

    def get(self, name: str) -> BaseProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProviderError(name, self.list()) from None

    def has(self, name: str) -> bool:
        return name in self._providers

    def list(self) -> list[str]:
        return list(self._providers)

    def __iter__(self) -> Iterator[BaseProvider]:
        return iter(self._providers.values())

    def __len__(self) -> int:
        return len(self._providers)

    def __repr__(self) -> str:
        return f"ProviderRegistry({self.list()})"
