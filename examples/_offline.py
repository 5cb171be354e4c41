"""A keyword-based stand-in for an LLM, so the examples run with no key and no network.

Swap it for a real provider by changing `providers=` in the example: nothing else changes.
"""

from __future__ import annotations

import asyncio
import json
import random
import re

from dagengine import BaseProvider, ProviderRequest, ProviderResponse, TokenUsage

_CATEGORIES = {
    "spam": ("winner", "prize", "free", "click", "lottery", "urgent"),
    "newsletter": ("newsletter", "unsubscribe", "weekly", "digest", "edition"),
    "work": ("meeting", "deadline", "project", "report", "client", "quarterly"),
    "personal": ("mom", "birthday", "dinner", "weekend", "family"),
}
_POSITIVE = ("great", "love", "excellent", "fast", "happy", "perfect", "recommend")
_NEGATIVE = ("broke", "terrible", "slow", "refund", "disappointed", "worst", "late")


class OfflineProvider(BaseProvider):
    """Answers categorisation, sentiment, topic and summary prompts from the prompt's words."""

    name = "offline"

    def __init__(self, latency: float = 0.01, seed: int = 0) -> None:
        self.latency = latency
        self.rng = random.Random(seed)

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        text = request.input if isinstance(request.input, str) else json.dumps(request.input)
        await asyncio.sleep(self.latency * self.rng.uniform(0.5, 1.5))
        answer = _answer(request.dimension, text.lower())
        return ProviderResponse(
            data=answer,
            metadata={
                "model": request.options.get("model", "offline"),
                "tokens": TokenUsage.of(len(text) // 4, len(json.dumps(answer)) // 4),
            },
        )


def _answer(dimension: str, text: str) -> dict[str, object]:
    words = re.findall(r"[a-z]+", text)
    if "categor" in text:
        scores = {c: sum(words.count(w) for w in ws) for c, ws in _CATEGORIES.items()}
        category = max(scores, key=lambda c: (scores[c], c))
        return {"category": category, "confidence": 0.9, "summary": " ".join(words[-8:])}
    if "sentiment" in dimension:
        score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
        label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
        return {"sentiment": label, "score": score}
    if "topic" in dimension:
        common = sorted({w for w in words if len(w) > 6})[:3]
        return {"topics": common}
    return {"summary": " ".join(words[-12:]), "words": len(words)}
