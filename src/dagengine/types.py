"""The data model. Everything here is plain data that converts to JSON with `to_dict()`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


def to_section(item: SectionLike) -> Section:
    """Accept a Section, a plain string or a {"content", "metadata"} mapping."""
    if isinstance(item, Section):
        return item
    if isinstance(item, str):
        return Section(content=item)
    if isinstance(item, dict):
        if "content" not in item:
            raise TypeError(f"a section mapping needs a 'content' key, got keys {sorted(item)}")
        return Section(content=str(item["content"]), metadata=dict(item.get("metadata") or {}))
    raise TypeError(f"a section must be a Section, str or dict, got {type(item).__name__}")


TransformFn = Callable[..., "list[Section] | Awaitable[list[Section]]"]


class Dimension(_Data):
    """One analysis. `scope="global"` runs once over all sections instead of per section."""

    name: str
    scope: Literal["section", "global"] = "section"
    transform: Callable[..., Any] | None = Field(default=None, exclude=True)
    output_schema: type[BaseModel] | None = Field(default=None, exclude=True)

    @property
    def is_global(self) -> bool:
        return self.scope == "global"


class TokenUsage(_Data):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, input_tokens: int, output_tokens: int) -> TokenUsage:
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )


class DimensionResult(_Data):
    """The outcome of one dimension for one section (or of a global dimension).

    metadata keys: model, provider, tokens (TokenUsage), cost, cached, skipped, reason,
    attempts, duration.
    """

    data: Any = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

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
    """What the engine asks a provider: a prompt or chat messages, plus call options."""

    input: str | list[dict[str, Any]]
    options: dict[str, Any] = Field(default_factory=dict)
    dimension: str = ""
    is_global: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


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
