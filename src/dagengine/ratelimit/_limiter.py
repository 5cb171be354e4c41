"""RateLimiter: the limit groups of one run, and the validation of their rate_limits config."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ValidationError
from ._group import Clock, LimitGroup, loop_time, positive

_UNITS: dict[str, tuple[str, float]] = {  # config key -> (limit, factor to per-minute)
    "requests_per_minute": ("requests", 1.0),
    "requests_per_second": ("requests", 60.0),
    "tokens_per_minute": ("tokens", 1.0),
    "tokens_per_second": ("tokens", 60.0),
}


class RateLimiter:
    """All limit groups of one run.

    `config` maps "provider" or "provider/model" to limits: requests_per_minute,
    tokens_per_minute (or requests_per_second, tokens_per_second). A call uses its
    "provider/model" group if configured, else its "provider" group if configured, else a
    group of its own "provider/model" (providers limit each model separately) that starts
    unlimited and learns from headers and 429s.

    Each target of a provider pool (providers/_pool.py) is a group of its own,
    "provider[target]": configured under that name, else a copy of the limits configured
    for "provider" (each key has the limit the provider sets per key), else learned.
    """

    def __init__(
        self,
        config: Mapping[str, Mapping[str, float]] | None = None,
        *,
        clock: Clock = loop_time,
    ) -> None:
        self._clock = clock
        self._groups: dict[str, LimitGroup] = {
            name: LimitGroup(name, requests, tokens, clock=clock)
            for name, (requests, tokens) in _parse_config(config).items()
        }
        self._by_call: dict[tuple[str, str | None], LimitGroup] = {}

    def group(self, provider: str, model: str | None = None, *, ramp: bool = True) -> LimitGroup:
        """The group a call to `provider` / `model` waits in. `ramp=False` (a provider whose
        gateway retries 429s itself) starts a new unconfigured group without the ramp."""
        try:
            return self._by_call[provider, model]
        except KeyError:
            pass
        qualified = f"{provider}/{model}" if model else provider
        name = qualified if qualified in self._groups or provider not in self._groups else provider
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = LimitGroup(name, clock=self._clock, ramp=ramp)
        self._by_call[provider, model] = group
        return group

    def target_group(self, pool: str, target: str, model: str | None = None, *,
                     ramp: bool = True) -> LimitGroup:
        """The group of one target of a provider pool: `"pool[target]"` (or with `/model`)
        when configured; else its own copy of the pool's configured limits (a limit set for
        "pool" is what each of its keys allows); else a group that learns."""
        qualified = f"{pool}[{target}]"
        key = (qualified, model)
        if key in self._by_call:
            return self._by_call[key]
        configured = (f"{qualified}/{model}" if model else None, qualified,
                      f"{pool}/{model}" if model else None, pool)
        source = next((n for n in configured if n is not None and n in self._groups), None)
        if source is None or source.startswith(qualified):
            return self.group(qualified, model, ramp=ramp)
        name = f"{qualified}/{model}" if model and "/" in source else qualified
        group = self._groups.get(name)
        if group is None:
            template = self._groups[source]
            group = self._groups[name] = LimitGroup(
                name, template.requests_per_minute, template.tokens_per_minute,
                clock=self._clock)
        self._by_call[key] = group
        return group

    @property
    def waiting(self) -> int:
        """Calls waiting for capacity, across groups."""
        return sum(group.waiting for group in self._groups.values())

    @property
    def rate_limited(self) -> int:
        """429s reported so far, across groups."""
        return sum(group.rate_limited for group in self._groups.values())

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        return {name: group.snapshot() for name, group in self._groups.items()}


def _parse_config(
    config: Mapping[str, Mapping[str, float]] | None,
) -> dict[str, tuple[float | None, float | None]]:
    """Per group name: (requests_per_minute, tokens_per_minute), validated."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ValidationError(
            "execution.rate_limits",
            "a mapping of 'provider' or 'provider/model' to limits",
            config,
        )
    groups: dict[str, tuple[float | None, float | None]] = {}
    for name, limits in config.items():
        field = f"execution.rate_limits[{name!r}]"
        if not isinstance(name, str) or not name.strip("/ "):
            raise ValidationError(
                "execution.rate_limits", "keyed by 'provider' or 'provider/model'", name
            )
        if not isinstance(limits, Mapping):
            raise ValidationError(field, "a mapping such as {'requests_per_minute': 500}", limits)
        per_minute: dict[str, float] = {}
        for key, value in limits.items():
            if key not in _UNITS:
                raise ValidationError(f"{field}.{key}", "one of " + ", ".join(_UNITS), key)
            if positive(value) is None:
                raise ValidationError(f"{field}.{key}", "a positive number", value)
            unit, factor = _UNITS[key]
            if unit in per_minute:
                raise ValidationError(
                    f"{field}.{key}", f"absent when {unit}_per_minute/second is also set", value
                )
            per_minute[unit] = float(value) * factor
        groups[name] = (per_minute.get("requests"), per_minute.get("tokens"))
    return groups
