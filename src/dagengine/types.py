"""The data model. Everything here is plain data that converts to JSON with `to_dict()`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
)

from .errors import HookResultError, ValidationError


class _Data(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, validate_assignment=False)

    def to_dict(self) -> dict[str, Any]:
        """This object as JSON-compatible Python data."""
        return self.model_dump(mode="json", warnings=False)


class Section(_Data):
    """One input item: the text to analyse and free-form metadata."""

    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)


SectionLike = Section | str | dict[str, Any]

_SECTION_FORMS = "a Section, a str, or a mapping {'content': ..., 'metadata': {...}}"


def to_sections(value: Any, where: str = "sections") -> list[Section]:
    """The sections of a list (or any iterable) of Section, str or {"content", "metadata"}.

    `where` names the value in errors: "sections", or the hook that returned it. A single
    str, bytes, Section or mapping is refused: iterating it would make one section per
    character, byte, field or key, and pay a call for each.
    """
    check_sections_value(value, where)
    return [to_section(item, f"{where}[{index}]") for index, item in enumerate(value)]


def check_sections_value(value: Any, where: str = "sections") -> None:
    """Raise ValidationError unless `value` is an iterable that may hold sections."""
    if isinstance(value, (str, bytes, bytearray, Section, Mapping)) or value is None:
        raise ValidationError(where, f"a list of sections, e.g. [{_one_section(value)}]",
                              value, shown=_described(value))
    if not isinstance(value, Iterable):
        raise ValidationError(where, f"a list of sections ({_SECTION_FORMS} each)", value,
                              shown=_described(value))


def to_section(item: Any, where: str = "section") -> Section:
    """Accept a Section, a plain string or a {"content", "metadata"} mapping."""
    if isinstance(item, Section):
        return item
    if isinstance(item, str):
        return Section(content=item)
    if isinstance(item, Mapping) and "content" in item:
        content, metadata = item["content"], item.get("metadata") or {}
        if content is None:
            raise ValidationError(f"{where}['content']", "the section's text", content)
        if not isinstance(metadata, Mapping):
            raise ValidationError(f"{where}['metadata']", "a dict", metadata,
                                  shown=_described(metadata))
        return Section(content=str(content), metadata=dict(metadata))
    if isinstance(item, Mapping):
        shown = f"a mapping without a 'content' key (keys: {sorted(map(str, item))})"
    elif isinstance(item, (bytes, bytearray)):
        shown = f"{_described(item)}; decode it first, e.g. data.decode()"
    else:
        shown = _described(item)
    raise ValidationError(where, _SECTION_FORMS, item, shown=shown)


def _expected(problem: Mapping[str, Any]) -> str:
    message = str(problem["msg"])
    # pydantic says "Input should be 'section' or 'global'": keep what it expects.
    for prefix in ("Input should be ", "Value error, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return "given" if problem["type"] == "missing" else message


def _one_section(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"{_short(bytes(value))}.decode()"
    return "'some text'" if value is None else _short(value)


def _described(value: Any) -> str:
    shown, kind = _short(value), type(value).__name__
    return shown if value is None or shown.startswith(kind) else f"{kind} {shown}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:45]}...{text[-10:]}"


TransformFn = Callable[..., "list[Section] | Awaitable[list[Section]]"]


class Dimension(_Data):
    """One analysis. `scope="global"` runs once over all sections instead of per section."""

    name: str
    scope: Literal["section", "global"] = "section"
    transform: Callable[..., Any] | None = Field(default=None, exclude=True)
    output_schema: type[BaseModel] | None = Field(default=None, exclude=True)
    mode: Literal["online", "batch"] | None = None
    """None: the run's `ExecutionConfig.mode`; "online" or "batch" for this dimension."""

    def __init__(self, name: str | None = None, /, **fields: Any) -> None:
        # `Dimension("summary", scope="global")` as well as `Dimension(name="summary")`.
        if name is not None:
            fields["name"] = name
        try:
            super().__init__(**fields)
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "name"
            label = f"Dimension({fields['name']!r})" if "name" in fields else "Dimension"
            raise ValidationError(f"{label}.{where}", _expected(problem), problem.get("input"),
                                  shown=None if problem["type"] != "missing" else "nothing"
                                  ) from None

    @property
    def is_global(self) -> bool:
        return self.scope == "global"


class TokenUsage(_Data):
    """Tokens of one call (or a sum of calls).

    `input_tokens` counts every prompt token, cached or not (as OpenAI's and Gemini's
    `prompt_tokens` and the OpenTelemetry GenAI conventions do); `cache_read_tokens` and
    `cache_write_tokens` are the part of them read from / written to the provider's prompt
    cache, priced at their own rates. `total_tokens` is input plus output.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def of(
        cls,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> TokenUsage:
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
        )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the plain input rate."""
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(slots=True, kw_only=True)
class CallInfo:
    """What the engine knows of the call behind a result: who answered, what it cost.

    The same figures are in `DimensionResult.metadata` under the keys of the same names
    (kept for code written before `call`); `metadata` is otherwise left to plugins.

    A plain dataclass rather than a model: a run holds one per result, and a model instance
    weighs ten times as much. Results validate it from JSON all the same.
    """

    model: str | None = None
    """The model that answered (the provider's own name for it when it reports one)."""
    provider: str | None = None
    """The configured provider of the last attempt."""
    tokens: TokenUsage = field(default_factory=TokenUsage)
    """Tokens of every attempt, those whose answer failed validation included."""
    cost: float = 0.0
    """USD for `tokens` (0 for a cache hit: see `saved_cost`)."""
    cached: bool = False
    """Answered from the store's response cache (or a skip hook's result)."""
    saved_cost: float | None = None
    """For a cache hit: what the call would have cost."""
    skipped: bool = False
    """A skip hook skipped the call."""
    attempts: int = 0
    """Requests made, over all providers of the chain."""
    duration: float = 0.0
    """Seconds from the first attempt to the result."""
    finish_reason: str | None = None
    """Why the model stopped, as the provider said it ("stop", "end_turn", "length", ...)."""
    status_code: int | None = None
    """The HTTP status of the answer, when the provider reports it."""
    target: str | None = None
    """The pool target that answered (its name, or its key's fingerprint); None outside a
    pool."""
    hedged: bool = False
    """A duplicate request was sent for this call (execution.hedge); its cost is in `cost`."""
    mode: str = "online"
    """"batch" when a provider batch API answered the call (priced at its batch rates)."""

    def to_dict(self) -> dict[str, Any]:
        """This object as JSON-compatible Python data."""
        data: dict[str, Any] = _call_info_adapter().dump_python(self, mode="json")
        return data

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> CallInfo | None:
        """The call that metadata keys of results made before `call` describe (rows stored
        by an earlier version, results a hook built); None when they describe none.

        As costs were counted from metadata, a call is described by valid `tokens`, or by
        `skipped` or `cached`; a value of the wrong type is left out."""
        fields = {key: metadata[key] for key in _CALL_FIELDS if key in metadata}
        while True:
            try:
                info: CallInfo = _call_info_adapter().validate_python(fields)
                break
            except pydantic.ValidationError as exc:
                for problem in exc.errors():
                    fields.pop(str(problem["loc"][0]), None)
        if "tokens" not in fields and not info.skipped and not info.cached:
            return None
        return info


_CALL_FIELDS = tuple(f.name for f in dataclasses.fields(CallInfo))


@functools.cache
def _call_info_adapter() -> pydantic.TypeAdapter[CallInfo]:
    return pydantic.TypeAdapter(CallInfo)


class DimensionResult(_Data):
    """The outcome of one dimension for one section (or of a global dimension).

    `call` is the typed information of the call behind it (None when there was none to
    finish: a prompt or provider-selection error, a dimension timeout). `metadata` holds
    what plugins add, and for now also the same figures under their documented keys:
    model, provider, tokens (TokenUsage), cost, cached, skipped, reason, attempts, duration.

    With a dimension `output_schema`, `data` is the validated answer as JSON-able data and
    `parsed` the model instance itself (None without a schema, or when the data does not fit
    it: a skip, an error). `parsed` is never serialised or stored; a resumed run rebuilds it
    from `data`. `call` is stored with the result but left out of `to_dict()`, whose
    metadata carries the same figures.
    """

    data: Any = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    call: CallInfo | None = Field(default=None, exclude=True)
    parsed: BaseModel | None = Field(default=None, exclude=True, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


Prompt = str | list[dict[str, Any]]
_MESSAGES_FORM = "a str or a list of {'role': ..., 'content': ...} message dicts"


def to_prompt(value: Any, dimension: str) -> Prompt:
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


class ProviderFallback(_Data):
    provider: str
    options: dict[str, Any] = Field(default_factory=dict)
    retry_after: float | None = None


_SELECTION_FORMS = ("a ProviderSelection, a dict like {'provider': 'anthropic', 'options': "
                    "{'model': ...}} or a provider name")


class ProviderSelection(_Data):
    provider: str
    options: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[ProviderFallback] = Field(default_factory=list)

    @classmethod
    def from_value(cls, value: Any, hook: str = "select_provider",
                   dimension: str | None = None) -> ProviderSelection:
        """A selection, a dict of one, or a provider name; anything else is a HookResultError
        naming `hook` (and the dimension, when given) and the accepted forms."""
        if isinstance(value, ProviderSelection):
            return value
        if isinstance(value, str) and value:
            return cls(provider=value)
        if isinstance(value, Mapping):
            try:
                return cls.model_validate(value)
            except pydantic.ValidationError as exc:
                raise HookResultError(hook, f"{_returned(hook, dimension)} a dict that is not a "
                                            f"provider selection ({_problems(exc)}); it must "
                                            f"return {_SELECTION_FORMS}") from None
        raise HookResultError(hook, f"{_returned(hook, dimension)} {_shown(value)}; it must "
                                    f"return {_SELECTION_FORMS}")


class ProviderRequest(_Data):
    """What the engine asks a provider: a prompt or chat messages, plus call options.

    `output_schema` is the JSON schema of the dimension's output_schema (its `$defs` inlined),
    for providers that can ask the model for it natively; None when the dimension has none.
    A provider may ignore it: the engine validates the answer either way.
    """

    input: str | list[dict[str, Any]]
    options: dict[str, Any] = Field(default_factory=dict)
    dimension: str = ""
    is_global: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] | None = None

    @classmethod
    def from_value(cls, value: Any, current: ProviderRequest,
                   hook: str = "before_provider_execute") -> ProviderRequest:
        """A hook's request: a ProviderRequest, or a dict of the fields it changes in
        `current`; anything else is a HookResultError naming `hook`."""
        return _changed(hook, value, current)


class ProviderResponse(_Data):
    """What a provider answers. metadata: model, provider, tokens, status_code, retry_after."""

    data: Any = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_value(cls, value: Any, current: ProviderResponse,
                   hook: str = "after_provider_execute") -> ProviderResponse:
        """A hook's response: a ProviderResponse, or a dict of the fields it changes in
        `current`; anything else is a HookResultError naming `hook`."""
        return _changed(hook, value, current)


_Model = TypeVar("_Model", ProviderRequest, ProviderResponse)
_CONTEXT_FIELD = {ProviderRequest: "request", ProviderResponse: "response"}


def _changed(hook: str, value: Any, current: _Model) -> _Model:
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


RequestChange = dict[str, Any] | ProviderRequest | str | list[dict[str, Any]]
_CHANGE_FORMS = ("a ProviderRequest, a dict of 'input' and/or 'options', or the new input "
                 "(a str or a list of message dicts)")


class _ChangesRequest(_Data):
    modified_request: RequestChange | None = Field(default=None, union_mode="left_to_right")
    """The next request: a ProviderRequest (its input and options), a dict of `input`
    and/or `options` (what it leaves out stays), or the new input itself."""

    def changed_request(self, input: Prompt, options: dict[str, Any]) -> tuple[Prompt,
                                                                             dict[str, Any]]:
        """`input` and `options` as `modified_request` changes them."""
        change = self.modified_request
        if change is None:
            return input, options
        if isinstance(change, ProviderRequest):
            return change.input, dict(change.options)
        if isinstance(change, Mapping):
            return change.get("input", input), dict(change.get("options", options))
        return change, options


def _request_change(hook: str, value: Any) -> RequestChange | None:
    """A decision's `modified_request`, checked: its input a prompt, its options a dict."""
    if value is None or isinstance(value, ProviderRequest):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in ProviderRequest.model_fields)
        if unknown:
            raise HookResultError(hook, f"{hook} returned a modified_request with unknown "
                                        f"key(s) {', '.join(map(repr, unknown))}; it must be "
                                        f"{_CHANGE_FORMS}")
        if "input" in value:
            _request_input(hook, value["input"])
        if "options" in value and not isinstance(value["options"], Mapping):
            raise HookResultError(hook, f"{hook} returned a modified_request whose options "
                                        f"are {_shown(value['options'])}, not a dict")
        return dict(value)
    return _request_input(hook, value)


def _switched_provider(hook: str, value: Any) -> ProviderSelection | None:
    if value is None:
        return None
    try:
        return ProviderSelection.from_value(value, hook)
    except HookResultError:
        raise HookResultError(hook, f"{hook} returned modified_provider={_shown(value)}; it "
                                    f"must be {_SELECTION_FORMS}") from None


def _request_input(hook: str, value: Any) -> str | list[dict[str, Any]]:
    if isinstance(value, str) or (isinstance(value, list)
                                  and all(isinstance(m, Mapping) for m in value)):
        return value
    raise HookResultError(hook, f"{hook} returned a modified_request of {_shown(value)}; it "
                                f"must be {_CHANGE_FORMS}")


class RetryDecision(_ChangesRequest):
    """What `handle_retry` answers about a failed attempt that may be retried.

    `from_value()` also takes the dict form (`{"should_retry": False}`, `{"delay": 2.0}`,
    ...) and None, which retries as planned.
    """

    should_retry: bool = True
    """False: no more attempts on this provider (the selection's fallbacks still run)."""
    delay: float | None = None
    """Seconds to wait before the next attempt, never less than the provider's Retry-After;
    None: the engine's backoff."""
    modified_provider: ProviderSelection | None = None
    """Send the next attempts to this provider, its options added to the current ones."""

    @classmethod
    def from_value(cls, value: Any, hook: str = "handle_retry") -> RetryDecision:
        if value is None:
            return cls()
        if isinstance(value, RetryDecision):
            return value
        fields = _decision_fields(hook, value, cls)
        return cls(
            should_retry=_flag(hook, fields, "should_retry"),
            delay=_seconds(hook, fields, "delay"),
            modified_request=_request_change(hook, fields.get("modified_request")),
            modified_provider=_switched_provider(hook, fields.get("modified_provider")),
        )


class FallbackDecision(_ChangesRequest):
    """What `handle_provider_fallback` answers before the next provider of a selection runs.

    `from_value()` also takes the dict form (`{"should_fallback": False}`, ...) and None,
    which falls back as planned.
    """

    should_fallback: bool = True
    """False: skip this provider (the next one, if any, is asked about in turn)."""
    delay: float | None = None
    """Seconds to wait before trying it; left out, the fallback's own `retry_after`."""

    @classmethod
    def from_value(cls, value: Any, hook: str = "handle_provider_fallback") -> FallbackDecision:
        if value is None:
            return cls()
        if isinstance(value, FallbackDecision):
            return value
        fields = _decision_fields(hook, value, cls)
        given: dict[str, Any] = {}
        if "delay" in fields:  # given, even as None, it replaces the fallback's retry_after
            given["delay"] = _seconds(hook, fields, "delay")
        return cls(should_fallback=_flag(hook, fields, "should_fallback"),
                   modified_request=_request_change(hook, fields.get("modified_request")),
                   **given)

    def wait(self, planned: float | None) -> float | None:
        """Seconds to wait before the fallback: `delay` when given, else `planned`."""
        return self.delay if "delay" in self.model_fields_set else planned


def _decision_fields(hook: str, value: Any, kind: type[_Data]) -> Mapping[str, Any]:
    forms = f"a {kind.__name__}, a dict of some of its fields ({', '.join(kind.model_fields)})"
    if not isinstance(value, Mapping):
        raise HookResultError(hook, f"{hook} returned {_shown(value)}; it must return {forms} "
                                    f"or None")
    unknown = sorted(str(key) for key in value if key not in kind.model_fields)
    if unknown:
        raise HookResultError(hook, f"{hook} returned a dict with unknown key(s) "
                                    f"{', '.join(map(repr, unknown))}; it must return {forms} "
                                    f"or None")
    return value


def _flag(hook: str, fields: Mapping[str, Any], key: str) -> bool:
    value = fields.get(key)
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    raise HookResultError(hook, f"{hook} returned {key}={_shown(value)}; it must be True or "
                                f"False")


def _seconds(hook: str, fields: Mapping[str, Any], key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise HookResultError(hook, f"{hook} returned {key}={_shown(value)}; it must be a "
                                    f"number of seconds >= 0 or None")
    return float(value)


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


class SkipWithResult(_Data):
    """Returned from a skip hook: skip the call and use `result` instead."""

    result: DimensionResult


class SectionResult(_Data):
    section: Section
    results: dict[str, DimensionResult] = Field(default_factory=dict)


class DimensionCost(_Data):
    cost: float = 0.0
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    calls: int = 0
    models: list[str] = Field(default_factory=list)


class ProviderCost(_Data):
    cost: float = 0.0
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    calls: int = 0
    models: list[str] = Field(default_factory=list)


class ModelCost(_Data):
    cost: float = 0.0
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    calls: int = 0
    priced: bool = True


class ModeCost(_Data):
    """The calls of one mode ("online" or "batch"); `online_cost` is what the same tokens
    cost at the online rates, so for batch calls `online_cost - cost` is the saving."""

    cost: float = 0.0
    online_cost: float = 0.0
    tokens: TokenUsage = Field(default_factory=TokenUsage)
    calls: int = 0


class CostSummary(_Data):
    total_cost: float = 0.0
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0  # part of input_tokens, as in TokenUsage
    cache_write_tokens: int = 0
    by_dimension: dict[str, DimensionCost] = Field(default_factory=dict)
    by_provider: dict[str, ProviderCost] = Field(default_factory=dict)
    by_model: dict[str, ModelCost] = Field(default_factory=dict)
    currency: str = "USD"
    cached_calls: int = 0
    cache_savings: float = 0.0
    unpriced_models: list[str] = Field(default_factory=list)
    by_target: dict[str, ProviderCost] = Field(default_factory=dict)
    """Calls a pool target answered, as "provider[target]" (the target's name or its key's
    fingerprint); a hedged call counts under the target whose answer won."""
    hedged_calls: int = 0
    by_mode: dict[str, ModeCost] = Field(default_factory=dict)
    """"online" and "batch" calls apart (a mode with no call is left out)."""
    batch_savings: float = 0.0
    """USD the batch calls saved against the same tokens at the online rates."""


class ProcessResult(_Data):
    """The whole run: one SectionResult per section, global results, costs.

    `sections` follows the final section list (after any transformation); sections a
    transformation removed are kept, with the results they had, in `dropped_sections`.
    """

    sections: list[SectionResult] = Field(default_factory=list)
    global_results: dict[str, DimensionResult] = Field(default_factory=dict)
    transformed_sections: list[Section] = Field(default_factory=list)
    costs: CostSummary | None = None
    metadata: Any = None
    dropped_sections: list[SectionResult] = Field(default_factory=list)

    @field_serializer("sections", "transformed_sections", mode="wrap")
    def _sections_as_list(self, value: Any, handler: SerializerFunctionWrapHandler) -> Any:
        # A big run with a store reads its sections back lazily (dagengine._bounded).
        return handler(value if isinstance(value, list) else list(value))

    def to_pandas(self) -> Any:
        """A pandas DataFrame, one row per section: `section.index`, `section.content`,
        `section.<metadata key>`, then per dimension `<dim>.<field>` (dict data, flattened one
        level) or `<dim>` (other data), `<dim>.error` and `<dim>.cost`. Global results are
        not rows: they stay in `global_results`. Needs `pip install 'dagengine[pandas]'`."""
        from ._table import to_pandas

        return to_pandas(self)

    def to_polars(self) -> Any:
        """The same table as `to_pandas()`, as a polars DataFrame (`dagengine[polars]`)."""
        from ._table import to_polars

        return to_polars(self)


class DimensionProgress(_Data):
    completed: int = 0
    total: int = 0
    percent: float = 0.0
    cost: float = 0.0
    estimated_cost: float = 0.0
    failed: int = 0
    eta_seconds: float = 0.0


class WorkerProgress(_Data):
    """One Ray worker of a run over a cluster (ProgressUpdate.workers)."""

    name: str
    alive: bool = True
    completed: int = 0  # results it delivered
    requests: int = 0
    in_flight: int = 0
    calls_per_second: float = 0.0  # results per second since it started
    concurrency: int = 0  # its share of execution.concurrency
class BatchProgress(_Data):
    """The provider batches of a batch-mode run, as the providers last reported them."""

    submitted: int = 0  # batches submitted by the run (or re-attached to, on resume)
    in_progress: int = 0
    ended: int = 0  # done: ended, expired, cancelled or failed
    items: int = 0  # requests in those batches
    items_done: int = 0  # of them, processed by the provider (answered or failed)
    eta_seconds: float | None = None  # until the batches in progress end, by their counts


class ProgressUpdate(_Data):
    completed: int = 0
    total: int = 0
    percent: float = 0.0
    cost: float = 0.0
    estimated_cost: float = 0.0
    elapsed_seconds: float = 0.0
    eta_seconds: float = 0.0
    current_dimension: str | None = None
    current_section: int | None = None
    dimensions: dict[str, DimensionProgress] = Field(default_factory=dict)
    failed: int = 0
    skipped: int = 0
    retries: int = 0
    rate_limited: int = 0
    waiting_for_capacity: int = 0
    in_flight: int = 0
    requests_per_second: float = 0.0
    hedges: int = 0
    """Duplicate requests sent (execution.hedge)."""
    requests_by_target: dict[str, int] = Field(default_factory=dict)
    """Requests sent to each pool target, as "provider[target]"."""
    workers: list[WorkerProgress] = Field(default_factory=list)  # a run over Ray: its workers
    batches: BatchProgress | None = None
    """Batch mode: the provider batches of the run (None when it has none)."""
