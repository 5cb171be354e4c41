"""Shared fixtures: the in-process fake provider (dagengine.testing.FunctionProvider) and
small plugins for engine tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dagengine import Plugin, PromptContext, ProviderError
from dagengine.gateway import LocalGateway, node_available
from dagengine.testing import FunctionProvider

# The suite's fake provider is the library's own test double, under the name the tests use.
FakeProvider = FunctionProvider


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


@pytest.fixture(autouse=True)
def default_store_home(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own default store (engines without store= record there), so no
    test reads runs or cached answers of another, nor of the developer's own cache; tests
    that start subprocesses pass the variable on to them."""
    home = tmp_path_factory.mktemp("cache-home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("DAGENGINE_STORE", raising=False)
    return home / "dagengine" / "runs.db"


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
    # Module and session fixtures start before the per-test `default_store_home`: their
    # engines' default store is a throw-away one too, never the developer's ~/.cache.
    os.environ.pop("DAGENGINE_STORE", None)
    _session_cache_home.append(tempfile.mkdtemp(prefix="dagengine-tests-"))
    os.environ["XDG_CACHE_HOME"] = _session_cache_home[0]


_session_cache_home: list[str] = []


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _session_cache_home:
        shutil.rmtree(folder, ignore_errors=True)


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
