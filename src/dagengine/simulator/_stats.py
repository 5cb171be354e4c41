"""Counters behind GET /stats; totals that can be derived (429s, 5xx) are derived."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from ._answers import prompt_key
from ._keys import KeyCounts
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
        # model -> [requests, input, output, cache read, cache write tokens, cancelled
        # requests, their input tokens]
        self.models: dict[str, list[int]] = {}
        self.keys: dict[str, KeyCounts] = {}  # by key_fingerprint(), never by the key
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
            counts = self.models[model] = [0] * 7
        counts[0] += 1

    def answered(self, model: str, reply: Reply, key: str = "none") -> None:
        counts = self.models[model]
        counts[1] += reply.input_tokens
        counts[2] += reply.output_tokens
        counts[3] += reply.cache_read_tokens
        counts[4] += reply.cache_write_tokens
        by_key = self.key(key)
        by_key.successes += 1
        by_key.input_tokens += reply.input_tokens
        by_key.output_tokens += reply.output_tokens

    def cancelled(self, model: str, reply: Reply, key: str = "none") -> None:
        """The client hung up while the request was being worked on: providers bill the
        input they have already read, so it is counted apart from the answers."""
        counts = self.models[model]
        counts[5] += 1
        counts[6] += reply.input_tokens
        by_key = self.key(key)
        by_key.cancelled += 1
        by_key.cancelled_input_tokens += reply.input_tokens

    def key(self, fingerprint: str) -> KeyCounts:
        counts = self.keys.get(fingerprint)
        if counts is None:
            counts = self.keys[fingerprint] = KeyCounts()
        return counts

    def to_json(self) -> dict[str, Any]:
        models = {
            model: {
                "requests": c[0],
                "input_tokens": c[1],  # every prompt token, the cache tokens included
                "output_tokens": c[2],
                "cache_read_tokens": c[3],
                "cache_write_tokens": c[4],
                "cancelled": c[5],
                "cancelled_input_tokens": c[6],
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
            "cancelled": sum(m["cancelled"] for m in models.values()),
            "cancelled_input_tokens": sum(m["cancelled_input_tokens"] for m in models.values()),
            # What a provider would charge for input: the answers' and the cancelled requests'.
            "billed_input_tokens": sum(
                m["input_tokens"] + m["cancelled_input_tokens"] for m in models.values()
            ),
            "keys": {name: counts.to_json() for name, counts in self.keys.items()},
        }


def _hidden(name: str, value: str) -> str:
    if name.lower() not in _KEY_HEADERS:
        return value
    scheme, _, key = value.partition(" ")
    return f"{scheme} [redacted]" if key else "[redacted]"
