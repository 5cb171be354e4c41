"""OpenAI Chat Completions, over plain HTTP (the default) or on the official `openai` SDK;
also any OpenAI-compatible endpoint.

`OpenAIHTTPBackend` and `OpenAIChatBackend` are also what the Portkey gateway mode sends
through (see portkey.py). The SDK is imported when the first SDK backend is built, not with
this module (see anthropic.py).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._structured import schema_name, strict_schema
from ._http import malformed_error, stainless_error
from ._sdk import (
    Backend,
    Call,
    Completion,
    SDKProvider,
    openai_messages,
    sdk_kwargs,
    sdk_parameters,
)
from ._settings import Settings
from ._transport import HTTPBackend, RequestOptions, request_options

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIChatBackend", "OpenAIHTTPBackend", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@functools.cache
def _create_parameters() -> frozenset[str]:
    from openai.resources.chat.completions import AsyncCompletions

    return sdk_parameters(AsyncCompletions.create)


class OpenAIChatBackend(Backend):
    """POST /chat/completions with the openai SDK to `base_url` (None: the SDK's default).

    An output schema goes as `response_format` json_schema, or with `schema_as_tool` as a
    function the model must call (for gateways that translate tools but not response_format).
    """

    def __init__(
        self,
        provider: str,
        settings: Settings,
        *,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        schema_as_tool: bool = False,
    ) -> None:
        super().__init__(provider, settings)
        self.base_url = base_url
        self.headers = dict(headers) if headers else None
        self.schema_as_tool = schema_as_tool
        _create_parameters()  # imports the SDK now, while the engine is built

    def new_client(self) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(
            api_key=self.settings.api_key,
            base_url=self.base_url,
            timeout=self.settings.timeout,
            max_retries=0,
            default_headers=self.headers,
            http_client=openai.DefaultAioHttpClient(),
        )

    @staticmethod
    async def close_client(client: openai.AsyncOpenAI) -> None:
        await client.close()

    async def complete(self, call: Call) -> Completion:
        import openai

        kwargs: dict[str, Any] = sdk_kwargs(call.params, _create_parameters())
        tool = _add_call(kwargs, call, self.schema_as_tool)
        client: openai.AsyncOpenAI = self.client()
        try:
            raw = await client.chat.completions.with_raw_response.create(**kwargs)
            body = json.loads(raw.content)  # with_raw_response has read it already
        except (openai.OpenAIError, ValueError) as exc:
            if (error := stainless_error(self.provider, exc, openai, self.settings)) is None:
                raise
            raise error from None
        return _completion(self, body, raw.headers, call, tool)


class OpenAIHTTPBackend(HTTPBackend):
    """POST {base_url}/chat/completions with a Bearer key, no SDK; the same options as
    OpenAIChatBackend (the Portkey gateway mode sends through either)."""

    def __init__(
        self,
        provider: str,
        settings: Settings,
        *,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        schema_as_tool: bool = False,
    ) -> None:
        sent = {"Authorization": f"Bearer {settings.api_key}", **_account_headers(),
                **(headers or {})}
        super().__init__(provider, settings, headers=sent, base_url=base_url
                         or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self.schema_as_tool = schema_as_tool

    async def complete(self, call: Call) -> Completion:
        body, options, tool = chat_body(call, self.schema_as_tool)
        answer, headers = await self.post("/chat/completions", body, options)
        return _completion(self, answer, headers, call, tool)


def chat_body(call: Call, schema_as_tool: bool = False
              ) -> tuple[dict[str, Any], RequestOptions | None, str | None]:
    """The JSON body the call posts to /chat/completions (a batch line's `body` too), the
    options that shape the HTTP request instead, and the name of the function carrying the
    answer when the schema goes as a tool."""
    body, options = request_options(call.params)
    return body, options, _add_call(body, call, schema_as_tool)


def _account_headers() -> dict[str, str]:
    """The organization and project the openai SDK sends from its environment variables."""
    headers = {}
    if organization := os.environ.get("OPENAI_ORG_ID"):
        headers["OpenAI-Organization"] = organization
    if project := os.environ.get("OPENAI_PROJECT_ID"):
        headers["OpenAI-Project"] = project
    return headers


def _add_call(body: dict[str, Any], call: Call, schema_as_tool: bool) -> str | None:
    """Model, messages, max_tokens and the output schema; the name of the function carrying
    the answer when the schema goes as a tool."""
    body.update(model=call.model, messages=openai_messages(call))
    if call.max_tokens is not None and "max_completion_tokens" not in body:
        body["max_tokens"] = call.max_tokens
    return _ask_for_schema(call, body, schema_as_tool)


def _completion(backend: Backend, body: Any, headers: Mapping[str, str], call: Call,
                tool: str | None) -> Completion:
    try:
        choice = body["choices"][0]
        input_tokens, output_tokens, cache_read, cache_write = _usage(body.get("usage") or {})
        return Completion(
            text=_answer_text(choice["message"], tool),
            model=body.get("model") or call.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish_reason=choice.get("finish_reason"),
            headers=headers,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise malformed_error(
            backend.provider, "the answer has no choices[0].message", backend.settings
        ) from None


def _ask_for_schema(call: Call, kwargs: dict[str, Any], schema_as_tool: bool) -> str | None:
    """Put the output schema in the request; the name of the function carrying the answer
    when it goes as a tool. The user's own response_format (or tools) win."""
    if call.schema is None:
        return None
    name = schema_name(call.schema)
    if schema_as_tool:
        if "tools" in call.params or "tool_choice" in call.params:
            return None
        kwargs["tools"] = [{"type": "function", "function": {
            "name": name, "description": "Give your answer as this function's arguments.",
            "parameters": call.schema}}]
        kwargs["tool_choice"] = {"type": "function", "function": {"name": name}}
        return name
    if "response_format" not in call.params:
        strict = strict_schema(call.schema)
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": name, "schema": call.schema if strict is None else strict,
            "strict": strict is not None}}
    return None


def _answer_text(message: dict[str, Any], tool: str | None) -> str:
    """The arguments of the answer function when the model called it, else the message text;
    with no text, the arguments of the function it called (one the user forced)."""
    calls = [c.get("function") or {} for c in message.get("tool_calls") or ()
             if isinstance(c, dict)]
    calls = [f for f in calls if isinstance(f.get("arguments"), str)]
    for function in calls:
        if tool is not None and function.get("name") == tool:
            return str(function["arguments"])
    text = str(message.get("content") or "")
    if not text.strip() and calls:
        return str(calls[0]["arguments"])
    return text


def _usage(usage: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(input, output, cache read, cache write) tokens of a chat completion's usage.

    OpenAI's prompt_tokens counts the cached ones (prompt_tokens_details.cached_tokens) too.
    The Portkey gateway translating Anthropic answers adds Anthropic's cache_read_input_tokens
    and cache_creation_input_tokens, and then, from its Anthropic translator, a prompt_tokens
    without them (only its total_tokens counts them), from its Bedrock one a prompt_tokens
    with them: total_tokens tells which.
    """
    prompt = int(usage.get("prompt_tokens") or 0)
    output = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    read = int(usage.get("cache_read_input_tokens") or details.get("cached_tokens") or 0)
    write = int(usage.get("cache_creation_input_tokens") or 0)
    anthropic_counts = "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage
    if anthropic_counts and usage.get("total_tokens") == prompt + output + read + write:
        prompt += read + write
    return prompt, output, read, write


class OpenAIProvider(SDKProvider):
    """OpenAI, or any OpenAI-compatible API through `base_url`."""

    kind = "openai"
    portkey_provider = "openai"
    env_vars = ("OPENAI_API_KEY",)
    batch_api_class = "dagengine.providers._batch_openai:OpenAIBatchAPI"

    @classmethod
    def direct_backend(cls, name: str, settings: Settings) -> Backend:
        if settings.transport == "sdk":
            return OpenAIChatBackend(name, settings, base_url=settings.base_url)
        return OpenAIHTTPBackend(name, settings, base_url=settings.base_url)
