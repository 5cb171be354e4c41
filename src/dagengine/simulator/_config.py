"""SimulatorConfig: every knob of the simulator, shared by the constructor, the CLI and /config.

Each field carries its CLI help in its metadata, so the flags, the subprocess launcher and
the HTTP /config endpoint are all derived from this one definition.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ValidationError
from ._keys import KeyLimitsConfig, check_key_limits

Fault = Literal["hang", "reset", "malformed", "truncated", "schema", "empty"]
ScriptStep = int | Fault
"""One scripted outcome: an HTTP status (200 = a normal answer) or a named fault."""

FAULTS: tuple[Fault, ...] = ("hang", "reset", "malformed", "truncated", "schema", "empty")
SCRIPT_STATUSES = frozenset({200, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504, 529})

# Field name -> the fault it injects; their rates share one uniform draw per request.
FAULT_RATES: dict[str, int | Fault] = {
    "error_429_rate": 429,
    "error_500_rate": 500,
    "error_503_rate": 503,
    "hang_rate": "hang",
    "reset_rate": "reset",
    "malformed_rate": "malformed",
    "truncated_rate": "truncated",
    "schema_violation_rate": "schema",
    "empty_rate": "empty",
}
LIMIT_FIELDS = frozenset(
    {"requests_per_minute", "tokens_per_minute", "burst_seconds", "key_limits"}
)
LATENCY_DRAWS = ("prompt", "request")


def _opt(default: Any, help: str, *aliases: str) -> Any:
    return field(default=default, metadata={"help": help, "aliases": aliases})


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated provider behaves. Times are in seconds, rates are probabilities."""

    latency: float = _opt(0.0, "fixed delay before every answer")
    latency_median: float | None = _opt(None, "median of a lognormal delay (replaces --latency)")
    latency_sigma: float = _opt(0.0, "sigma of the lognormal delay")
    seed: int = _opt(0, "seed of the RNG that draws latencies and faults")
    requests_per_minute: float | None = _opt(None, "requests-per-minute limit", "--rpm")
    tokens_per_minute: float | None = _opt(
        None, "tokens-per-minute limit (input tokens + max_tokens)", "--tpm"
    )
    burst_seconds: float = _opt(
        1.0, "bucket capacity, in seconds of the per-minute rate (below 1: a smaller burst)"
    )
    rate_limit_headers: bool = _opt(
        True,
        "send rate-limit headers and retry-after-ms; false: a 429 carries only retry-after in "
        "whole seconds, as Gemini and many OpenAI-compatible servers",
    )
    error_429_rate: float = _opt(0.0, "probability of an injected 429")
    error_429_retry_after: float = _opt(1.0, "retry-after sent with injected/scripted 429s")
    error_500_rate: float = _opt(0.0, "probability of a 500")
    error_503_rate: float = _opt(0.0, "probability of a 503")
    hang_rate: float = _opt(0.0, "probability of never answering (until --hang-seconds)")
    hang_seconds: float = _opt(300.0, "how long a hung request is held before the connection drops")
    reset_rate: float = _opt(0.0, "probability of closing the connection without an answer")
    malformed_rate: float = _opt(0.0, "probability of a 200 whose body is not JSON")
    truncated_rate: float = _opt(0.0, "probability of a 200 whose JSON body is cut in half")
    schema_violation_rate: float = _opt(
        0.0, "probability of a valid answer whose text has the wrong JSON fields"
    )
    empty_rate: float = _opt(0.0, "probability of a valid answer whose text is empty")
    max_faults_per_prompt: int | None = _opt(
        None, "at most this many injected faults for one prompt, then it is answered normally"
    )
    script: tuple[ScriptStep, ...] = _opt(
        (), "outcomes for the next requests, in arrival order, e.g. 429,429,200,hang"
    )
    api_key: str | None = _opt(None, "reject requests carrying another key with 401")
    cache_read_tokens: int = _opt(
        0, "prompt tokens each answer reports as read from the prompt cache (capped at the prompt)"
    )
    cache_write_tokens: int = _opt(
        0,
        "prompt tokens each answer reports as written to the prompt cache (Anthropic's "
        "cache_creation_input_tokens; the OpenAI and Gemini formats have no such count)",
    )
    cache_min_tokens: int = _opt(0, "prompts with fewer tokens report no cache tokens")
    batch_delay: float = _opt(0.0, "seconds from a batch's creation until its processing ends")
    batch_item_seconds: float = _opt(
        0.0, "further processing seconds per request of a batch (its requests end one by one)"
    )
    batch_error_rate: float = _opt(
        0.0, "probability that a batch request ends errored (a server error, not billed)"
    )
    batch_expire_rate: float = _opt(0.0, "probability that a batch request ends expired")
    batch_expire_after: float = _opt(
        86_400.0, "completion window: what a batch has not processed by then ends expired"
    )
    batch_cancel_seconds: float = _opt(
        0.0, "how long a cancelled batch stays canceling before it ends"
    )
    batch_max_requests: int | None = _opt(
        None, "requests per batch; none: each API's own (Anthropic 100,000, OpenAI 50,000)"
    )
    batch_max_bytes: int | None = _opt(
        None,
        "bytes per batch body or file; none: each API's own "
        "(Anthropic 256 MB, OpenAI 200 MB, Gemini 20 MB inline)",
    )
    key_limits: KeyLimitsConfig | None = _opt(  # noqa: RUF009 (the default, None, is shared safely)
        None,
        'limits per API key, as JSON: {"key-a": {"requests_per_minute": 1500}, "*": {}}; '
        "an entry's missing fields take the top-level limits ({} = a copy of them); \"*\" "
        "gives each unlisted key a copy of its own, else unlisted keys share the top-level "
        "limits; /stats counts each key under its fingerprint",
    )
    latency_draw: Literal["prompt", "request"] = _opt(
        "prompt",
        "prompt: a latency is a function of the prompt and how often it was sent, so every "
        "client meets the same latency for the same call; request: each request draws the "
        "next latency from the seeded RNG in arrival order",
    )

    def __post_init__(self) -> None:
        _check("latency", self.latency, 0, 3600)
        if self.latency_median is not None:
            _check("latency_median", self.latency_median, 0.0001, 3600)
            if self.latency:
                raise ValidationError(
                    "simulator.latency", "0 when latency_median is set (pick one)", self.latency
                )
        _check("latency_sigma", self.latency_sigma, 0, 10)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValidationError("simulator.seed", "an integer", self.seed)
        for name in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), 0.001, 1e12)
        _check("burst_seconds", self.burst_seconds, 0.001, 3600)
        if not isinstance(self.rate_limit_headers, bool):
            raise ValidationError(
                "simulator.rate_limit_headers", "true or false", self.rate_limit_headers
            )
        if self.max_faults_per_prompt is not None and (
            isinstance(self.max_faults_per_prompt, bool)
            or not isinstance(self.max_faults_per_prompt, int)
            or self.max_faults_per_prompt < 0
        ):
            raise ValidationError(
                "simulator.max_faults_per_prompt",
                "a whole number >= 0, or None for no cap",
                self.max_faults_per_prompt,
            )
        _check("error_429_retry_after", self.error_429_retry_after, 0, 86_400)
        _check("hang_seconds", self.hang_seconds, 0.001, 86_400)
        for name in FAULT_RATES:
            _check(name, getattr(self, name), 0, 1)
        total = sum(getattr(self, name) for name in FAULT_RATES)
        if total > 1 + 1e-9:
            # One uniform draw picks at most one fault, so the rates split [0, 1).
            raise ValidationError("simulator fault rates", "at most 1 in total", round(total, 6))
        object.__setattr__(self, "script", parse_script(self.script))
        for name in ("cache_read_tokens", "cache_write_tokens", "cache_min_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
                raise ValidationError(f"simulator.{name}", "an integer between 0 and 1e9", value)
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValidationError("simulator.api_key", "a string or None", self.api_key)
        _check_batch_fields(self)
        object.__setattr__(self, "key_limits", check_key_limits(self.key_limits))
        if self.latency_draw not in LATENCY_DRAWS:
            raise ValidationError(
                "simulator.latency_draw", " or ".join(LATENCY_DRAWS), self.latency_draw
            )

    def replace(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        """A copy with `changes` applied; unknown names are refused with the valid ones listed."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ValidationError(
                "simulator option", f"one of {', '.join(field_names())}", ", ".join(unknown)
            )
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["script"] = list(self.script)
        return data


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(SimulatorConfig))


def parse_script(steps: str | Iterable[object]) -> tuple[ScriptStep, ...]:
    """Accepts a list of statuses/fault names, or the CLI form "429,429,200,hang"."""
    if isinstance(steps, str):
        steps = [s for s in steps.replace(" ", "").split(",") if s]
    return tuple(_script_step(step) for step in steps)


def _script_step(step: object) -> ScriptStep:
    if isinstance(step, str) and step.isdigit():
        step = int(step)
    if isinstance(step, int) and not isinstance(step, bool) and step in SCRIPT_STATUSES:
        return step
    for fault in FAULTS:
        if step == fault:
            return fault
    allowed = ", ".join([*map(str, sorted(SCRIPT_STATUSES)), *FAULTS])
    raise ValidationError("simulator.script step", f"one of {allowed}", step)


def _check_batch_fields(config: SimulatorConfig) -> None:
    _check("batch_delay", config.batch_delay, 0, 30 * 86_400)
    _check("batch_item_seconds", config.batch_item_seconds, 0, 86_400)
    _check("batch_expire_after", config.batch_expire_after, 0.001, 30 * 86_400)
    _check("batch_cancel_seconds", config.batch_cancel_seconds, 0, 86_400)
    _check("batch_error_rate", config.batch_error_rate, 0, 1)
    _check("batch_expire_rate", config.batch_expire_rate, 0, 1)
    if config.batch_error_rate + config.batch_expire_rate > 1 + 1e-9:
        # One uniform draw per batch request picks its fate.
        total = config.batch_error_rate + config.batch_expire_rate
        raise ValidationError("simulator batch rates", "at most 1 in total", round(total, 6))
    for name in ("batch_max_requests", "batch_max_bytes"):
        value = getattr(config, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValidationError(f"simulator.{name}", "a positive integer or None", value)


def _check(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"simulator.{name}", "a number", value)
    if math.isnan(value) or not low <= value <= high:
        raise ValidationError(f"simulator.{name}", f"between {low:g} and {high:g}", value)
