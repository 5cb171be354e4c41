"""Prices and the CostSummary of a run, derived from its results."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .config import ModelPrice, parse_pricing
from .types import (
    CostSummary,
    DimensionCost,
    DimensionResult,
    ModelCost,
    ProviderCost,
    TokenUsage,
)

log = logging.getLogger("dagengine")

# Published list prices in USD per million tokens (input, output), as of PRICES_AS_OF.
# The user's `pricing` always wins; this table only fills the gaps.
PRICES_AS_OF = "2025-11-01"
BUILTIN_PRICES: dict[str, ModelPrice] = {
    name: ModelPrice(i, o)
    for name, (i, o) in {
        "claude-3-haiku": (0.25, 1.25),
        "claude-3-5-haiku": (0.80, 4.00),
        "claude-haiku-4-5": (1.00, 5.00),
        "claude-3-5-sonnet": (3.00, 15.00),
        "claude-3-7-sonnet": (3.00, 15.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-sonnet-4-5": (3.00, 15.00),
        "claude-3-opus": (15.00, 75.00),
        "claude-opus-4": (15.00, 75.00),
        "claude-opus-4-1": (15.00, 75.00),
        "claude-opus-4-5": (5.00, 25.00),
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-5": (1.25, 10.00),
        "gpt-5-mini": (0.25, 2.00),
        "gpt-5-nano": (0.05, 0.40),
        "o4-mini": (1.10, 4.40),
        "gemini-1.5-flash": (0.075, 0.30),
        "gemini-1.5-pro": (1.25, 5.00),
        "gemini-2.0-flash": (0.10, 0.40),
        "gemini-2.0-flash-lite": (0.075, 0.30),
        "gemini-2.5-flash": (0.30, 2.50),
        "gemini-2.5-flash-lite": (0.10, 0.40),
        "gemini-2.5-pro": (1.25, 10.00),
    }.items()
}


class Pricing:
    """Looks up a model's price: the user's table first, then the built-in one.

    Built-in names match by prefix so dated ids ("claude-3-5-haiku-20241022") find theirs.
    A model with no price costs 0 and is logged once.
    """

    def __init__(self, pricing: Mapping[str, Any] | None = None) -> None:
        self.user = parse_pricing(pricing)
        self._cache: dict[str, ModelPrice | None] = {}
        self.unpriced: set[str] = set()

    def price(self, model: str) -> ModelPrice | None:
        if model in self._cache:
            return self._cache[model]
        found = self.user.get(model) or _builtin_price(model)
        self._cache[model] = found
        if found is None and model not in self.unpriced:
            self.unpriced.add(model)
            log.warning("no price known for model %r: its tokens are counted, cost as 0", model)
        return found

    def cost(self, model: str | None, tokens: TokenUsage | None) -> float:
        if not model or tokens is None:
            return 0.0
        price = self.price(model)
        if price is None:
            return 0.0
        return (tokens.input_tokens * price.input_per_1m
                + tokens.output_tokens * price.output_per_1m) / 1_000_000


def _builtin_price(model: str) -> ModelPrice | None:
    name = model.rsplit("/", 1)[-1]
    best = ""
    for key in BUILTIN_PRICES:
        if name.startswith(key) and len(key) > len(best):
            best = key
    return BUILTIN_PRICES.get(best)


def summarize_costs(
    results: Iterable[tuple[str, DimensionResult]], pricing: Pricing
) -> CostSummary:
    """Add up tokens and cost of (dimension, result) pairs by dimension, provider and model."""
    summary = CostSummary()
    for dimension, result in results:
        meta = result.metadata
        tokens = meta.get("tokens")
        if meta.get("cached") and meta.get("saved_cost"):
            summary.cached_calls += 1
            summary.cache_savings += float(meta["saved_cost"])
        if not isinstance(tokens, TokenUsage) or meta.get("cached"):
            continue
        cost = float(meta.get("cost") or 0.0)
        # A call that failed before a provider or model answered has neither: it counts for
        # its dimension, and is listed under no made-up provider or model name.
        model = str(meta.get("model") or "")
        provider = str(meta.get("provider") or "")
        summary.total_cost += cost
        summary.input_tokens += tokens.input_tokens
        summary.output_tokens += tokens.output_tokens
        buckets: list[DimensionCost | ProviderCost | ModelCost] = [
            summary.by_dimension.setdefault(dimension, DimensionCost())]
        if provider:
            buckets.append(summary.by_provider.setdefault(provider, ProviderCost()))
        if model:
            buckets.append(summary.by_model.setdefault(
                model, ModelCost(priced=pricing.price(model) is not None)))
        for bucket in buckets:
            bucket.cost += cost
            bucket.calls += 1
            bucket.tokens = _add(bucket.tokens, tokens)
            if model and not isinstance(bucket, ModelCost) and model not in bucket.models:
                bucket.models.append(model)
    summary.total_tokens = summary.input_tokens + summary.output_tokens
    summary.unpriced_models = sorted(pricing.unpriced)
    return summary


def _add(a: TokenUsage, b: TokenUsage) -> TokenUsage:
    return TokenUsage.of(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens)
