"""What plugin hooks and providers hand the engine, made into the engine's own types.

Hook return values may be models, dicts or shorthands; a provider's answer is checked against
its dimension's output schema (with the note that asks again when it does not match); and
exceptions raised by provider code become the engine's errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic

from ._structured import compact_schema, request_schema
from .errors import (
    ConfigurationError,
    HookResultError,
    OutputValidationError,
    ProviderError,
)
from .types import (
    Dimension,
    DimensionResult,
    ProcessResult,
    ProviderRequest,
    ProviderResponse,
    ProviderSelection,
    SectionResult,
    SkipWithResult,
)

_Model = TypeVar("_Model", ProviderRequest, ProviderResponse)
_SELECTION_FORMS = ("a ProviderSelection, a dict like {'provider': 'anthropic', 'options': "
                    "{'model': ...}} or a provider name")
_MESSAGES_FORM = "a str or a list of {'role': ..., 'content': ...} message dicts"


def as_selection(value: Any, hook: str = "select_provider",
                 dimension: str | None = None) -> ProviderSelection:
    if isinstance(value, ProviderSelection):
        return value
    if isinstance(value, str) and value:
        return ProviderSelection(provider=value)
    if isinstance(value, Mapping):
        try:
            return ProviderSelection.model_validate(value)
        except pydantic.ValidationError as exc:
            raise HookResultError(hook, f"{_returned(hook, dimension)} a dict that is not a "
                                        f"provider selection ({_problems(exc)}); it must "
                                        f"return {_SELECTION_FORMS}") from None
    raise HookResultError(hook, f"{_returned(hook, dimension)} {_shown(value)}; it must "
                                f"return {_SELECTION_FORMS}")


def as_prompt(value: Any, dimension: str) -> str | list[dict[str, Any]]:
    """What create_prompt returned, checked: the text or chat messages of one request."""
    returned = _returned("create_prompt", dimension)
    if isinstance(value, str):
        if not value.strip():
            raise HookResultError("create_prompt", f"{returned} an empty prompt; it must "
                                                   f"return {_MESSAGES_FORM}")
        return value
    if isinstance(value, (list, tuple)) and value:
        for position, message in enumerate(value):
            if not isinstance(message, Mapping) or not {"role", "content"} <= message.keys():
                raise HookResultError("create_prompt", (
                    f"{returned} a list whose item {position} is {_shown(message)}, not a "
                    f"message dict; it must return {_MESSAGES_FORM}"))
        return [dict(message) for message in value]
    hint = " (a missing `return`?)" if value is None else ""
    raise HookResultError("create_prompt", f"{returned} {_shown(value)}{hint}; it must return "
                                           f"{_MESSAGES_FORM}")


def as_request(value: Any, current: ProviderRequest) -> ProviderRequest:
    """A before_provider_execute answer: a request, or a dict of the fields it changes."""
    return _as_model("before_provider_execute", value, current)


def as_response(value: Any, current: ProviderResponse) -> ProviderResponse:
    """An after_provider_execute answer: a response, or a dict of the fields it changes."""
    return _as_model("after_provider_execute", value, current)


def _as_model(hook: str, value: Any, current: _Model) -> _Model:
    kind = type(current)
    if isinstance(value, kind):
        return value
    expected = (f"a {kind.__name__} (e.g. ctx.{_CONTEXT_FIELD[kind]}.model_copy(update={{...}}))"
                f" or a dict of some of its fields ({', '.join(kind.model_fields)})")
    if not isinstance(value, Mapping):
        raise HookResultError(hook, f"{hook} returned {_shown(value)}; it must return {expected}")
    unknown = sorted(str(key) for key in value if key not in kind.model_fields)
    if unknown:
        raise HookResultError(hook, f"{hook} returned a dict with unknown key(s) "
                                    f"{', '.join(map(repr, unknown))}; it must return {expected}")
    try:
        return kind.model_validate({**dict(current), **value})
    except pydantic.ValidationError as exc:
        raise HookResultError(hook, f"{hook} returned a dict that is not a valid "
                                    f"{kind.__name__} ({_problems(exc)})") from None


_CONTEXT_FIELD = {ProviderRequest: "request", ProviderResponse: "response"}


def _returned(hook: str, dimension: str | None) -> str:
    if dimension is None:
        return f"{hook} returned"
    return f"{hook} for dimension {dimension!r} returned"


def _shown(value: Any) -> str:
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _problems(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                     for e in exc.errors()[:5])


def unpack_request(
    value: Any, request_input: Any, options: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    if isinstance(value, ProviderRequest):
        return value.input, dict(value.options)
    if isinstance(value, Mapping):
        return value.get("input", request_input), dict(value.get("options", options))
    return value, options


def skipped(skip: Any) -> DimensionResult:
    if isinstance(skip, SkipWithResult):
        result = skip.result.model_copy(deep=True)
        result.metadata["cached"] = True
        result.metadata.setdefault("skipped", True)
        return result
    reason = skip if isinstance(skip, str) else "skipped by should_skip hook"
    return DimensionResult(data={"skipped": True, "reason": reason},
                           metadata={"skipped": True, "reason": reason, "cost": 0.0})


def validated(dimension: Dimension, data: Any) -> tuple[Any, pydantic.BaseModel | None]:
    """The answer as JSON-able data, and the output_schema instance it is the dict of (None
    when the dimension has no schema). Raises OutputValidationError when it does not fit."""
    schema = dimension.output_schema
    if schema is None:
        return data, None
    if isinstance(data, str):
        from .parsing import parse_json_lenient

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


def reask(request_input: Any, error: OutputValidationError,
          schema: type[pydantic.BaseModel] | None = None) -> Any:
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


def apply_finalized(result: ProcessResult, final: Any) -> None:
    if final is None:
        return
    if isinstance(final, list):
        result.sections = [s if isinstance(s, SectionResult) else SectionResult.model_validate(s)
                           for s in final]
    elif isinstance(final, Mapping):
        if "sections" in final:
            apply_finalized(result, list(final["sections"]))
        if "global_results" in final:
            result.global_results = dict(final["global_results"])


def as_call_error(exc: Exception, provider: str) -> Exception:
    if isinstance(exc, (ProviderError, OutputValidationError, ConfigurationError)):
        return exc
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return ProviderError(f"{provider}: {type(exc).__name__}: {exc}", provider=provider)
    return ProviderError(f"{provider}: provider raised {type(exc).__name__}: {exc}",
                         provider=provider, retryable=False)

