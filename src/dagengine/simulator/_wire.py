"""The three wire formats: read a request into a Prompt, write answers, errors and headers.

Each dialect only translates; what happens to a request is decided in `_core`.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._limits import LimitState


class BadRequest(Exception):
    """The request body does not follow the API's schema; answered with a 400."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the simulator needs from a request, whichever API it came through."""

    model: str
    text: str  # system prompt + every message, joined with "\n" (see prompt_key)
    last_message: str
    messages: int  # the system prompt counts as one
    max_tokens: int | None
    schema: dict[str, Any] | None = None  # the JSON schema the answer must fit (structured output)
    tool: str | None = None  # Anthropic: the tool the answer is the input of


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    input_tokens: int  # every prompt token; the cache tokens are part of them
    output_tokens: int
    hit_max_tokens: bool
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class Dialect(ABC):
    name: str
    reports_cache_writes = False  # only Anthropic's usage has a count of tokens written

    @abstractmethod
    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None: ...

    @abstractmethod
    def parse(self, body: Any, model: str | None) -> Prompt:
        """`model` comes from the URL for APIs that put it there (Gemini)."""

    @abstractmethod
    def success(self, prompt: Prompt, reply: Reply, serial: int) -> dict[str, Any]: ...

    @abstractmethod
    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]: ...

    def limit_headers(self, states: Sequence[LimitState]) -> dict[str, str]:
        return {}


class Anthropic(Dialect):
    name = "anthropic"
    reports_cache_writes = True
    _ERRORS = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        408: "timeout_error",
        429: "rate_limit_error",
        503: "overloaded_error",
        504: "timeout_error",
        529: "overloaded_error",
    }

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        # The current SDK sends its api_key as a Bearer token, older ones as x-api-key.
        return headers.get("x-api-key") or _bearer(headers)

    def parse(self, body: Any, model: str | None) -> Prompt:
        body = _object(body)
        max_tokens = _positive_int(body.get("max_tokens"), "max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        messages = _messages(body)
        texts = [_blocks_text(m.get("content"), "messages.content") for m in messages]
        system = body.get("system")
        if system:
            texts.insert(0, _blocks_text(system, "system"))
        tool, schema = _forced_tool(body.get("tools"), body.get("tool_choice"))
        return _prompt(_model(body), texts, max_tokens, schema, tool)

    def success(self, prompt: Prompt, reply: Reply, serial: int) -> dict[str, Any]:
        if prompt.tool is not None:
            content = [{"type": "tool_use", "id": f"toolu_sim{serial:020d}",
                        "name": prompt.tool, "input": _tool_input(reply.text)}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": reply.text}]
            stop = "end_turn"
        return {
            "id": f"msg_sim{serial:020d}",
            "type": "message",
            "role": "assistant",
            "model": prompt.model,
            "content": content,
            "stop_reason": "max_tokens" if reply.hit_max_tokens else stop,
            "stop_sequence": None,
            "usage": _anthropic_usage(reply),
        }

    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        kind = self._ERRORS.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def limit_headers(self, states: Sequence[LimitState]) -> dict[str, str]:
        headers = {}
        for state in states:
            prefix = f"anthropic-ratelimit-{state.kind}"
            headers[f"{prefix}-limit"] = _number(state.per_minute)
            headers[f"{prefix}-remaining"] = str(state.remaining)
            headers[f"{prefix}-reset"] = _rfc3339(time.time() + state.reset_seconds)
        return headers


class OpenAI(Dialect):
    name = "openai"
    _ERRORS = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return _bearer(headers)

    def parse(self, body: Any, model: str | None) -> Prompt:
        body = _object(body)
        max_tokens = _positive_int(body.get("max_completion_tokens"), "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _positive_int(body.get("max_tokens"), "max_tokens")
        texts = [_blocks_text(m.get("content"), "messages.content") for m in _messages(body)]
        return _prompt(_model(body), texts, max_tokens, _response_format_schema(body))

    def success(self, prompt: Prompt, reply: Reply, serial: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-sim{serial:020d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": prompt.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if reply.hit_max_tokens else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.input_tokens + reply.output_tokens,
                "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens},
            },
            "system_fingerprint": "dagengine-simulator",
        }

    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        kind, code = self._ERRORS.get(status, ("server_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def limit_headers(self, states: Sequence[LimitState]) -> dict[str, str]:
        headers = {}
        for state in states:
            headers[f"x-ratelimit-limit-{state.kind}"] = _number(state.per_minute)
            headers[f"x-ratelimit-remaining-{state.kind}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{state.kind}"] = _duration(state.reset_seconds)
        return headers


class Gemini(Dialect):
    name = "gemini"
    _STATUSES = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        408: "DEADLINE_EXCEEDED",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        504: "DEADLINE_EXCEEDED",
    }

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-goog-api-key") or query.get("key")

    def parse(self, body: Any, model: str | None) -> Prompt:
        body = _object(body)
        contents = body.get("contents")
        if isinstance(contents, dict):
            contents = [contents]
        if not isinstance(contents, list) or not contents:
            raise BadRequest("contents: must be a non-empty list")
        texts = [_parts_text(c, "contents") for c in contents]
        system = body.get("systemInstruction", body.get("system_instruction"))
        if system:
            texts.insert(0, system if isinstance(system, str) else _parts_text(system, "system"))
        config = body.get("generationConfig", body.get("generation_config")) or {}
        if not isinstance(config, dict):
            raise BadRequest("generationConfig: must be an object")
        limit = config.get("maxOutputTokens", config.get("max_output_tokens"))
        name = (model or "").removeprefix("models/")
        return _prompt(name, texts, _positive_int(limit, "generationConfig.maxOutputTokens"),
                       _response_schema(config))

    def success(self, prompt: Prompt, reply: Reply, serial: int) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": reply.text}]},
                    "finishReason": "MAX_TOKENS" if reply.hit_max_tokens else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": _gemini_usage(reply),
            "modelVersion": prompt.model,
            "responseId": f"sim{serial:020d}",
        }

    def error(self, status: int, message: str, retry_after: float | None) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": self._STATUSES.get(status, "UNAVAILABLE"),
        }
        if retry_after is not None:
            # Google puts the wait in a RetryInfo detail rather than in headers.
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:.3f}".rstrip("0").rstrip(".") + "s",
                }
            ]
        return {"error": error}


DIALECTS: dict[str, Dialect] = {d.name: d for d in (Anthropic(), OpenAI(), Gemini())}


def _anthropic_usage(reply: Reply) -> dict[str, int]:
    """Anthropic counts cache reads and writes apart from input_tokens, not within them."""
    usage = {
        "input_tokens": reply.input_tokens - reply.cache_read_tokens - reply.cache_write_tokens,
        "output_tokens": reply.output_tokens,
    }
    if reply.cache_read_tokens or reply.cache_write_tokens:
        usage["cache_creation_input_tokens"] = reply.cache_write_tokens
        usage["cache_read_input_tokens"] = reply.cache_read_tokens
    return usage


def _gemini_usage(reply: Reply) -> dict[str, int]:
    """promptTokenCount includes the cached content's tokens, which Gemini names apart."""
    usage = {
        "promptTokenCount": reply.input_tokens,
        "candidatesTokenCount": reply.output_tokens,
        "totalTokenCount": reply.input_tokens + reply.output_tokens,
    }
    if reply.cache_read_tokens:
        usage["cachedContentTokenCount"] = reply.cache_read_tokens
    return usage


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if body.get("stream"):
        raise BadRequest("stream=true is not simulated; send the request without streaming")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required (a non-empty string)")
    return model


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty list")
    if not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: every message must be an object")
    return messages


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{name}: must be a positive integer, got {value!r}")
    return value


def _blocks_text(content: Any, where: str) -> str:
    """Text of a str or of a list of content blocks / parts (non-text blocks are skipped)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "\n".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    raise BadRequest(f"{where}: must be a string or a list of content blocks")


def _parts_text(content: Any, where: str) -> str:
    if not isinstance(content, dict):
        raise BadRequest(f"{where}: every item must be an object with parts")
    return _blocks_text(content.get("parts"), f"{where}.parts")


def _prompt(
    model: str,
    texts: list[str],
    max_tokens: int | None,
    schema: dict[str, Any] | None = None,
    tool: str | None = None,
) -> Prompt:
    return Prompt(
        model=model,
        text="\n".join(texts),
        last_message=texts[-1],
        messages=len(texts),
        max_tokens=max_tokens,
        schema=schema,
        tool=tool,
    )


# --- structured output ----------------------------------------------------------------------


def _forced_tool(tools: Any, choice: Any) -> tuple[str | None, dict[str, Any] | None]:
    """Anthropic: the tool the model must call (tool_choice "tool" or "any") and its schema."""
    if tools is None:
        return None, None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise BadRequest("tools: must be a list of tool objects")
    for index, tool in enumerate(tools):
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise BadRequest(f"tools.{index}.name: Field required")
        schema = tool.get("input_schema")
        if "type" not in tool and (not isinstance(schema, dict) or schema.get("type") != "object"):
            raise BadRequest(f"tools.{index}.input_schema: must be a JSON schema of type object")
    if not isinstance(choice, dict) or choice.get("type") not in ("tool", "any") or not tools:
        return None, None  # "auto" and "none": the simulated model answers in text
    name = choice.get("name") if choice["type"] == "tool" else tools[0]["name"]
    for tool in tools:
        if tool["name"] == name:
            schema = tool.get("input_schema")
            return name, schema if isinstance(schema, dict) else None
    raise BadRequest(f"tool_choice.name: no tool named {name!r} in tools")


def _tool_input(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}  # cut off by max_tokens: what a real model's unfinished tool call parses to


def _response_format_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI: the schema of response_format {"type": "json_schema", ...}; strict is checked."""
    spec = body.get("response_format")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") not in ("text", "json_object", "json_schema"):
        raise BadRequest("response_format: type must be one of text, json_object, json_schema")
    if spec["type"] != "json_schema":
        return None
    details = spec.get("json_schema")
    if not isinstance(details, dict) or not isinstance(details.get("name"), str):
        raise BadRequest("response_format.json_schema.name: Field required")
    schema = details.get("schema")
    if not isinstance(schema, dict):
        raise BadRequest("response_format.json_schema.schema: must be a JSON schema object")
    if details.get("strict") and (problem := _strict_problem(schema, ())):
        raise BadRequest(f"Invalid schema for response_format {details['name']!r}: {problem}")
    return schema


def _strict_problem(schema: Any, where: tuple[str, ...]) -> str | None:
    """What OpenAI's strict mode refuses in the schema: objects that allow extra keys or leave
    a property optional."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            if problem := _strict_problem(item, (*where, str(index))):
                return problem
        return None
    if not isinstance(schema, dict):
        return None
    context = f"In context=({', '.join(repr(w) for w in where)})"
    properties = schema.get("properties")
    if schema.get("type") == "object" or isinstance(properties, dict):
        if schema.get("additionalProperties") is not False:
            return f"{context}, 'additionalProperties' is required to be supplied and to be false."
        missing = [k for k in properties or {} if k not in (schema.get("required") or ())]
        if missing:
            return (f"{context}, 'required' is required to be supplied and to be an array "
                    f"including every key in properties. Missing '{missing[0]}'.")
    for key in ("properties", "$defs"):
        for name, sub in (schema.get(key) or {}).items():
            if problem := _strict_problem(sub, (*where, key, name)):
                return problem
    for key in ("items", "anyOf", "allOf"):
        if key in schema and (problem := _strict_problem(schema[key], (*where, key))):
            return problem
    return None


def _response_schema(config: dict[str, Any]) -> dict[str, Any] | None:
    """Gemini: responseJsonSchema (JSON schema) or responseSchema (its OpenAPI subset)."""
    json_schema = _config_value(config, "responseJsonSchema", "response_json_schema")
    openapi = _config_value(config, "responseSchema", "response_schema")
    if json_schema is not None and openapi is not None:
        raise BadRequest(
            "generationConfig: responseSchema and responseJsonSchema cannot both be set"
        )
    schema = json_schema if json_schema is not None else openapi
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise BadRequest("generationConfig.responseSchema: must be a schema object")
    mime = _config_value(config, "responseMimeType", "response_mime_type")
    if mime != "application/json":
        raise BadRequest("generationConfig.responseMimeType: must be application/json when a "
                         f"response schema is set, got {mime!r}")
    return schema


def _config_value(config: dict[str, Any], camel: str, snake: str) -> Any:
    return config.get(camel, config.get(snake))


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[7:] if value[:7].lower() == "bearer " else None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _rfc3339(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"
