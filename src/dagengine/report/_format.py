"""How the report writes numbers: money, counts, durations, times."""

from __future__ import annotations

import time


def money(value: float) -> str:
    if value == 0:
        return "$0"
    if abs(value) < 0.001:
        return f"${value:.6f}"
    if abs(value) < 10:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def count(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 100_000:
        return f"{value / 1e3:.0f}k"
    return f"{value:,.0f}"


def seconds(value: float) -> str:
    if value < 0.01:
        return f"{value * 1000:.1f} ms" if value >= 0.0001 or value == 0 else "<0.1 ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.2f} s"
    if value < 120:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    if minutes < 120:
        return f"{minutes}m {rest:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def offset(value: float) -> str:
    """A time since the run's start on an axis: 0, 1.5s, 2m."""
    if value == 0:
        return "0"
    if value < 120:
        return f"{value:g}s"
    if value < 7200:
        return f"{value / 60:.3g}m"
    return f"{value / 3600:.3g}h"


def rate(value: float) -> str:
    return f"{value:.3g}"


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def plural(value: int, one: str, many: str | None = None) -> str:
    return f"{count(value)} {one if value == 1 else (many or one + 's')}"
