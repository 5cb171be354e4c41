"""From a model's answer to a result's data: lenient JSON, the output schema, the re-ask.

Models wrap JSON in code fences, put prose around it, leave trailing commas, quote with
single quotes or stop mid-object. `parse_json_lenient` accepts all of that; it raises
`OutputValidationError` only when there is no JSON in the text or what is there is too broken
to mean anything, so that the engine can ask again. `validated` fits an answer to its
dimension's `output_schema`, and `reask` is the request again with what was wrong with it.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import json_repair
import orjson
import pydantic

from ._structured import compact_schema, request_schema
from .errors import OutputValidationError
from .types import Dimension, DimensionResult, Prompt

__all__ = ["looks_like_json", "parse_answer", "parse_json_lenient", "reask", "validated",
           "with_parsed"]

_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
# Where an object or array plausibly starts: `{` before a key or `}`, `[` before a value or `]`.
# A brace followed by prose ("{ see below }") is not a start; a text opening with one is.
_JSON_START = re.compile(
    r"""\{\s*(?:["'}]|[A-Za-z_$][\w$-]*\s*:)|\[\s*(?:["'{\[\]\-\d]|true\b|false\b|null\b)"""
)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
# A repair that keeps less than this share of the letters and digits threw the content away.
_MIN_KEPT = 0.5
_PREVIEW = 60


def parse_json_lenient(text: str) -> Any:
    """The JSON value in `text`: strict JSON, fenced, inside prose, or slightly damaged.

    Raises OutputValidationError when the text holds no JSON object or array, or when the
    JSON it holds cannot be repaired without losing most of it.
    """
    stripped = text.strip()
    try:  # the usual answer, five times faster than json's; json's reads what orjson refuses
        return orjson.loads(stripped)  # (NaN, integers past 64 bits, lone surrogates)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    body = _unfenced(stripped)
    start = _json_start(body)
    if start is None:
        raise OutputValidationError(f"no JSON object or array in the answer: {_preview(text)}")
    try:
        return _DECODER.raw_decode(body, start)[0]
    except ValueError:
        return _repaired(_candidate(body, start), text)


def looks_like_json(text: str) -> bool:
    """True when the text starts, or somewhere holds, what looks like a JSON object or array."""
    return _json_start(_unfenced(text.strip())) is not None


def parse_answer(text: str) -> Any:
    """The JSON value in a model's answer, or the text itself when the answer holds no JSON.

    Raises OutputValidationError when the answer meant to be JSON but cannot be parsed.
    """
    if "{" not in text and "[" not in text:
        return text
    try:
        return parse_json_lenient(text)
    except OutputValidationError:
        if looks_like_json(text):
            raise
        return text


def _unfenced(text: str) -> str:
    if "```" not in text:
        return text
    for match in _FENCE.finditer(text):
        inner = match.group(1).strip()
        if "{" in inner or "[" in inner:
            return inner
    return text


def _json_start(text: str) -> int | None:
    if text[:1] in ("{", "["):
        return 0
    match = _JSON_START.search(text)
    return match.start() if match else None


def _candidate(text: str, start: int) -> str:
    """From the opener to its last possible closer (or to the end when it was cut off)."""
    end = text.rfind("}" if text[start] == "{" else "]")
    return text[start : end + 1] if end > start else text[start:]


def _repaired(candidate: str, text: str) -> Any:
    result = json_repair.repair_json(candidate, return_objects=True)
    expected = dict if candidate[0] == "{" else list
    if not isinstance(result, expected):
        raise OutputValidationError(f"could not parse JSON in the answer: {_preview(text)}")
    kept = _letters(json.dumps(result, ensure_ascii=False, default=str))
    total = _letters(_COMMENT.sub("", candidate))  # comments are meant to be dropped
    emptied = not result and "".join(candidate.split()) not in ("{}", "[]")
    # An empty key the text never wrote is where the repair swallowed something unreadable.
    invented_key = isinstance(result, dict) and "" in result and '""' not in candidate
    if emptied or invented_key or kept < total * _MIN_KEPT:
        raise OutputValidationError(
            f"could not parse JSON in the answer (too damaged to repair): {_preview(text)}"
        )
    return result


def _letters(text: str) -> int:
    return sum(1 for char in text if char.isalnum())


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "...")


def validated(dimension: Dimension, data: Any) -> tuple[Any, pydantic.BaseModel | None]:
    """The answer as JSON-able data, and the output_schema instance it is the dict of (None
    when the dimension has no schema). Raises OutputValidationError when it does not fit."""
    schema = dimension.output_schema
    if schema is None:
        return data, None
    if isinstance(data, str):
        data = parse_json_lenient(data)
    try:
        instance = schema.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
        raise OutputValidationError(
            f"answer does not match {schema.__name__}: {problems}"
        ) from None
    return instance.model_dump(mode="json"), instance


def with_parsed(dimension: Dimension, result: DimensionResult) -> DimensionResult:
    """`result` with `parsed` rebuilt from its data when the dimension has a schema the data
    fits: for results that did not come from a validated answer (the store on resume, a skip
    hook's result, handle_dimension_failure, an after_provider_execute hook's new data)."""
    schema = dimension.output_schema
    if schema is None or result.parsed is not None or result.error is not None:
        return result
    if result.data is not None:
        with contextlib.suppress(pydantic.ValidationError):
            result.parsed = schema.model_validate(result.data)
    return result


_REJECTED = "\n\nYour previous answer was rejected:"


def reask(request_input: Prompt, error: OutputValidationError,
          schema: type[pydantic.BaseModel] | None = None) -> Prompt:
    """The request again, with the validation error and the schema the answer must fit."""
    json_schema = request_schema(schema) if schema is not None else None
    if json_schema is None:
        wanted = "Reply again with only a JSON object that matches the requested fields."
    else:
        wanted = ("Reply again with only a JSON object that matches this JSON schema: "
                  + compact_schema(json_schema))
    note = f"{_REJECTED} {error}. {wanted}"
    if isinstance(request_input, str):
        return request_input.split(_REJECTED)[0] + note
    messages = [dict(m) for m in request_input]
    return [*messages, {"role": "user", "content": note.strip()}]
