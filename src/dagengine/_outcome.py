"""What a call's attempts cost, and the metadata its result reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .cost import Pricing
from .types import ProviderResponse, TokenUsage


@dataclass(slots=True)
class Outcome:
    """What the attempts so far cost: usage adds up even over attempts that failed validation."""

    tokens: TokenUsage = field(default_factory=TokenUsage)
    cost: float = 0.0
    attempts: int = 0
    model: str | None = None
    provider: str | None = None
    sent_at: float | None = None  # Unix time the current attempt's request left the limiter

    def add_usage(self, response: ProviderResponse, pricing: Pricing, model: str | None) -> None:
        tokens = response.metadata.get("tokens")
        answered_model = response.metadata.get("model") or model
        if isinstance(tokens, TokenUsage):
            self.tokens += tokens
            self.cost += pricing.cost(answered_model, tokens)
        self.model = answered_model

    def metadata(self, started: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "tokens": self.tokens,
            "cost": self.cost,
            "cached": False,
            "attempts": self.attempts,
            "duration": time.monotonic() - started,
        }


def cached_metadata(
    response: ProviderResponse, pricing: Pricing, model: str | None
) -> dict[str, Any]:
    """A cache hit costs nothing; what it would have cost is reported as saved."""
    tokens = response.metadata.get("tokens")
    answered = response.metadata.get("model") or model
    return {
        "cached": True,
        "cost": 0.0,
        "model": answered,
        "tokens": tokens if isinstance(tokens, TokenUsage) else TokenUsage(),
        "saved_cost": pricing.cost(answered, tokens if isinstance(tokens, TokenUsage) else None),
    }
