"""Gemini generateContent on the official `google-genai` SDK (its aiohttp transport).

The SDK is imported when the first backend is built, not with this module (see anthropic.py).
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import TYPE_CHECKING, Any

from ._http import connection_error, malformed_error, status_error
from ._sdk import Backend, Call, Completion, SDKProvider
from ._settings import Settings
from .base import ProviderError

if TYPE_CHECKING:
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types

__all__ = ["GeminiProvider"]

# Options named differently in GenerateContentConfig; other options pass through as its fields.
_CONFIG_NAMES = {"stop": "stop_sequences", "max_tokens": "max_output_tokens"}
_USER_SCHEMA_FIELDS = frozenset({"response_mime_type", "response_schema", "response_json_schema",
                                 "responseMimeType", "responseSchema", "responseJsonSchema"})
_RETRY_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


@functools.cache
def _schema_field() -> str:
    """google-genai 1.x before response_json_schema took only the OpenAPI subset, in
    response_schema."""
    from google.genai import types as genai_types

    fields = genai_types.GenerateContentConfig.model_fields
    return "response_json_schema" if "response_json_schema" in fields else "response_schema"


class GeminiBackend(Backend):
    def __init__(self, provider: str, settings: Settings) -> None:
        super().__init__(provider, settings)
        importlib.import_module("google.genai")  # the SDK now, while the engine is built

    def new_client(self) -> genai.Client:
        from google import genai
        from google.genai import types as genai_types

        return genai.Client(
            enterprise=False,
            api_key=self.settings.api_key,
            http_options=genai_types.HttpOptions(
                base_url=self.settings.base_url,
                timeout=int(self.settings.timeout * 1000),
                # One attempt: with no retry options the SDK still retries a failed
                # connection once after sleeping 1-10 s on its own.
                retry_options=genai_types.HttpRetryOptions(attempts=1),
            ),
        )

    async def close_client(self, client: genai.Client) -> None:
        await client.aio.aclose()

    async def complete(self, call: Call) -> Completion:
        import aiohttp
        from google.genai import errors as genai_errors

        config = self._config(call)
        client: genai.Client = self.client()
        try:
            response = await client.aio.models.generate_content(
                model=call.model, contents=_contents(call.messages), config=config
            )
        except genai_errors.APIError as exc:
            raise self._status_error(exc) from None
        except aiohttp.ClientError as exc:
            raise connection_error(self.provider, exc, self.settings) from None
        except ValueError as exc:  # the body of a 200 is not JSON
            raise malformed_error(self.provider, str(exc), self.settings) from None
        usage = response.usage_metadata
        candidate = response.candidates[0] if response.candidates else None
        reason = candidate.finish_reason if candidate else None
        # No text parts (a filter, or max_tokens spent on thinking) is an empty answer, which
        # the engine retries and reports as one, with the finish reason.
        text = response.text or ""
        headers = response.sdk_http_response.headers if response.sdk_http_response else None
        return Completion(
            text=text,
            model=response.model_version or call.model,
            # prompt_token_count includes the cached content's tokens.
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            # Thinking tokens are billed as output.
            output_tokens=((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0))
            if usage
            else 0,
            finish_reason=reason.value if reason is not None else None,
            headers=headers,
            cache_read_tokens=(usage.cached_content_token_count or 0) if usage else 0,
        )

    def _config(self, call: Call) -> genai_types.GenerateContentConfig:
        from google.genai import types as genai_types

        fields = {_CONFIG_NAMES.get(k, k): v for k, v in call.params.items()}
        if isinstance(fields.get("stop_sequences"), str):
            fields["stop_sequences"] = [fields["stop_sequences"]]
        if call.max_tokens is not None:
            fields.setdefault("max_output_tokens", call.max_tokens)
        if call.system is not None:
            fields["system_instruction"] = call.system
        if call.schema is not None and not _USER_SCHEMA_FIELDS & fields.keys():
            fields["response_mime_type"] = "application/json"
            fields[_schema_field()] = call.schema
        try:
            return genai_types.GenerateContentConfig(**fields)
        except ValueError as exc:
            raise ProviderError(
                f"{self.provider}: options not accepted by GenerateContentConfig: "
                f"{' '.join(str(exc).split())[:300]}",
                provider=self.provider,
                retryable=False,
            ) from None

    def _status_error(self, exc: genai_errors.APIError) -> ProviderError:
        headers = getattr(exc.response, "headers", None) or {}
        error = status_error(self.provider, exc.code, exc.details, headers, self.settings)
        if error.retry_after is None:
            error.retry_after = _retry_delay(exc.details)
        return error


def _contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Gemini contents: roles user/model, text in parts."""
    contents = []
    for message in messages:
        content = message.get("content", "")
        parts = content if isinstance(content, list) else [{"text": str(content)}]
        role = "model" if message.get("role") in ("assistant", "model") else "user"
        contents.append({"role": role, "parts": parts})
    return contents


def _retry_delay(body: Any) -> float | None:
    """Gemini says how long to wait in a RetryInfo detail ("retryDelay": "30s"), not a header."""
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and (match := _RETRY_DELAY.match(delay)):
            return float(match.group(1))
    return None


class GeminiProvider(SDKProvider):
    """Gemini through the Gemini Developer API. The key may also come from GOOGLE_API_KEY."""

    kind = "gemini"
    portkey_provider = "google"
    env_vars = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

    @classmethod
    def direct_backend(cls, name: str, settings: Settings) -> Backend:
        return GeminiBackend(name, settings)
