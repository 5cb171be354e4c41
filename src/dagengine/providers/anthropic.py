"""Anthropic Messages API on the official `anthropic` SDK.

The SDK is imported when the first backend is built, not with this module: it takes seconds,
and a provider in gateway mode speaks the OpenAI format and never needs it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ._http import malformed_error, stainless_error
from ._sdk import Backend, Call, Completion, SDKProvider, sdk_kwargs, sdk_parameters
from ._settings import Settings

if TYPE_CHECKING:
    import anthropic

__all__ = ["AnthropicProvider"]


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

        return anthropic.AsyncAnthropic(
            api_key=self.settings.api_key,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            max_retries=0,
            open_telemetry=False,
            http_client=anthropic.DefaultAioHttpClient(),
        )

    async def close_client(self, client: anthropic.AsyncAnthropic) -> None:
        await client.close()

    async def complete(self, call: Call) -> Completion:
        import anthropic

        params = dict(call.params)
        if "stop" in params:
            stop = params.pop("stop")
            params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop or ())
        kwargs: dict[str, Any] = sdk_kwargs(params, _create_parameters())
        kwargs.update(model=call.model, messages=call.messages, max_tokens=call.max_tokens)
        if call.system is not None:
            kwargs["system"] = call.system
        client: anthropic.AsyncAnthropic = self.client()
        try:
            raw = await client.messages.with_raw_response.create(**kwargs)
            body = await raw.json()
        except (anthropic.AnthropicError, ValueError) as exc:
            if (error := stainless_error(self.provider, exc, anthropic, self.settings)) is None:
                raise
            raise error from None
        try:
            usage = body.get("usage") or {}
            return Completion(
                text="".join(
                    block.get("text", "")
                    for block in body["content"]
                    if block.get("type") == "text"
                ),
                model=body.get("model") or call.model,
                # Cached prompt tokens are input tokens too, reported apart by the API.
                input_tokens=int(usage.get("input_tokens") or 0)
                + int(usage.get("cache_creation_input_tokens") or 0)
                + int(usage.get("cache_read_input_tokens") or 0),
                output_tokens=int(usage.get("output_tokens") or 0),
                finish_reason=body.get("stop_reason"),
                headers=raw.headers,
            )
        except (KeyError, TypeError, AttributeError, ValueError):
            raise malformed_error(
                self.provider, "the answer has no content list", self.settings
            ) from None


class AnthropicProvider(SDKProvider):
    """Claude through the Messages API. `max_tokens` defaults to 1024 (the API needs one)."""

    kind = "anthropic"
    portkey_provider = "anthropic"
    env_vars = ("ANTHROPIC_API_KEY",)
    default_max_tokens = 1024

    def backend(self) -> Backend:
        return AnthropicBackend(self.name, self.settings)
