"""What the built-in providers share: the call, the backend that makes it, and the answer.

A built-in provider is an `SDKProvider` with a `Backend`: the backend speaks one wire
format (`anthropic.py`, `openai.py`, `gemini.py`), or the OpenAI format through the Portkey
gateway (`portkey.py`), either as plain HTTP over aiohttp (`_transport.py`, the default) or
through the official SDK (`transport="sdk"`); `build_provider` (in `__init__.py`) chooses
which and hands it in. Everything that does not depend on the wire format lives here, once,
with its config in `_settings.py` and the reading of headers and errors in `_http.py`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import importlib
import inspect
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .._deadlines import time_limit
from ..errors import ConfigurationError, OutputValidationError
from ..parsing import parse_answer
from ..types import ProviderRequest, ProviderResponse, TokenUsage
from ._http import rate_limit, timeout_error
from ._settings import Settings
from .base import BaseProvider, ProviderError

if TYPE_CHECKING:
    from ._batch import BatchAPI

# Options the provider consumes itself; every other option is passed on to the SDK call.
_OWN_OPTIONS = frozenset({"model", "max_tokens", "system", "json", "stream"})

log = logging.getLogger("dagengine")


@dataclass(slots=True)
class Call:
    """One request in the shape every backend starts from."""

    model: str
    messages: list[dict[str, Any]]  # user and assistant turns; system text is apart
    system: str | None
    max_tokens: int | None
    params: dict[str, Any]  # temperature, top_p, stop and other SDK keyword arguments
    want_json: bool
    schema: dict[str, Any] | None = None  # the JSON schema the answer must fit, if any


@dataclass(frozen=True, slots=True)
class Completion:
    """What a backend got back, before it becomes a ProviderResponse."""

    text: str
    model: str
    input_tokens: int  # every prompt token, cached or not (see TokenUsage)
    output_tokens: int
    finish_reason: str | None
    headers: Mapping[str, str] | None = None
    cache_read_tokens: int = 0  # part of input_tokens
    cache_write_tokens: int = 0  # part of input_tokens


class Backend(abc.ABC):
    """One wire format through one client (an SDK's, or an aiohttp session), created lazily
    inside the running loop and kept until `aclose()` or the end of that loop."""

    def __init__(self, provider: str, settings: Settings) -> None:
        self.provider = provider
        self.settings = settings
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None

    @abc.abstractmethod
    def new_client(self) -> Any:
        """The client; called on first use in each event loop."""

    @abc.abstractmethod
    async def complete(self, call: Call) -> Completion:
        """One attempt; SDK failures come out as ProviderError."""

    @staticmethod
    @abc.abstractmethod
    async def close_client(client: Any) -> None:
        """Release the client's connections. A static method: the closer that
        `_closed_with_loop` keeps must not refer back to the backend (see there)."""

    @property
    def open_client(self) -> Any:
        """The client (SDK client or aiohttp session) made for the current (or last) event
        loop; None before the first
        call and after aclose()."""
        return self._client

    def client(self) -> Any:
        # HTTP sessions belong to the loop that opened them: a new loop gets a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self.new_client(), loop
            self._closer = _closed_with_loop(self.close_client, self._client)
        return self._client

    async def aclose(self) -> None:
        closer, loop = self._closer, self._loop
        self._client = self._loop = self._closer = None
        if closer is not None and loop is asyncio.get_running_loop():
            await closer.aclose()  # a client of another loop is closed when that loop ends


async def _closing(close: Callable[[Any], Awaitable[None]], client: Any) -> AsyncGenerator[None]:
    try:
        yield
    finally:
        try:
            await close(client)
        except Exception as exc:  # closing must not hide what the caller is doing
            log.debug("closing a provider client failed: %s", exc)


def _closed_with_loop(
    close: Callable[[Any], Awaitable[None]], client: Any
) -> AsyncGenerator[None]:
    """A started async generator whose `aclose()` closes the client.

    Clients live as long as their engine, across runs, so a user who never calls
    `engine.close()` would leave open sessions behind when the loop ends, and aiohttp's
    "Unclosed client session" warnings at exit. The event loop finalises every live async
    generator when it shuts down (`loop.shutdown_asyncgens()`, which asyncio.run and
    asyncio.Runner call), so the client is closed while its loop still runs; no task is left
    waiting for that. A backend dropped earlier drops the generator with it, which the loop
    then closes at once. The generator holds the client and `close` but never the backend:
    a reference cycle would leave them all to the cyclic collector, which finalises the
    client (aiohttp warns there) before the generator can close it.
    """
    closer = _closing(close, client)
    with contextlib.suppress(StopIteration):  # run to its `yield`: the loop now tracks it
        closer.asend(None).send(None)
    return closer


class SDKProvider(BaseProvider):
    """A built-in provider: config handling, the call and the answer around a Backend."""

    kind: ClassVar[str]  # the built-in's name: anthropic, openai, gemini
    portkey_provider: ClassVar[str]  # its name for the Portkey gateway
    env_vars: ClassVar[tuple[str, ...]]  # where the API key may come from
    default_max_tokens: ClassVar[int | None] = None
    # "module:Class" of its batch API, imported on first use (as BUILTIN_PROVIDERS are): the
    # batch modules build on the provider's module, which therefore never imports them.
    batch_api_class: ClassVar[str | None] = None

    def __init__(self, name: str, settings: Settings, backend: Backend) -> None:
        self.name = name
        self.settings = settings
        self.backend = backend  # direct, or through a gateway: build_provider chooses
        self.handles_retries = settings.gateway is not None
        self._batch_api: BatchAPI | None = None

    @classmethod
    @abc.abstractmethod
    def direct_backend(cls, name: str, settings: Settings) -> Backend:
        """The backend that calls the provider's API directly (not through a gateway), over
        the transport `settings.transport` names."""

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        call = self._call(request)
        try:
            async with time_limit(self.settings.timeout):
                completion = await self.backend.complete(call)
        except TimeoutError:
            raise timeout_error(self.name, self.settings.timeout) from None
        return self._response(completion, call.want_json)

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self._batch_api is not None:
            await self._batch_api.aclose()

    def batch_api(self) -> BatchAPI | None:
        """The provider's batch API, on its official SDK, made on first use. None through a
        gateway: batches go to the provider's own batch endpoints with its own key."""
        if self.settings.gateway is not None:
            return None
        if self._batch_api is None:
            self._batch_api = self.new_batch_api()
        return self._batch_api

    def new_batch_api(self) -> BatchAPI | None:
        """The batch API `batch_api()` keeps; None for a kind that has none."""
        if self.batch_api_class is None:
            return None
        module_name, class_name = self.batch_api_class.split(":")
        api: BatchAPI = getattr(importlib.import_module(module_name), class_name)(self)
        return api

    def check_options(self, options: Mapping[str, Any]) -> None:
        if not (options.get("model") or self.settings.default_model):
            raise ConfigurationError(self._no_model())

    def _no_model(self) -> str:
        return (f"{self.name}: no model given: set options['model'] in select_provider or "
                f"default_model in the provider config")

    @property
    def cache_scope(self) -> str:
        settings = self.settings
        where = {"kind": self.kind, "base_url": settings.base_url, "gateway": settings.gateway,
                 "gateway_url": settings.gateway_url,
                 "gateway_custom_host": settings.gateway_custom_host}
        if settings.gateway_config is not None:  # may hold keys: only a digest of it
            text = json.dumps(settings.gateway_config, sort_keys=True, default=str)
            where["gateway_config"] = hashlib.sha256(text.encode()).hexdigest()
        return json.dumps({k: v for k, v in where.items() if v is not None}, sort_keys=True)

    def _call(self, request: ProviderRequest) -> Call:
        options = request.options
        model = options.get("model") or self.settings.default_model
        if not model:
            raise ProviderError(self._no_model(), provider=self.name, retryable=False)
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
            schema=request.output_schema,
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
            "tokens": TokenUsage.of(
                completion.input_tokens,
                completion.output_tokens,
                cache_read_tokens=completion.cache_read_tokens,
                cache_write_tokens=completion.cache_write_tokens,
            ),
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
