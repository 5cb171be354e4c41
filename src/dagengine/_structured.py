"""Structured output: the JSON schema of a dimension's `output_schema`, as providers take it.

The engine sends `request_schema(model)` with each call (`ProviderRequest.output_schema`); the
built-in providers turn it into their native form (OpenAI `response_format` json_schema, an
Anthropic tool, Gemini `response_json_schema`), and a re-ask quotes `compact_schema` of it.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from typing import Any

import pydantic

__all__ = ["compact_schema", "request_schema", "schema_name", "strict_schema"]

_REF_PREFIX = "#/$defs/"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
# Keywords whose value is a schema, or a list or map of schemas; every other keyword's value is
# data (enum, const, default, required, ...) and is never read as a schema.
_SCHEMA_VALUED = frozenset({"items", "additionalProperties", "not", "contains"})
_SCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})
_SCHEMA_MAPS = frozenset({"properties", "$defs", "patternProperties"})
# The keywords OpenAI's strict mode documents; a schema using others is sent non-strict.
_STRICT_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "anyOf", "$defs", "$ref",
    "enum", "const", "title", "description", "default", "pattern", "format", "multipleOf",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
})


def request_schema(model: type[pydantic.BaseModel]) -> dict[str, Any] | None:
    """The model's JSON schema with `$defs` references inlined (left as they are when the model
    is recursive); None when pydantic cannot write one (arbitrary types). A fresh copy for each
    request: hooks may change it."""
    schema = _request_schema(model)
    return None if schema is None else copy.deepcopy(schema)


@functools.lru_cache(maxsize=256)
def _request_schema(model: type[pydantic.BaseModel]) -> dict[str, Any] | None:
    try:
        schema = model.model_json_schema()
    except pydantic.PydanticUserError:
        return None
    return _inlined(schema)


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    # OpenAI strict mode and Gemini accept no keyword beside a `$ref` (pydantic writes a field's
    # description there), and some gateways resolve no references: an inlined schema suits all.
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema

    def walk(node: Any, expanding: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(item, expanding) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            name = ref.removeprefix(_REF_PREFIX)
            if name in expanding or name not in defs:
                raise _Recursive
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return {**walk(defs[name], expanding | {name}), **walk(siblings, expanding)}
        return {key: _walk_keyword(key, value, lambda n: walk(n, expanding))
                for key, value in node.items()}

    try:
        inlined: dict[str, Any] = walk({k: v for k, v in schema.items() if k != "$defs"},
                                       frozenset())
    except _Recursive:
        return schema
    return inlined


class _Recursive(Exception):
    pass


def _walk_keyword(key: str, value: Any, walk: Callable[[Any], Any]) -> Any:
    if key in _SCHEMA_MAPS and isinstance(value, dict):
        return {name: walk(sub) for name, sub in value.items()}
    if key in _SCHEMA_LISTS and isinstance(value, list):
        return [walk(sub) for sub in value]
    if key in _SCHEMA_VALUED and isinstance(value, dict):
        return walk(value)
    return value


def schema_name(schema: dict[str, Any]) -> str:
    """A name OpenAI (json_schema.name) and Anthropic (tool name) both accept, from the title."""
    title = schema.get("title")
    name = _NAME_CHARS.sub("_", title if isinstance(title, str) else "").strip("_")[:64]
    return name or "answer"


def compact_schema(schema: dict[str, Any]) -> str:
    """The schema as one line of JSON without titles, to quote in a prompt."""

    def untitled(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        return {key: _walk_keyword(key, value, untitled)
                for key, value in node.items() if key != "title"}

    return json.dumps(untitled(schema), separators=(",", ":"), ensure_ascii=False)


def strict_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The schema in the form OpenAI's strict mode accepts, or None when it has no such form.

    Strict mode needs `additionalProperties: false` on every object and every property
    required. Forbidding extra keys is added (pydantic ignores them anyway); an optional field
    becomes required only when it may be null and defaults to None, so that the model's null
    means what leaving it out meant. Any other optional field, an object that allows extra
    keys (a `dict[str, X]` field), or a keyword strict mode does not document (minLength,
    uniqueItems, ...) leaves the schema non-strict: sent as is, followed as a hint.
    """
    try:
        strict: dict[str, Any] = _strict(schema)
    except _NotStrict:
        return None
    return strict


class _NotStrict(Exception):
    pass


def _strict(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if not _STRICT_KEYWORDS.issuperset(node):
        raise _NotStrict
    out = {key: _walk_keyword(key, value, _strict) for key, value in node.items()}
    if out.get("type") != "object" and "properties" not in out:
        return out
    if out.get("additionalProperties", False) is not False:
        raise _NotStrict
    out["additionalProperties"] = False
    properties: dict[str, Any] = out.get("properties") or {}
    required = set(out.get("required") or ())
    for name, prop in properties.items():
        if name in required:
            continue
        if not (isinstance(prop, dict) and "default" in prop and prop["default"] is None
                and _nullable(prop)):
            raise _NotStrict
        properties[name] = {k: v for k, v in prop.items() if k != "default"}
    out["required"] = list(properties)
    return out


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(isinstance(s, dict) and _nullable(s) for s in schema.get("anyOf") or ())
