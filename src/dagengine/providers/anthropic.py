"""Anthropic Messages API on the official `anthropic` SDK."""

from __future__ import annotations

from typing import Any

import anthropic
from anthropic.resources.messages import AsyncMessages

from ._http import malformed_error, stainless_error
from ._sdk import Backend, Call, Completion, SDKProvider, sdk_kwargs, sdk_parameters

__all__ = ["AnthropicProvider"]

_CREATE_PARAMETERS = sdk_parameters(AsyncMessages.create)


class AnthropicBackend(Backend):
    def new_client(self) -> anthropic.AsyncAnthropic:
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
        params = dict(call.params)
        if "stop" in params:
            stop = params.pop("stop")
            params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop or ())
        kwargs: dict[str, Any] = sdk_kwargs(params, _CREATE_PARAMETERS)
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
            # Anthropic's input_tokens leaves out the cache tokens; ours counts them too.
            cache_read = int(usage.get("cache_read_input_tokens") or 0)
            cache_write = int(usage.get("cache_creation_input_tokens") or 0)
            return Completion(
                text="".join(
                    block.get("text", "")
                    for block in body["content"]
                    if block.get("type") == "text"
                ),
                model=body.get("model") or call.model,
                input_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
                output_tokens=int(usage.get("output_tokens") or 0),
                finish_reason=body.get("stop_reason"),
                headers=raw.headers,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
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
