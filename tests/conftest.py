"""Shared fixtures: in-process fake providers and small plugins for engine tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from dagengine import (
    BaseProvider,
    Plugin,
    PromptContext,
    ProviderError,
    ProviderRequest,
    ProviderResponse,
    TokenUsage,
)
from dagengine.gateway import LocalGateway, node_available


@dataclass
class Call:
    dimension: str
    input: Any
    options: dict[str, Any]
    section_index: int | None
    start: float
    end: float = 0.0


@dataclass
class FakeProvider(BaseProvider):
    """An in-process provider: answers by `answer`, waits `latency(request)` seconds, and
    fails by `fail(request, attempt_number)` (return a ProviderError to raise, or None)."""

    name: str = "fake"
    answer: Callable[[ProviderRequest], Any] = lambda r: {"ok": True, "dimension": r.dimension}
    latency: Callable[[ProviderRequest], float] = lambda r: 0.0
    fail: Callable[[ProviderRequest, int], BaseException | None] = lambda r, n: None
    model: str = "fake-model"
    tokens: tuple[int, int] = (10, 5)
    handles_retries: bool = False
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    closed: int = 0

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        call = Call(request.dimension, request.input, dict(request.options),
                    request.metadata.get("section_index"), time.monotonic())
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.latency(request)
            if delay:
                await asyncio.sleep(delay)
            error = self.fail(request, len(self.calls_for(request)))
            if error is not None:
                raise error
            return ProviderResponse(
                data=self.answer(request),
                metadata={"model": request.options.get("model", self.model),
                          "tokens": TokenUsage.of(*self.tokens), "status_code": 200},
            )
        finally:
            self.in_flight -= 1
            call.end = time.monotonic()

    def calls_for(self, request: ProviderRequest) -> list[Call]:
        return [c for c in self.calls if c.dimension == request.dimension
                and c.section_index == request.metadata.get("section_index")]

    async def aclose(self) -> None:
        self.closed += 1


class SimplePlugin(Plugin):
    """Dimensions and dependencies given at construction; prompts name the section."""

    def __init__(self, dimensions: list[Any], dependencies: dict[str, list[str]] | None = None,
                 provider: str = "fake", options: dict[str, Any] | None = None) -> None:
        super().__init__("simple", "Simple", "test plugin")
        self.dimensions = dimensions
        self._deps = dependencies or {}
        self._provider = provider
        self._options = options or {"model": "fake-model"}

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return self._deps

    def create_prompt(self, ctx: PromptContext) -> str:
        if ctx.is_global:
            return f"{ctx.dimension} over {len(ctx.sections)} sections"
        return f"{ctx.dimension}: {ctx.sections[0].content}"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": self._provider, "options": self._options}


def http_error(status: int, retry_after: float | None = None) -> ProviderError:
    return ProviderError(f"fake: HTTP {status}", status_code=status, retry_after=retry_after)


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture(params=["http", "sdk"])
def transport(request: pytest.FixtureRequest) -> str:
    """The built-in providers' two transports: the documented wire format over aiohttp (the
    default) and the official SDK. A test taking this fixture runs on both."""
    return str(request.param)


@pytest.fixture(scope="session")
def portkey_gateway() -> Iterator[LocalGateway]:
    """One open-source Portkey gateway on 127.0.0.1 for the whole test session."""
    if not node_available():
        pytest.skip("node is not on PATH: the Portkey gateway needs Node.js 18+")
    with LocalGateway() as gateway:
        yield gateway



def pytest_configure(config: pytest.Config) -> None:
    """Tests talk to the simulator only: keys a developer has set never reach a real API,
    not even from session fixtures or subprocesses."""
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY",
                 "PORTKEY_API_KEY"):
        os.environ.pop(name, None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def loopback_server(routes: dict[str, Handler]) -> AsyncIterator[int]:
    """A throw-away HTTP server on 127.0.0.1 answering POSTs to `routes`; yields its port."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
