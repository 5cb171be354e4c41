"""Anthropic Messages API: over plain HTTP (the default), or on the official `anthropic` SDK.

The SDK is imported when the first SDK backend is built, not with this module: it takes
seconds, its objects make every full garbage collection of the process slower, and the http
transport never needs it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._structured import schema_name
from ._http import malformed_error, stainless_error
from ._sdk import Backend, Call, Completion, SDKProvider, sdk_kwargs, sdk_parameters
from ._settings import Settings
from ._transport import HTTPBackend, RequestOptions, request_options

if TYPE_CHECKING:
    import anthropic

__all__ = ["AnthropicHTTPBackend", "AnthropicProvider"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"  # the anthropic-version the Messages API documents
_ANSWER_TOOL_DESCRIPTION = "Give your answer as this tool's input."


@functools.cache
def _create_parameters() -> frozenset[str]:
    from anthropic.resources.messages import AsyncMessages

    return sdk_parameters(AsyncMessages.create)


class AnthropicBackend(Backend):
    def __init__(self, provider: str, settings: Settings) -> None:
        super().__init__(provider, settings)
        _create_parameters()  # imports the SDK now, while the engine is built

    def new_client(self) -> anthropic.AsyncAnthropic:
        import anthropic

        # No open_telemetry=: the SDK's own spans, and its ANTHROPIC_OPEN_TELEMETRY switch,
        # are the user's to turn on or off.
        return anthropic.AsyncAnthropic(
            api_key=self.settings.api_key,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            max_retries=0,
            http_client=anthropic.DefaultAioHttpClient(),
        )

    @staticmethod
    async def close_client(client: anthropic.AsyncAnthropic) -> None:
        await client.close()

    async def complete(self, call: Call) -> Completion:
        import anthropic

        kwargs: dict[str, Any] = sdk_kwargs(_stop_sequences(call.params), _create_parameters())
        _add_call(kwargs, call)
        tool = _answer_tool(call, kwargs)
        client: anthropic.AsyncAnthropic = self.client()
        try:
            raw = await client.messages.with_raw_response.create(**kwargs)
            body = await raw.json()
        except (anthropic.AnthropicError, ValueError) as exc:
            if (error := stainless_error(self.provider, exc, anthropic, self.settings)) is None:
                raise
            raise error from None
        return _completion(self, body, raw.headers, call, tool)


class AnthropicHTTPBackend(HTTPBackend):
    """POST {base_url}/v1/messages with x-api-key and anthropic-version, no SDK."""

    def __init__(self, provider: str, settings: Settings) -> None:
        base_url = settings.base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        super().__init__(provider, settings, base_url=base_url, headers={
            "x-api-key": settings.api_key, "anthropic-version": API_VERSION})

    async def complete(self, call: Call) -> Completion:
        body, options, tool = message_body(call)
        answer, headers = await self.post("/v1/messages", body, options)
        return _completion(self, answer, headers, call, tool)


def message_body(call: Call) -> tuple[dict[str, Any], RequestOptions | None, str | None]:
    """The JSON body the call posts to /v1/messages (a batch request's `params` too), the
    options that shape the HTTP request instead, and the name of the answer tool, if any."""
    body, options = request_options(_stop_sequences(call.params))
    _add_call(body, call)
    return body, options, _answer_tool(call, body)


def _stop_sequences(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """`stop` (a string or a list, as OpenAI takes it) as Anthropic's stop_sequences list."""
    if "stop" not in params:
        return params
    renamed = {k: v for k, v in params.items() if k != "stop"}
    stop = params["stop"]
    renamed["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop or ())
    return renamed


def _add_call(body: dict[str, Any], call: Call) -> None:
    body.update(model=call.model, messages=call.messages, max_tokens=call.max_tokens)
    if call.system is not None:
        body["system"] = call.system


def _completion(backend: Backend, body: Any, headers: Mapping[str, str], call: Call,
                tool: str | None) -> Completion:
    try:
        usage = body.get("usage") or {}
        # Anthropic's input_tokens leaves out the cache tokens; ours counts them too.
        cache_read = int(usage.get("cache_read_input_tokens") or 0)
        cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        return Completion(
            text=_answer_text(body["content"], tool),
            model=body.get("model") or call.model,
            input_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
            output_tokens=int(usage.get("output_tokens") or 0),
            finish_reason=body.get("stop_reason"),
            headers=headers,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise malformed_error(
            backend.provider, "the answer has no content list", backend.settings
        ) from None


def _answer_tool(call: Call, kwargs: dict[str, Any]) -> str | None:
    """Ask for the schema as the input of a tool the model must call; the tool's name.

    The user's own `tools` or `tool_choice` win: then nothing is added (and None returned).
    """
    if call.schema is None or "tools" in call.params or "tool_choice" in call.params:
        return None
    name = schema_name(call.schema)
    description = call.schema.get("description")
    kwargs["tools"] = [{
        "name": name,
        "description": description if isinstance(description, str) else _ANSWER_TOOL_DESCRIPTION,
        "input_schema": call.schema,
    }]
    # Extended thinking refuses a forced tool; the model is then only offered it.
    forced = "thinking" not in call.params
    kwargs["tool_choice"] = {"type": "tool", "name": name} if forced else {"type": "auto"}
    return name


def _answer_text(content: list[dict[str, Any]], tool: str | None) -> str:
    """The answer tool's input as JSON text when the model called it, else the text blocks;
    with no text, the input of the tool it called (a tool the user forced)."""
    calls = [block for block in content if block.get("type") == "tool_use"]
    for block in calls:
        if tool is not None and block.get("name") == tool:
            return json.dumps(block.get("input"), ensure_ascii=False)
    text = "".join(block.get("text", "") for block in content if block.get("type") == "text")
    if not text.strip() and calls:
        return json.dumps(calls[0].get("input"), ensure_ascii=False)
    return text


class AnthropicProvider(SDKProvider):
    """Claude through the Messages API. `max_tokens` defaults to 1024 (the API needs one)."""

    kind = "anthropic"
    portkey_provider = "anthropic"
    env_vars = ("ANTHROPIC_API_KEY",)
    batch_api_class = "dagengine.providers._batch_anthropic:AnthropicBatchAPI"
    default_max_tokens = 1024

    @classmethod
    def direct_backend(cls, name: str, settings: Settings) -> Backend:
        if settings.transport == "sdk":
            return AnthropicBackend(name, settings)
        return AnthropicHTTPBackend(name, settings)
