"""What plugin hooks and providers hand the engine, made into the engine's own types.

Hook return values may be models, dicts or shorthands; a provider's answer is checked against
its dimension's output schema (with the note that asks again when it does not match); and
exceptions raised by plugin or provider code become the engine's errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pydantic

from ._structured import compact_schema, request_schema
from .errors import (
    ConfigurationError,
    DagEngineError,
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


def as_selection(value: Any) -> ProviderSelection:
    if isinstance(value, ProviderSelection):
        return value
    if isinstance(value, str):
        return ProviderSelection(provider=value)
    if isinstance(value, Mapping):
        return ProviderSelection.model_validate(value)
    raise ConfigurationError(
        "select_provider must return a ProviderSelection, a dict like "
        f"{{'provider': 'anthropic', 'options': {{...}}}} or a provider name; "
        f"got {type(value).__name__}"
    )


def as_request(value: Any) -> ProviderRequest:
    return value if isinstance(value, ProviderRequest) else ProviderRequest.model_validate(value)


def as_response(value: Any) -> ProviderResponse:
    return value if isinstance(value, ProviderResponse) else ProviderResponse.model_validate(value)


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


def plugin_error(exc: Exception) -> DagEngineError:
    if isinstance(exc, DagEngineError):
        return exc
    where = exc.__traceback__
    while where is not None and where.tb_next is not None:
        where = where.tb_next
    hook = where.tb_frame.f_code.co_name if where is not None else "plugin"
    return ConfigurationError(f"{hook} raised {type(exc).__name__}: {exc}")
