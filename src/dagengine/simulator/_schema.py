"""Answers that fit a JSON schema a request asked for (structured output).

`fit(schema, hint)` builds a small deterministic value of the schema, taking the simulator's
useful answer (`hint`) wherever it fits: an email-classification prompt with a schema of
category/confidence/summary still gets its fitting category. Covers what models are asked
for in practice: types (also Gemini's upper-case ones and `nullable`), enum and const,
required and optional properties, nested objects, arrays with item counts, anyOf/oneOf/allOf,
`$ref` into `$defs`, number bounds and common string formats.
"""

from __future__ import annotations

from typing import Any

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00",
    "email": "simulated@example.com",
    "uri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_MAX_DEPTH = 8  # a recursive schema stops here (optional parts are left out first)


def fit(schema: dict[str, Any], hint: Any = None) -> Any:
    """A value of `schema`; `hint` where it fits."""
    return _Fitter(schema).value(schema, hint, "value", 0)


class _Fitter:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def value(self, schema: Any, hint: Any, name: str, depth: int) -> Any:
        if not isinstance(schema, dict):
            return hint if hint is not None else f"simulated {name}"
        schema = self._resolved(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return hint if hint in enum else enum[0]
        options = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(options, list) and options:
            return self._option(options, hint, name, depth)
        if isinstance(schema.get("allOf"), list):
            return self.value(_merged(schema, self._resolved), hint, name, depth)
        kind = _kind(schema, hint)
        if kind == "object":
            return self._object(schema, hint, depth)
        if kind == "array":
            return self._array(schema, hint, name, depth)
        if kind == "string":
            return _string(schema, hint, name)
        if kind in ("integer", "number"):
            return _number(schema, hint, kind == "integer")
        if kind == "boolean":
            return hint if isinstance(hint, bool) else True
        if kind == "null":
            return None
        return hint if hint is not None else f"simulated {name}"

    def _resolved(self, schema: dict[str, Any]) -> dict[str, Any]:
        for _ in range(_MAX_DEPTH):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            target: Any = self.root
            for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else ():
                target = target.get(part) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                break
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def _option(self, options: list[Any], hint: Any, name: str, depth: int) -> Any:
        usable = [self._resolved(o) for o in options if isinstance(o, dict)]
        non_null = [o for o in usable if _kind(o, None) != "null"] or usable
        if depth >= _MAX_DEPTH and len(non_null) < len(usable):
            return None  # deep in a recursive schema: end the branch where it may end
        for option in non_null:
            if hint is not None and _accepts(option, hint):
                return self.value(option, hint, name, depth)
        return self.value(non_null[0], None, name, depth) if non_null else None

    def _object(self, schema: dict[str, Any], hint: Any, depth: int) -> dict[str, Any]:
        given = hint if isinstance(hint, dict) else {}
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return dict(given)
        required = schema.get("required") or []
        out: dict[str, Any] = {}
        for key, prop in properties.items():
            wanted = key in required or (key in given and depth < _MAX_DEPTH)
            if wanted:
                out[key] = self.value(prop, given.get(key), key, depth + 1)
        return out

    def _array(self, schema: dict[str, Any], hint: Any, name: str, depth: int) -> list[Any]:
        items = schema.get("items")
        prefix = schema.get("prefixItems")
        low = int(schema.get("minItems", schema.get("min_items", 0)) or 0)
        high = schema.get("maxItems", schema.get("max_items"))
        given = list(hint) if isinstance(hint, list) else []
        count = max(low, len(given) if given else (0 if depth >= _MAX_DEPTH else 1))
        if isinstance(high, int):
            count = min(count, high)
        out = []
        for index in range(count):
            item_hint = given[index] if index < len(given) else None
            item = (prefix[index] if isinstance(prefix, list) and index < len(prefix)
                    else items)
            out.append(self.value(item, item_hint, name.removesuffix("s") or name, depth + 1))
        return out


def _kind(schema: dict[str, Any], hint: Any) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        names = [str(k).lower() for k in kind]
        matching = [k for k in names if hint is not None and _type_accepts(k, hint)]
        choices = matching or [k for k in names if k != "null"] or names
        kind = choices[0] if choices else None
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _accepts(schema: dict[str, Any], hint: Any) -> bool:
    """Whether `hint` is plausibly a value of `schema` (its type and enum; not every rule)."""
    if "const" in schema:
        return bool(hint == schema["const"])
    if isinstance(schema.get("enum"), list):
        return hint in schema["enum"]
    kind = _kind(schema, hint)
    return kind is None or _type_accepts(kind, hint)


def _type_accepts(kind: str, hint: Any) -> bool:
    if kind == "integer":
        return isinstance(hint, int) and not isinstance(hint, bool)
    if kind == "number":
        return isinstance(hint, (int, float)) and not isinstance(hint, bool)
    types: dict[str, type | tuple[type, ...]] = {
        "string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
    expected = types.get(kind)
    return expected is not None and isinstance(hint, expected)


def _merged(schema: dict[str, Any], resolve: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if isinstance(part, dict):
            part = resolve(part)
            merged.setdefault("properties", {}).update(part.get("properties") or {})
            merged["required"] = [*merged.get("required", []), *part.get("required", [])]
            for key, value in part.items():
                merged.setdefault(key, value)
    return merged


def _string(schema: dict[str, Any], hint: Any, name: str) -> str:
    text = hint if isinstance(hint, str) else _FORMATS.get(str(schema.get("format")),
                                                           f"simulated {name}")
    low = schema.get("minLength", schema.get("min_length"))
    high = schema.get("maxLength", schema.get("max_length"))
    if isinstance(low, int) and len(text) < low:
        text = text.ljust(low, "x")
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _number(schema: dict[str, Any], hint: Any, integer: bool) -> int | float:
    value: float = hint if _type_accepts("integer" if integer else "number", hint) else (
        0 if integer else 0.5)
    step = 1 if integer else 0.001
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), (int, float)):
        low = schema["exclusiveMinimum"] + step
    if isinstance(schema.get("exclusiveMaximum"), (int, float)):
        high = schema["exclusiveMaximum"] - step
    if isinstance(low, (int, float)) and value < low:
        value = low
    if isinstance(high, (int, float)) and value > high:
        value = high
    return int(value) if integer else value
