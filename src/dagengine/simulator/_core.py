"""What happens to one request: scripted step, rate limits, injected fault, latency.

Holds all mutable simulator state; the HTTP layer only translates.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ._answers import count_tokens, input_tokens, prompt_key
from ._batch import Batches
from ._config import FAULT_RATES, LIMIT_FIELDS, ScriptStep, SimulatorConfig
from ._keys import KEY_LIMIT_FIELDS, KeyedLimits
from ._limits import RateLimits
from ._stats import Stats
from ._wire import Prompt, Reply


class Core:
    """Simulator state: config, counters, the pending script, RNGs and rate-limit buckets."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.batches = Batches()
        self.serial = 0
        self.script: deque[ScriptStep] = deque(config.script)
        self._faults = _fault_table(config)
        self._faults_by_prompt: Counter[str] = Counter()
        self._reseed()
        self._rebuild_limits()

    def configure(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """Apply `changes` from now on; buckets and RNGs restart only if their settings change."""
        self.config = self.config.replace(changes)
        self._faults = _fault_table(self.config)
        if "seed" in changes:
            self._reseed()
        if LIMIT_FIELDS & changes.keys():
            self._rebuild_limits()
        if "script" in changes:
            self.script = deque(self.config.script)
        return self.config

    def reset(self) -> None:
        """Back to a fresh start under the current config: counters, script, buckets, RNGs."""
        self.stats.clear()
        self.batches.clear()
        self.script.clear()
        self._faults_by_prompt.clear()
        self._reseed()
        self._rebuild_limits()

    def decide(
        self, token_cost: int, text: str = "", *, api_key: str | None = None
    ) -> tuple[ScriptStep, float | None]:
        """The outcome of the next request for prompt `text` sent with `api_key` and, for a
        429, the seconds to
        wait."""
        if self.script:
            step = self.script.popleft()
            return step, self.config.error_429_retry_after if step == 429 else None
        wait = self.limits_for(api_key).admit(token_cost, time.monotonic())
        if wait:
            return 429, wait
        step = self._draw_fault()
        if step != 200 and self.config.max_faults_per_prompt is not None:
            # The draw happens anyway, so a cap changes which prompts fail, not the sequence.
            key = prompt_key(text)
            if self._faults_by_prompt[key] >= self.config.max_faults_per_prompt:
                return 200, None
            self._faults_by_prompt[key] += 1
        return step, self.config.error_429_retry_after if step == 429 else None

    def limits_for(self, api_key: str | None) -> RateLimits:
        """The buckets a request sent with `api_key` is admitted by (see `_keys`)."""
        return self.keyed_limits.for_key(api_key)

    def accepts(self, api_key: str | None) -> bool:
        """With `api_key` configured, that key and the keys of `key_limits` get in."""
        config = self.config
        return config.api_key is None or api_key == config.api_key or (
            api_key is not None and api_key in (config.key_limits or {})
        )

    def latency(self, text: str) -> float:
        """The delay of an answer: by default a function of the prompt and how often it was
        asked.

        Tied to the request rather than to arrival order, so every client (the engine, a
        baseline, a resumed run) meets the same latency for the same call. With
        `latency_draw="request"` each request takes the next draw of the seeded RNG instead.
        """
        median = self.config.latency_median
        if median is None:
            return self.config.latency
        if self.config.latency_draw == "request":
            return self._latency_rng.lognormvariate(math.log(median), self.config.latency_sigma)
        key = prompt_key(text)
        draw = random.Random(f"latency:{self.config.seed}:{key}:{self.stats.prompts[key]}")
        return draw.lognormvariate(math.log(median), self.config.latency_sigma)

    def reply(self, prompt: Prompt, text: str, *, cache_writes: bool) -> Reply:
        """The reply to `prompt`, with the prompt-cache tokens the config says it reports."""
        reply = reply_to(prompt, text)
        config = self.config
        if reply.input_tokens < max(1, config.cache_min_tokens):
            return reply
        read = min(config.cache_read_tokens, reply.input_tokens)
        write = min(config.cache_write_tokens, reply.input_tokens - read) if cache_writes else 0
        return replace(reply, cache_read_tokens=read, cache_write_tokens=write)

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def _draw_fault(self) -> ScriptStep:
        if not self._faults:
            return 200
        draw = self._fault_rng.random()
        for threshold, step in self._faults:
            if draw < threshold:
                return step
        return 200

    def _reseed(self) -> None:
        # Latencies come from the prompt (see latency()) or an RNG of their own, so faults
        # never shift them.
        seed = self.config.seed
        self._fault_rng = random.Random(f"faults:{seed}")
        self._latency_rng = random.Random(f"latency:{seed}")

    def _rebuild_limits(self) -> None:
        config = self.config
        self.limits = RateLimits(
            config.requests_per_minute,
            config.tokens_per_minute,
            config.burst_seconds,
            time.monotonic(),
        )
        defaults = {name: getattr(config, name) for name in KEY_LIMIT_FIELDS}
        self.keyed_limits = KeyedLimits(config.key_limits, defaults, self.limits)


def reply_to(prompt: Prompt, text: str) -> Reply:
    """The reply with honest usage, cut to max_tokens when it would not fit."""
    prompt_tokens = input_tokens(prompt.text, prompt.messages)
    if prompt.schema is not None:  # a tool or response schema is prompt text to the model too
        prompt_tokens += count_tokens(json.dumps(prompt.schema, separators=(",", ":")))
    output = count_tokens(text)
    if prompt.max_tokens is not None and output > prompt.max_tokens:
        return Reply(text[: prompt.max_tokens * 4], prompt_tokens, prompt.max_tokens, True)
    return Reply(text, prompt_tokens, output, False)


def _fault_table(config: SimulatorConfig) -> list[tuple[float, ScriptStep]]:
    """Cumulative thresholds over [0, 1) for the faults with a non-zero rate."""
    table: list[tuple[float, ScriptStep]] = []
    total = 0.0
    for name, step in FAULT_RATES.items():
        rate = getattr(config, name)
        if rate > 0:
            total += rate
            table.append((total, step))
    return table
