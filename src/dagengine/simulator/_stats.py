"""Counters behind GET /stats; totals that can be derived (429s, 5xx) are derived."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from ._answers import prompt_key
from ._wire import Reply

RECENT_REQUESTS = 50  # request bodies kept for GET /requests, newest last
# Headers that carry keys: GET /requests shows their scheme ("Bearer") but not the key.
_KEY_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key", "x-portkey-api-key"})


class Stats:
    """What the simulator received and served since it started or was last reset."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.requests = 0
        self.apis: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()
        # model -> [requests, input, output, cache read, cache write tokens]
        self.models: dict[str, list[int]] = {}
        self.prompts: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)

    def received(self, api: str) -> None:
        self.requests += 1
        self.apis[api] += 1

    def logged(self, api: str, path: str, body: Any, headers: Mapping[str, str]) -> None:
        """Keep the body as it came, and the headers with their keys hidden: tests read what
        a client put on the wire."""
        self.recent.append({"api": api, "path": path, "body": body,
                            "headers": {k.lower(): _hidden(k, v) for k, v in headers.items()}})

    def parsed(self, model: str, text: str) -> None:
        self.prompts[prompt_key(text)] += 1
        counts = self.models.get(model)
        if counts is None:
            counts = self.models[model] = [0, 0, 0, 0, 0]
        counts[0] += 1

    def answered(self, model: str, reply: Reply) -> None:
        counts = self.models[model]
        counts[1] += reply.input_tokens
        counts[2] += reply.output_tokens
        counts[3] += reply.cache_read_tokens
        counts[4] += reply.cache_write_tokens

    def to_json(self) -> dict[str, Any]:
        models = {
            model: {
                "requests": c[0],
                "input_tokens": c[1],  # every prompt token, the cache tokens included
                "output_tokens": c[2],
                "cache_read_tokens": c[3],
                "cache_write_tokens": c[4],
            }
            for model, c in self.models.items()
        }
        return {
            "simulated": True,
            "requests": self.requests,
            "responses_by_status": {str(s): n for s, n in sorted(self.statuses.items())},
            "rate_limited": self.statuses[429],
            "server_errors": sum(n for s, n in self.statuses.items() if s >= 500),
            "hangs": self.faults["hang"],
            "resets": self.faults["reset"],
            "malformed": self.faults["malformed"],
            "truncated": self.faults["truncated"],
            "schema_violations": self.faults["schema"],
            "empty_answers": self.faults["empty"],
            "apis": {api: self.apis[api] for api in ("anthropic", "openai", "gemini")},
            "models": models,
            "input_tokens": sum(m["input_tokens"] for m in models.values()),
            "output_tokens": sum(m["output_tokens"] for m in models.values()),
            "cache_read_tokens": sum(m["cache_read_tokens"] for m in models.values()),
            "cache_write_tokens": sum(m["cache_write_tokens"] for m in models.values()),
            "prompts": dict(self.prompts),
        }


def _hidden(name: str, value: str) -> str:
    if name.lower() not in _KEY_HEADERS:
        return value
    scheme, _, key = value.partition(" ")
    return f"{scheme} [redacted]" if key else "[redacted]"
