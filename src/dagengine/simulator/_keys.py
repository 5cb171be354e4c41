"""API keys: which rate-limit buckets a request meets, and what /stats counts per key.

`key_limits` maps a key to limits of its own: `{"key-a": {"requests_per_minute": 1500}}`.
An entry's missing fields take the top-level values (`None` in an entry means no such
limit), so `{}` is a private copy of the top-level limits. The entry `"*"` stands for every
key not listed: each gets buckets of its own from it. Without `"*"`, unlisted keys (and
requests with no key) share the top-level buckets, as they all do with no `key_limits`.

/stats never shows a key, only `key_fingerprint(key)`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError
from ._limits import RateLimits

ANY_KEY = "*"
KEY_LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "burst_seconds")
KeyLimitsConfig = dict[str, dict[str, float | None]]


def key_fingerprint(key: str | None) -> str:
    """How /stats names an API key: "sha256:" and the first 12 hex digits of its SHA-256
    ("none" for a request without a key). Enough to tell keys apart, useless to call with."""
    if key is None:
        return "none"
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def check_key_limits(value: object) -> KeyLimitsConfig | None:
    """`value` validated and copied (so later changes to the caller's dict do not leak in).

    Errors name a key by its fingerprint: a config echoed into a log must not show it.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(
            "simulator.key_limits",
            'a dict of API key -> limits, e.g. {"key-a": {"requests_per_minute": 60}}',
            type(value).__name__,
        )
    checked: KeyLimitsConfig = {}
    for key, entry in value.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(
                "simulator.key_limits key", "a non-empty string", type(key).__name__
            )
        where = f"simulator.key_limits[{_shown(key)}]"
        if not isinstance(entry, Mapping):
            raise ValidationError(where, f"a dict with some of {', '.join(KEY_LIMIT_FIELDS)}",
                                  type(entry).__name__)
        unknown = sorted(set(map(str, entry)) - set(KEY_LIMIT_FIELDS))
        if unknown:
            raise ValidationError(f"{where} field", f"one of {', '.join(KEY_LIMIT_FIELDS)}",
                                  ", ".join(unknown))
        checked[key] = {name: _limit(f"{where}.{name}", name, entry[name]) for name in entry}
    return checked


def _shown(key: str) -> str:
    return ANY_KEY if key == ANY_KEY else key_fingerprint(key)


def _limit(where: str, name: str, value: object) -> float | None:
    if value is None and name != "burst_seconds":
        return None
    low, high = (0.001, 3600.0) if name == "burst_seconds" else (0.001, 1e12)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or not low <= value <= high
    ):
        allowed = f"a number between {low:g} and {high:g}"
        raise ValidationError(where, allowed if name == "burst_seconds" else f"{allowed} or None",
                              value)
    return float(value)


class KeyedLimits:
    """The buckets of each key that has its own; everything else meets `shared`."""

    __slots__ = ("_by_key", "_defaults", "_entries", "shared")

    def __init__(
        self, entries: KeyLimitsConfig | None, defaults: Mapping[str, Any], shared: RateLimits
    ) -> None:
        self._entries = entries or {}
        self._defaults = {name: defaults[name] for name in KEY_LIMIT_FIELDS}
        self.shared = shared
        self._by_key: dict[str | None, RateLimits] = {}

    def for_key(self, key: str | None) -> RateLimits:
        entry = self._entries.get(key) if key is not None else None
        if entry is None:
            entry = self._entries.get(ANY_KEY)
            if entry is None:
                return self.shared
        limits = self._by_key.get(key)
        if limits is None:
            # Built on first use, so a "*" entry costs nothing for keys never seen.
            values = {**self._defaults, **entry}
            limits = self._by_key[key] = RateLimits(
                values["requests_per_minute"],
                values["tokens_per_minute"],
                values["burst_seconds"],
                time.monotonic(),
            )
        return limits


@dataclass(slots=True)
class KeyCounts:
    """What one key's requests came to, for the `keys` section of /stats."""

    requests: int = 0
    successes: int = 0  # answers billed: the 200s, less the malformed and truncated ones
    statuses: Counter[int] = field(default_factory=Counter)
    cancelled: int = 0
    input_tokens: int = 0  # of the answers, as the top-level input_tokens
    output_tokens: int = 0
    cancelled_input_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "rate_limited": self.statuses[429],
            "cancelled": self.cancelled,
            "responses_by_status": {str(s): n for s, n in sorted(self.statuses.items())},
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cancelled_input_tokens": self.cancelled_input_tokens,
            "billed_input_tokens": self.input_tokens + self.cancelled_input_tokens,
        }
