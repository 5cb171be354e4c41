"""The `dagengine.ratelimit` logger: one line for every change of a group's learned or
allowed rate, saying from what to what and why.

Discrete changes (a limit read from headers, a decrease after 429s, 429s found to be
noise, the rate back at its limit) are INFO; the small steps in between (growing back after
a decrease, probing above an inferred limit) are DEBUG, since they come with every success
for a few seconds.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("dagengine.ratelimit")


class LimitGroup(Protocol):
    """What the lines read of a group (a protocol: _group imports this module)."""

    name: str
    learned_requests_per_minute: float | None
    learned_tokens_per_minute: float | None
    _scale: float

    @property
    def allowed_requests_per_minute(self) -> float | None: ...
    @property
    def allowed_tokens_per_minute(self) -> float | None: ...
    @property
    def inferred_requests_per_minute(self) -> float | None: ...
    @property
    def _known(self) -> bool: ...

Rates = tuple[float | None, float | None]  # allowed requests, tokens per minute

# Why a group's rates were set again (the `why` of LimitGroup._set_rates).
HEADERS = "headers"
DECREASE = "429s"
NOISE = "noise"
RECOVERY = "recovery"
PROBE = "probe"


def allowed(group: LimitGroup) -> Rates:
    return group.allowed_requests_per_minute, group.allowed_tokens_per_minute


def rates_changed(group: LimitGroup, before: Rates, why: str) -> None:
    """Log the change from `before` to the group's rates now, if there is one."""
    after = allowed(group)
    if why != HEADERS and _shown(before) == _shown(after):
        return  # a learned limit is news even when a lower one still sets the rate
    level = logging.INFO
    if why in (RECOVERY, PROBE):
        back = why == RECOVERY and group._scale >= 1.0
        level = logging.INFO if back else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    log.log(level, "rate limit %s: %s -> %s (%s)", group.name, _shown(before), _shown(after),
            _reason(group, why))


def _reason(group: LimitGroup, why: str) -> str:
    if why == HEADERS:
        learned = group.learned_requests_per_minute, group.learned_tokens_per_minute
        return f"the provider's headers announce {_shown(learned)}"
    if why == DECREASE:
        inferred = group.inferred_requests_per_minute
        if inferred is not None and not group._known:
            return f"429s: the provider accepts about {_number(inferred)} requests/min"
        return f"429s: slowed to {group._scale:.0%} of the known limit"
    if why == NOISE:
        return "slowing down made the 429s no rarer: they are noise, not a limit"
    if why == RECOVERY:
        if group._scale >= 1.0:
            return "no 429s since the decrease: back at the full limit"
        return f"no 429s since the decrease: growing back, {group._scale:.0%} of the limit"
    if why == PROBE:
        return "no 429s: probing above the inferred limit"
    return why


def _shown(rates: Rates) -> str:
    requests, tokens = rates
    parts = []
    if requests is not None:
        parts.append(f"{_number(requests)} requests/min")
    if tokens is not None:
        parts.append(f"{_number(tokens)} tokens/min")
    return ", ".join(parts) or "no limit"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
