"""BaseSimulator: what both the in-process and the subprocess simulator offer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from ._config import SimulatorConfig

HOST = "127.0.0.1"


class BaseSimulator(ABC):
    """A running simulator: its URLs, its counters and its runtime configuration."""

    def __init__(self, port: int) -> None:
        self._requested_port = port
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not running; use `async with` or `await start()`")
        return self._port

    @property
    def base_url(self) -> str:
        """Root URL; the Anthropic SDK's base_url (it appends /v1/messages itself)."""
        return f"http://{HOST}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        """The OpenAI SDK's base_url (it appends /chat/completions)."""
        return f"{self.base_url}/v1"

    @property
    def gemini_base_url(self) -> str:
        """google-genai's HttpOptions.base_url (it appends /v1 or /v1beta/models/...)."""
        return self.base_url

    @property
    @abstractmethod
    def config(self) -> SimulatorConfig: ...

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def stats(self) -> dict[str, Any]:
        """The GET /stats document."""

    @abstractmethod
    async def recent_requests(self) -> list[dict[str, Any]]:
        """The GET /requests list: the last request bodies received, newest last, each as
        {"api", "path", "body"}."""

    @abstractmethod
    async def configure(self, **changes: Any) -> SimulatorConfig:
        """Change any SimulatorConfig field from the next request on; returns the new config."""

    @abstractmethod
    async def reset(self) -> None:
        """Clear counters and the pending script; refill the buckets and reseed the RNGs."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def merged_config(config: SimulatorConfig | None, options: Mapping[str, Any]) -> SimulatorConfig:
    """`config` (or the defaults) with keyword options applied on top."""
    return (config or SimulatorConfig()).replace(options)
