"""The data model. Everything here is plain data that converts to JSON with `to_dict()`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from .errors import ValidationError


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
    if isinstance(value, (str, bytes, bytearray, Section, Mapping)) or value is None:
        raise ValidationError(where, f"a list of sections, e.g. [{_one_section(value)}]",
                              value, shown=_described(value))
    if not isinstance(value, Iterable):
        raise ValidationError(where, f"a list of sections ({_SECTION_FORMS} each)", value,
                              shown=_described(value))
    return [to_section(item, f"{where}[{index}]") for index, item in enumerate(value)]


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


class DimensionResult(_Data):
    """The outcome of one dimension for one section (or of a global dimension).

    metadata keys: model, provider, tokens (TokenUsage), cost, cached, skipped, reason,
    attempts, duration.

    With a dimension `output_schema`, `data` is the validated answer as JSON-able data and
    `parsed` the model instance itself (None without a schema, or when the data does not fit
    it: a skip, an error). `parsed` is never serialised or stored; a resumed run rebuilds it
    from `data`.
    """

    data: Any = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parsed: BaseModel | None = Field(default=None, exclude=True, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


class ProviderFallback(_Data):
    provider: str
    options: dict[str, Any] = Field(default_factory=dict)
    retry_after: float | None = None


class ProviderSelection(_Data):
    provider: str
    options: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[ProviderFallback] = Field(default_factory=list)


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


class ProviderResponse(_Data):
    """What a provider answers. metadata: model, provider, tokens, status_code, retry_after."""

    data: Any = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


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
