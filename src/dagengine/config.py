"""ExecutionConfig and pricing: validated once, so the run never meets a bad value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ValidationError

_RATE_LIMIT_KEYS = frozenset(
    {"requests_per_minute", "tokens_per_minute", "requests_per_second", "tokens_per_second"}
)


def _number(name: str, value: object, low: float, high: float, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(name, f"{kind} between {low:g} and {high:g}", value)
    if integer and not isinstance(value, int):
        raise ValidationError(name, f"{kind} between {low:g} and {high:g}", value)
    if math.isnan(value) or not low <= value <= high:
        raise ValidationError(name, f"between {low:g} and {high:g}", value)


@dataclass(frozen=True, slots=True)
class ExecutionConfig:
    """How a run executes. Times are in seconds.

    concurrency: provider calls in flight across the whole run.
    max_retries: retries after the first attempt of a call (0 = one attempt).
    retry_delay: base of the exponential backoff, doubled per attempt, jittered.
    max_retry_delay: cap of one backoff wait (a provider's Retry-After may exceed it).
    timeout: bound on one section-dimension execution, retries included (None = none).
    dimension_timeouts: per-dimension overrides of `timeout`.
    continue_on_error: keep going after a failed call (its result carries the error).
    rate_limits: {"provider" or "provider/model": {"requests_per_minute", "tokens_per_minute"}}.
    mode: "online" (each call its own request) or "batch" (the providers' batch APIs, at
        their discount); `Dimension(..., mode=...)` overrides it per dimension.
    batch: {"max_size": requests per batch, "max_wait": seconds to gather ready calls before
        submitting, "poll_interval": first poll delay, backing off to a cap}.
    hedge: None, or {"after": "p95", "budget": 0.05}: one duplicate for a call still running
        past that latency quantile, at most `budget` x the run's requests. Never in batch
        mode, nor for a request a before_provider_execute hook returns with metadata
        {"idempotent": False} (see dagengine/_pool.py).
    """

    concurrency: int = 5
    max_retries: int = 3
    retry_delay: float = 1.0
    max_retry_delay: float = 60.0
    timeout: float | None = 60.0
    dimension_timeouts: Mapping[str, float] = field(default_factory=dict)
    continue_on_error: bool = True
    rate_limits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    mode: str = "online"
    batch: Mapping[str, float] = field(default_factory=dict)
    hedge: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _number("execution.concurrency", self.concurrency, 1, 10_000, integer=True)
        _number("execution.max_retries", self.max_retries, 0, 100, integer=True)
        _number("execution.retry_delay", self.retry_delay, 0, 3600)
        _number("execution.max_retry_delay", self.max_retry_delay, 0, 86_400)
        if self.timeout is not None:
            _number("execution.timeout", self.timeout, 0.001, 86_400 * 7)
        if not isinstance(self.dimension_timeouts, Mapping):
            raise ValidationError(
                "execution.dimension_timeouts", "a dict of dimension -> seconds",
                self.dimension_timeouts,
            )
        for name, seconds in self.dimension_timeouts.items():
            _number(f"execution.dimension_timeouts[{name!r}]", seconds, 0.001, 86_400 * 7)
        if not isinstance(self.continue_on_error, bool):
            raise ValidationError("execution.continue_on_error", "True or False",
                                  self.continue_on_error)
        _check_rate_limits(self.rate_limits)
        check_mode("execution.mode", self.mode)
        object.__setattr__(self, "batch", _batch_settings(self.batch))
        if self.hedge is not None:
            object.__setattr__(self, "hedge", _hedge_settings(self.hedge))

    @classmethod
    def from_value(cls, value: ExecutionConfig | Mapping[str, Any] | None) -> ExecutionConfig:
        """Accept an ExecutionConfig, a dict of its fields, or None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValidationError("execution", "an ExecutionConfig or a dict", value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValidationError(
                f"execution.{unknown[0]}", f"one of the known fields ({', '.join(sorted(known))})",
                value[unknown[0]],
            )
        return cls(**value)

    def timeout_for(self, dimension: str) -> float | None:
        return self.dimension_timeouts.get(dimension, self.timeout)


MODES = ("online", "batch")
BATCH_DEFAULTS: Mapping[str, float] = {"max_size": 10_000, "max_wait": 5.0, "poll_interval": 5.0}
_BATCH_BOUNDS = {"max_size": (1, 100_000), "max_wait": (0, 86_400),
                 "poll_interval": (0.001, 86_400)}


def check_mode(where: str, mode: object) -> None:
    if mode not in MODES:
        raise ValidationError(where, "'online' or 'batch'", mode)


def _batch_settings(batch: object) -> dict[str, float]:
    """`execution.batch` with the defaults filled in."""
    if not isinstance(batch, Mapping):
        raise ValidationError("execution.batch",
                              "a dict like {'max_size': 10000, 'max_wait': 5, 'poll_interval': 5}",
                              batch)
    settings = dict(BATCH_DEFAULTS)
    for name, value in batch.items():
        if name not in _BATCH_BOUNDS:
            raise ValidationError(f"execution.batch.{name}",
                                  f"one of {', '.join(sorted(_BATCH_BOUNDS))}", value)
        low, high = _BATCH_BOUNDS[name]
        _number(f"execution.batch.{name}", value, low, high, integer=name == "max_size")
        settings[name] = value
    return settings


def _hedge_settings(hedge: object) -> dict[str, Any]:
    """`execution.hedge` checked: `after` a quantile "p50".."p99.9", `budget` a share."""
    if not isinstance(hedge, Mapping):
        raise ValidationError("execution.hedge", "None or a dict like {'after': 'p95', "
                              "'budget': 0.05}", hedge)
    unknown = sorted(set(hedge) - {"after", "budget"})
    if unknown:
        raise ValidationError(f"execution.hedge.{unknown[0]}", "'after' or 'budget'",
                              hedge[unknown[0]])
    after = hedge.get("after", "p95")
    quantile = _quantile(after)
    if quantile is None:
        raise ValidationError("execution.hedge.after", "a latency quantile like 'p95' or 'p99'",
                              after)
    budget = hedge.get("budget", 0.05)
    _number("execution.hedge.budget", budget, 0, 1)
    return {"after": after, "quantile": quantile, "budget": float(budget)}


def _quantile(after: object) -> float | None:
    """'p95' -> 0.95; None for anything that is not a quantile between p1 and p99.9."""
    if not isinstance(after, str) or not after.startswith("p"):
        return None
    try:
        value = float(after[1:]) / 100
    except ValueError:
        return None
    return value if 0.01 <= value <= 0.999 else None


def _check_rate_limits(limits: object) -> None:
    if not isinstance(limits, Mapping):
        raise ValidationError("execution.rate_limits", "a dict of provider -> limits", limits)
    for key, spec in limits.items():
        where = f"execution.rate_limits[{key!r}]"
        if not isinstance(spec, Mapping):
            raise ValidationError(where, "a dict like {'requests_per_minute': 3000}", spec)
        for name, value in spec.items():
            if name not in _RATE_LIMIT_KEYS:
                raise ValidationError(
                    f"{where}.{name}", f"one of {', '.join(sorted(_RATE_LIMIT_KEYS))}", value
                )
            _number(f"{where}.{name}", value, 1e-6, 1e12)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. A cache rate of None is filled in by `Pricing`."""

    input_per_1m: float
    output_per_1m: float
    cache_read_per_1m: float | None = None
    cache_write_per_1m: float | None = None


_PRICE_KEYS = ("input_per_1m", "output_per_1m", "cache_read_per_1m", "cache_write_per_1m")
_REQUIRED_PRICE_KEYS = _PRICE_KEYS[:2]


def parse_pricing(pricing: Mapping[str, Any] | None) -> dict[str, ModelPrice]:
    """`{"models": {model: {"input_per_1m", "output_per_1m", "cache_read_per_1m",
    "cache_write_per_1m"}}}` -> prices by model; the cache rates are optional."""
    if pricing is None:
        return {}
    if not isinstance(pricing, Mapping):
        raise ValidationError("pricing", "a dict like {'models': {...}}", pricing)
    models = pricing.get("models", {})
    if not isinstance(models, Mapping):
        raise ValidationError("pricing.models", "a dict of model -> prices", models)
    prices: dict[str, ModelPrice] = {}
    for model, spec in models.items():
        where = f"pricing.models[{model!r}]"
        if isinstance(spec, ModelPrice):
            prices[model] = spec
            continue
        if not isinstance(spec, Mapping):
            raise ValidationError(where, "a dict with input_per_1m and output_per_1m", spec)
        for key in _REQUIRED_PRICE_KEYS:
            if key not in spec:
                raise ValidationError(f"{where}.{key}", "a price in USD per million tokens",
                                      None)
        for key, value in spec.items():
            if key not in _PRICE_KEYS:
                # A misspelt cache rate would otherwise be priced silently at the input rate.
                raise ValidationError(f"{where}.{key}", f"one of {', '.join(_PRICE_KEYS)}",
                                      value)
            _number(f"{where}.{key}", value, 0, 1e6)
        prices[model] = ModelPrice(
            float(spec["input_per_1m"]),
            float(spec["output_per_1m"]),
            _optional_float(spec.get("cache_read_per_1m")),
            _optional_float(spec.get("cache_write_per_1m")),
        )
    return prices


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
