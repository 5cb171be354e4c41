"""Prices and the CostSummary of a run, derived from its results.

Where a model's price comes from, first match wins:

1. the user's `pricing` table (exact model name);
2. genai-prices (pydantic's maintained price library), from the data its installed version
   ships: read offline and never updated at run time, so a run's costs do not depend on the
   network or on another library in the process turning on its updater;
3. BUILTIN_PRICES below, for models the library does not know (prefix match).

Cached prompt tokens are priced at their own rates. A table without cache rates takes them
from the library's rates for that model, else from the provider's usual ratio to the input
rate (CACHE_RATIOS), else bills them as plain input.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .config import ModelPrice, parse_pricing
from .types import (
    CostSummary,
    DimensionCost,
    DimensionResult,
    ModeCost,
    ModelCost,
    ProviderCost,
    TokenUsage,
)

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, Provider, TieredPrices

log = logging.getLogger("dagengine")

# Published list prices in USD per million tokens (input, output), as of PRICES_AS_OF, for
# models genai-prices does not know. The user's `pricing` always wins.
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

# (model name prefixes, cache read, cache write) as multiples of the input rate: Anthropic
# bills reads at 0.1x and 5-minute writes at 1.25x; OpenAI's cached input is 0.5x on the
# gpt-4o generation (less on newer ones) and Gemini's 0.25x on 2.0 (less on 2.5), so the
# conservative figure; neither bills writes beyond the input rate.
CACHE_RATIOS: tuple[tuple[tuple[str, ...], float, float], ...] = (
    (("claude",), 0.1, 1.25),
    (("gpt-", "chatgpt-", "o1", "o3", "o4"), 0.5, 1.0),
    (("gemini",), 0.25, 1.0),
)

# The three providers' batch APIs bill half the online rates; used for prices the library
# does not hold, and for models whose batch rates it does not list.
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True, slots=True)
class _Found:
    price: ModelPrice  # every rate filled in
    batch: ModelPrice  # the same through a provider's batch API
    # Set when the library's rates depend on the prompt's size (long-context tiers): the
    # library prices a call whose prompt passes the first tier itself. Other calls are
    # priced here at the base rates, as the library would (its calc_price takes 100-200 us,
    # too slow to run on every call).
    tiered: tuple[Provider, ModelInfo] | None = None
    first_tier: int = 0  # prompt tokens above which a tier applies
    # Whether the library holds batch rates of its own for the model; without them the
    # batch price is BATCH_DISCOUNT of the online one.
    batch_rates: bool = False


class Pricing:
    """Looks up a model's price: the user's table, then genai-prices, then BUILTIN_PRICES.

    A model with no price costs 0 and is logged once.
    """

    def __init__(self, pricing: Mapping[str, Any] | None = None) -> None:
        self.user = parse_pricing(pricing)
        self._cache: dict[str, _Found | None] = {}
        self.unpriced: set[str] = set()

    def price(self, model: str) -> ModelPrice | None:
        """The model's rates in USD per million tokens (cache rates filled in), or None.

        A tiered price shows its base tier."""
        found = self._find(model)
        return found.price if found is not None else None

    def cost(
        self, model: str | None, tokens: TokenUsage | None, *, batch: bool = False
    ) -> float:
        """USD for `tokens` on `model`; `batch=True` prices a provider batch API's call."""
        if not model or tokens is None:
            return 0.0
        found = self._find(model)
        if found is None:
            return 0.0
        if found.tiered is not None and tokens.input_tokens > found.first_tier:
            library_cost = _library_cost(found.tiered, tokens, batch and found.batch_rates)
            if library_cost is not None:
                return library_cost * (BATCH_DISCOUNT if batch and not found.batch_rates
                                       else 1.0)
        return _table_cost(found.batch if batch else found.price, tokens)

    def _find(self, model: str) -> _Found | None:
        if model in self._cache:
            return self._cache[model]
        found = self._lookup(model)
        self._cache[model] = found
        if found is None and model not in self.unpriced:
            self.unpriced.add(model)
            log.warning("no price known for model %r: its tokens are counted, cost as 0", model)
        return found

    def _lookup(self, model: str) -> _Found | None:
        if (user := self.user.get(model)) is not None:
            return _own(_with_cache_rates(user, model))
        if (library := _library_model(model)) is not None:
            first_tier = _first_tier(library[1])
            online = _library_price(*library, batch=False)
            batch = _library_price(*library, batch=True)
            # The library lacks batch rates for some models the providers serve in batch
            # (claude-3-5-haiku, gemini-2.0-flash): every model of the three is discounted.
            batch_rates = batch != online
            return _Found(
                online,
                batch if batch_rates else _own(online).batch,
                library if first_tier is not None else None,
                first_tier or 0,
                batch_rates,
            )
        if (table := _builtin_price(model)) is not None:
            return _own(_with_cache_rates(table, model))
        return None


def _own(price: ModelPrice) -> _Found:
    """A price of the user's or our table: its batch price is BATCH_DISCOUNT of it."""
    def discounted(rate: float | None) -> float | None:
        return None if rate is None else rate * BATCH_DISCOUNT

    batch = ModelPrice(price.input_per_1m * BATCH_DISCOUNT, price.output_per_1m * BATCH_DISCOUNT,
                       discounted(price.cache_read_per_1m), discounted(price.cache_write_per_1m))
    return _Found(price, batch)


def _table_cost(price: ModelPrice, tokens: TokenUsage) -> float:
    # _Found.price always has its cache rates; `or 0.0` only satisfies the type.
    return (
        tokens.uncached_input_tokens * price.input_per_1m
        + tokens.cache_read_tokens * (price.cache_read_per_1m or 0.0)
        + tokens.cache_write_tokens * (price.cache_write_per_1m or 0.0)
        + tokens.output_tokens * price.output_per_1m
    ) / 1_000_000


def _with_cache_rates(price: ModelPrice, model: str) -> ModelPrice:
    """`price` with missing cache rates at the library's ratios for the model, else its family's."""
    read, write = price.cache_read_per_1m, price.cache_write_per_1m
    if read is not None and write is not None:
        return price
    library = _library_model(model)
    read_ratio, write_ratio = (
        _library_ratios(*library) if library is not None else _family_ratios(model)
    )
    return replace(
        price,
        cache_read_per_1m=price.input_per_1m * read_ratio if read is None else read,
        cache_write_per_1m=price.input_per_1m * write_ratio if write is None else write,
    )


def _family_ratios(model: str) -> tuple[float, float]:
    name = _short_name(model).lower()
    for prefixes, read, write in CACHE_RATIOS:
        if name.startswith(prefixes):
            return read, write
    return 1.0, 1.0


def _short_name(model: str) -> str:
    """ "models/gemini-2.0-flash" or a gateway's "anthropic/claude-..." -> the model's own id."""
    return model.rsplit("/", 1)[-1]


def _builtin_price(model: str) -> ModelPrice | None:
    name = _short_name(model)
    best = ""
    for key in BUILTIN_PRICES:
        if name.startswith(key) and len(key) > len(best):
            best = key
    return BUILTIN_PRICES.get(best)


# -- genai-prices ------------------------------------------------------------------------------


@functools.cache
def _snapshot() -> DataSnapshot:
    # Imported on first use: its price data is a large module that `import dagengine` need
    # not pay for. A snapshot of our own, so UpdatePrices started elsewhere never reaches it.
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


def _library_model(model: str) -> tuple[Provider, ModelInfo] | None:
    snapshot = _snapshot()
    for ref in dict.fromkeys((model, _short_name(model))):
        try:
            return snapshot.find_provider_model(ref, None, None, None)
        except LookupError:
            continue
    return None


def _library_price(provider: Provider, info: ModelInfo, *, batch: bool) -> ModelPrice:
    """The library's current rates. Tiered prices show their base tier; a cache rate the
    library lacks is the input rate, as the library itself bills such tokens."""
    prices = info.get_prices(datetime.now(UTC), _context(provider, info, batch))
    input_rate = _rate(prices.input_mtok) or 0.0
    read = _rate(prices.cache_read_mtok)
    write = _rate(prices.cache_write_mtok)
    return ModelPrice(
        input_rate,
        _rate(prices.output_mtok) or 0.0,
        input_rate if read is None else read,
        input_rate if write is None else write,
    )


def _context(provider: Provider, info: ModelInfo, batch: bool) -> dict[str, str] | None:
    # As the library's calc_price: another provider's model (one it falls back to) has no
    # variants of this provider's.
    if not batch or not any(info is model for model in provider.models):
        return None
    return {"processing": "batch"}


def _first_tier(info: ModelInfo) -> int | None:
    """The lowest tier start of any token rate in the model's price history or variants."""
    from genai_prices.types import ModelPrice as LibraryPrice
    from genai_prices.types import TieredPrices

    prices = [info.prices] if isinstance(info.prices, LibraryPrice) else [
        conditional.prices for conditional in info.prices]
    prices += [variant.prices for variant in info.price_variants or ()]
    starts = [
        tier.start
        for price in prices
        for key in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
        if isinstance(rate := getattr(price, key, None), TieredPrices)
        for tier in rate.tiers
    ]
    return min(starts) if starts else None


def _library_ratios(provider: Provider, info: ModelInfo) -> tuple[float, float]:
    rates = _library_price(provider, info, batch=False)
    if not rates.input_per_1m:
        return 1.0, 1.0
    return (
        (rates.cache_read_per_1m or 0.0) / rates.input_per_1m,
        (rates.cache_write_per_1m or 0.0) / rates.input_per_1m,
    )


def _rate(value: Decimal | TieredPrices | None) -> float | None:
    if value is None:
        return None
    return float(value if isinstance(value, Decimal) else value.base)


def _library_cost(
    found: tuple[Provider, ModelInfo], tokens: TokenUsage, batch: bool
) -> float | None:
    """The library's price of `tokens` (tiers and batch rates included); None if it refuses."""
    from genai_prices import Usage

    provider, info = found
    cached = tokens.cache_read_tokens + tokens.cache_write_tokens
    usage = Usage(
        # The library's input_tokens is every prompt token, as ours; a provider that
        # reported fewer than its cache tokens is billed for the cache tokens at least.
        input_tokens=max(tokens.input_tokens, cached),
        cache_read_tokens=tokens.cache_read_tokens,
        cache_write_tokens=tokens.cache_write_tokens,
        output_tokens=tokens.output_tokens,
    )
    try:
        result = info.calc_price(
            usage,
            provider,
            genai_request_timestamp=datetime.now(UTC),
            price_context=_context(provider, info, batch),
        )
    except ValueError as exc:  # usage it cannot price: ours prices it from the base rates
        log.debug("genai-prices could not price %s: %s", info.id, exc)
        return None
    return float(result.total_price)


def summarize_costs(
    results: Iterable[tuple[str, DimensionResult]], pricing: Pricing
) -> CostSummary:
    """Add up tokens and cost of (dimension, result) pairs by dimension, provider and model."""
    tally = CostTally(pricing)
    for dimension, result in results:
        tally.add(dimension, result)
    return tally.summary()


class CostTally:
    """summarize_costs as it goes: add results one at a time (a run that does not keep them
    all adds each as it lets it go), then `summary()`.

    The sums go into plain tallies and become models once at the end: a model's attribute
    assignment costs a validation-free but still slow __setattr__, a dozen per result."""

    def __init__(self, pricing: Pricing) -> None:
        self.pricing = pricing
        self.total, self.cached_calls, self.cache_savings = _Tally(), 0, 0.0
        self.by_dimension: dict[str, _Tally] = {}
        self.by_provider: dict[str, _Tally] = {}
        self.by_model: dict[str, _Tally] = {}
        self.by_target: dict[str, _Tally] = {}
        self.by_mode: dict[str, _Tally] = {}
        self.hedged_calls = 0

    def add(self, dimension: str, result: DimensionResult) -> None:
        call = result.call
        if call is None:
            return
        if call.cached and call.saved_cost:
            self.cached_calls += 1
            self.cache_savings += call.saved_cost
        if call.cached or call.skipped:
            return
        cost, tokens = call.cost, call.tokens
        # A call that failed before a provider or model answered has neither: it counts for
        # its dimension, and is listed under no made-up provider or model name.
        model = call.model or ""
        provider = call.provider or ""
        self.total.add(cost, tokens)
        tally = self.by_dimension.get(dimension)
        if tally is None:
            tally = self.by_dimension[dimension] = _Tally()
        tally.add(cost, tokens, model)
        if provider:
            tally = self.by_provider.get(provider)
            if tally is None:
                tally = self.by_provider[provider] = _Tally()
            tally.add(cost, tokens, model)
        if model:
            tally = self.by_model.get(model)
            if tally is None:
                tally = self.by_model[model] = _Tally()
            tally.add(cost, tokens)
        if call.target is not None:
            key = f"{provider}[{call.target}]"
            tally = self.by_target.get(key)
            if tally is None:
                tally = self.by_target[key] = _Tally()
            tally.add(cost, tokens, model)
        self.hedged_calls += call.hedged
        tally = self.by_mode.get(call.mode)
        if tally is None:
            tally = self.by_mode[call.mode] = _Tally()
        tally.add(cost, tokens)
        # A batch call's tokens are repriced online; an online call's cost already is that.
        tally.online_cost += self.pricing.cost(model, tokens) if call.mode == "batch" else cost

    def summary(self) -> CostSummary:
        batch, total = self.by_mode.get("batch"), self.total
        return CostSummary(
            total_cost=total.cost, total_tokens=total.input_tokens + total.output_tokens,
            input_tokens=total.input_tokens, output_tokens=total.output_tokens,
            cache_read_tokens=total.cache_read_tokens, cache_write_tokens=total.cache_write_tokens,
            by_dimension={k: DimensionCost(cost=t.cost, tokens=t.tokens(), calls=t.calls,
                                           models=t.models) for k, t in self.by_dimension.items()},
            by_provider={k: ProviderCost(cost=t.cost, tokens=t.tokens(), calls=t.calls,
                                         models=t.models) for k, t in self.by_provider.items()},
            by_model={k: ModelCost(cost=t.cost, tokens=t.tokens(), calls=t.calls,
                                   priced=self.pricing.price(k) is not None)
                      for k, t in self.by_model.items()},
            by_target={k: ProviderCost(cost=t.cost, tokens=t.tokens(), calls=t.calls,
                                       models=t.models) for k, t in self.by_target.items()},
            hedged_calls=self.hedged_calls,
            by_mode={k: ModeCost(cost=t.cost, online_cost=t.online_cost, tokens=t.tokens(),
                                 calls=t.calls) for k, t in self.by_mode.items()},
            batch_savings=batch.online_cost - batch.cost if batch is not None else 0.0,
            cached_calls=self.cached_calls, cache_savings=self.cache_savings,
            unpriced_models=sorted(self.pricing.unpriced))


@dataclass(slots=True)
class _Tally:
    """Cost, calls and tokens of one bucket while summarize_costs adds them up."""

    cost: float = 0.0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    online_cost: float = 0.0  # by_mode's tallies: the same tokens at the online rates
    models: list[str] = field(default_factory=list)

    def add(self, cost: float, tokens: TokenUsage, model: str = "") -> None:
        self.cost += cost
        self.calls += 1
        self.input_tokens += tokens.input_tokens
        self.output_tokens += tokens.output_tokens
        self.total_tokens += tokens.total_tokens
        self.cache_read_tokens += tokens.cache_read_tokens
        self.cache_write_tokens += tokens.cache_write_tokens
        if model and model not in self.models:
            self.models.append(model)

    def tokens(self) -> TokenUsage:
        return TokenUsage(input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                          total_tokens=self.total_tokens,
                          cache_read_tokens=self.cache_read_tokens,
                          cache_write_tokens=self.cache_write_tokens)
