"""A keyword-based stand-in for an LLM, so the examples run with no key and no network.

Swap it for a real provider by changing `providers=` in the example: nothing else changes.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable

from dagengine import ProviderRequest, ProviderResponse, TokenUsage
from dagengine.testing import FunctionProvider

_CATEGORIES = {
    "spam": ("winner", "prize", "free", "click", "lottery", "urgent"),
    "newsletter": ("newsletter", "unsubscribe", "weekly", "digest", "edition"),
    "work": ("meeting", "deadline", "project", "report", "client", "quarterly"),
    "personal": ("mom", "birthday", "dinner", "weekend", "family"),
}
_POSITIVE = ("great", "love", "excellent", "fast", "happy", "perfect", "recommend")
_NEGATIVE = ("broke", "terrible", "slow", "refund", "disappointed", "worst", "late")


def offline_provider(answer: Callable[[ProviderRequest], ProviderResponse] | None = None,
                     latency: float = 0.01, seed: int = 0) -> FunctionProvider:
    """A provider named "offline" that answers categorisation, sentiment, topic and summary
    prompts from the prompt's words (`answer`, by default `offline_answer`), after a latency
    of about `latency` seconds."""
    rng = random.Random(seed)
    return FunctionProvider(answer or offline_answer, name="offline", model="offline",
                            latency=lambda request: latency * rng.uniform(0.5, 1.5))


def offline_answer(request: ProviderRequest) -> ProviderResponse:
    text = request.input if isinstance(request.input, str) else json.dumps(request.input)
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
