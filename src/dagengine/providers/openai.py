"""OpenAI Chat Completions on the official `openai` SDK; also any OpenAI-compatible endpoint.

`OpenAIChatBackend` is also what the Portkey gateway mode sends through (see portkey.py).
The SDK is imported when the first backend is built, not with this module (see anthropic.py).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIChatBackend", "OpenAIProvider"]


@functools.cache
def _create_parameters() -> frozenset[str]:
    from openai.resources.chat.completions import AsyncCompletions

    return sdk_parameters(AsyncCompletions.create)


class OpenAIChatBackend(Backend):
    """POST /chat/completions with the openai SDK to `base_url` (None: the SDK's default)."""

    def __init__(
        self,
        provider: str,
        settings: Settings,
        *,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(provider, settings)
        self.base_url = base_url
        self.headers = dict(headers) if headers else None
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

    async def close_client(self, client: openai.AsyncOpenAI) -> None:
        await client.close()

    async def complete(self, call: Call) -> Completion:
        import openai

        kwargs: dict[str, Any] = sdk_kwargs(call.params, _create_parameters())
        kwargs.update(model=call.model, messages=openai_messages(call))
        if call.max_tokens is not None and "max_completion_tokens" not in kwargs:
            kwargs["max_tokens"] = call.max_tokens
        client: openai.AsyncOpenAI = self.client()
        try:
            raw = await client.chat.completions.with_raw_response.create(**kwargs)
            body = json.loads(raw.content)  # with_raw_response has read it already
        except (openai.OpenAIError, ValueError) as exc:
            if (error := stainless_error(self.provider, exc, openai, self.settings)) is None:
                raise
            raise error from None
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            return Completion(
                text=choice["message"].get("content") or "",
                model=body.get("model") or call.model,
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason=choice.get("finish_reason"),
                headers=raw.headers,
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise malformed_error(
                self.provider, "the answer has no choices[0].message", self.settings
            ) from None


class OpenAIProvider(SDKProvider):
    """OpenAI, or any OpenAI-compatible API through `base_url`."""

    kind = "openai"
    portkey_provider = "openai"
    env_vars = ("OPENAI_API_KEY",)

    def backend(self) -> Backend:
        return OpenAIChatBackend(self.name, self.settings, base_url=self.settings.base_url)
