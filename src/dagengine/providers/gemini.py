"""Gemini generateContent, over plain HTTP (the default) or on the official `google-genai`
SDK (its aiohttp transport).

The SDK is imported when the first SDK backend is built, not with this module (see
anthropic.py).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from ._http import connection_error, malformed_error, status_error
from ._sdk import Backend, Call, Completion, SDKProvider
from ._settings import Settings
from ._transport import HTTPBackend
from .base import ProviderError

if TYPE_CHECKING:
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types

__all__ = ["GeminiHTTPBackend", "GeminiProvider"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

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
        _schema_field()  # imports the SDK now, while the engine is built

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

    @staticmethod
    async def close_client(client: genai.Client) -> None:
        await client.aio.aclose()

    async def complete(self, call: Call) -> Completion:
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
        return sdk_completion(response, call)

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


def sdk_completion(response: genai_types.GenerateContentResponse, call: Call) -> Completion:
    """The Completion of a GenerateContentResponse as the SDK gives it (online, or an item
    of a batch)."""
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


class GeminiHTTPBackend(HTTPBackend):
    """POST {base_url}/v1beta/models/{model}:generateContent with x-goog-api-key, no SDK.

    Options are GenerateContentConfig's fields (snake_case, or camelCase as the SDK also takes
    them), checked by name only: the API checks their values.
    """

    def __init__(self, provider: str, settings: Settings) -> None:
        base_url = (settings.base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL")
                    or DEFAULT_BASE_URL)
        super().__init__(provider, settings, base_url=base_url,
                         headers={"x-goog-api-key": settings.api_key.strip()})

    async def complete(self, call: Call) -> Completion:
        model = call.model if "/" in call.model else f"models/{call.model}"
        answer, headers = await self.post(f"/v1beta/{model}:generateContent", self._body(call))
        return self._completion(answer, headers, call)

    def _body(self, call: Call) -> dict[str, Any]:
        fields = self._fields(call.params)
        if isinstance(fields.get("stop_sequences"), str):
            fields["stop_sequences"] = [fields["stop_sequences"]]
        if call.max_tokens is not None:
            fields.setdefault("max_output_tokens", call.max_tokens)
        if call.system is not None:
            fields["system_instruction"] = call.system
        if call.schema is not None and not _USER_SCHEMA_FIELDS & fields.keys():
            fields["response_mime_type"] = "application/json"
            fields["response_json_schema"] = call.schema
        body: dict[str, Any] = {"contents": _contents(call.messages)}
        generation: dict[str, Any] = {}
        for name, value in fields.items():
            if value is None or name in _SDK_ONLY_FIELDS:
                continue
            if name == "system_instruction":
                body["systemInstruction"] = _system_content(value)
            elif name in _REQUEST_FIELDS:
                body[_camel(name)] = value
            else:
                generation[_camel(name)] = value
        if generation:
            body["generationConfig"] = generation
        return body

    def _fields(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The options by their GenerateContentConfig field names; unknown ones refused, as
        GenerateContentConfig(**options) refuses them on the SDK transport."""
        fields: dict[str, Any] = {}
        unknown = []
        for key, value in params.items():
            name = _CONFIG_NAMES.get(key, key)
            name = name if name in CONFIG_FIELDS else _FIELDS_BY_ALIAS.get(name, "")
            if not name or name in _VERTEX_ONLY_FIELDS:
                unknown.append(key)
            else:
                fields[name] = value
        if unknown:
            raise ProviderError(
                f"{self.provider}: options not accepted by GenerateContentConfig (or not by the "
                f"Gemini Developer API): {', '.join(map(repr, unknown))}",
                provider=self.provider, retryable=False)
        return fields

    def _completion(self, body: Any, headers: Mapping[str, str], call: Call) -> Completion:
        try:
            candidates = body.get("candidates") or ()
            candidate = candidates[0] if candidates else {}
            parts = (candidate.get("content") or {}).get("parts") or ()
            usage = body.get("usageMetadata") or {}
            return Completion(
                # Thought summaries are not the answer; no text parts make an empty answer.
                text="".join(part["text"] for part in parts if isinstance(part.get("text"), str)
                             and part.get("thought") is not True),
                model=body.get("modelVersion") or call.model,
                input_tokens=int(usage.get("promptTokenCount") or 0),
                output_tokens=int(usage.get("candidatesTokenCount") or 0)
                + int(usage.get("thoughtsTokenCount") or 0),
                finish_reason=candidate.get("finishReason"),
                headers=headers,
                cache_read_tokens=int(usage.get("cachedContentTokenCount") or 0),
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise malformed_error(
                self.provider, "the answer has no candidates list", self.settings
            ) from None

    def status_error(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        error = super().status_error(status, body, headers)
        if error.retry_after is None:
            error.retry_after = _retry_delay(body)
        return error


# GenerateContentConfig's fields (google-genai 3.6): the http transport takes the same
# options without importing the SDK. tests/test_http_transport.py checks them against the SDK.
CONFIG_FIELDS = frozenset({
    "audio_timestamp", "audio_transcription_config", "automatic_continuation",
    "automatic_function_calling", "cached_content", "candidate_count", "continuation_token",
    "enable_enhanced_civic_answers", "frequency_penalty", "generation_output_config",
    "http_options", "image_config", "labels", "logprobs", "max_output_tokens",
    "media_resolution", "model_armor_config", "model_selection_config", "presence_penalty",
    "response_json_schema", "response_logprobs", "response_mime_type", "response_modalities",
    "response_schema", "routing_config", "safety_settings", "seed", "service_tier",
    "should_return_http_response", "speech_config", "stop_sequences", "store",
    "system_instruction", "temperature", "thinking_config", "tool_config", "tools", "top_k",
    "top_p",
})
_CAMEL_PART = re.compile(r"_([a-z0-9])")
# GenerateContentConfig's fields that the request takes beside generationConfig, not in it.
_REQUEST_FIELDS = frozenset({"safety_settings", "tools", "tool_config", "labels",
                             "cached_content", "service_tier", "continuation_token", "store"})
# Fields that steer the SDK itself and are never sent.
_SDK_ONLY_FIELDS = frozenset({"http_options", "automatic_function_calling",
                              "automatic_continuation", "should_return_http_response"})
# Fields the SDK refuses for the Gemini Developer API (Vertex AI only).
_VERTEX_ONLY_FIELDS = frozenset({"audio_timestamp", "model_armor_config",
                                 "generation_output_config"})


def _camel(name: str) -> str:
    return _CAMEL_PART.sub(lambda match: match.group(1).upper(), name)


_FIELDS_BY_ALIAS = {_camel(name): name for name in CONFIG_FIELDS}


def _system_content(value: Any) -> Any:
    """The system instruction as the Content the SDK makes of it: a string is one text part."""
    if isinstance(value, str):
        return {"role": "user", "parts": [{"text": value}]}
    return value


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
    batch_api_class = "dagengine.providers._batch_gemini:GeminiBatchAPI"

    @classmethod
    def direct_backend(cls, name: str, settings: Settings) -> Backend:
        if settings.transport == "sdk":
            return GeminiBackend(name, settings)
        return GeminiHTTPBackend(name, settings)
