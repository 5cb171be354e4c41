"""The report's charts as inline SVG, drawn in Python: no script, no library, no network.

Every chart is an `<svg class="chart" data-chart=NAME data-marks=N>` whose data marks
(bars, nodes) carry `class="mark"` and a `<title>` the browser shows on hover, so a chart
reads without JavaScript and a test can count what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from ._data import Latency, Node, nice_step

Format = Callable[[float], str]

INK = "#1f2933"
MUTED = "#6b7280"
GRID = "#e5e7eb"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"
CHAR_W = 6.9  # average width of a 12px label character


def esc(value: object) -> str:
    return escape(str(value), quote=True)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    color: str
    values: Sequence[float]


class Canvas:
    """An SVG being drawn; `mark()` adds a data mark with its tooltip."""

    def __init__(self, chart: str, label: str, width: float, height: float) -> None:
        self.chart = chart
        self.label = label
        self.width = width
        self.height = height
        self.parts: list[str] = []
        self.marks = 0
        self.extra = ""  # more attributes of the <svg> element

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def mark(self, shape: str, tip: str, **attrs: object) -> None:
        self.marks += 1
        attributes = " ".join(f'{k.replace("_", "-")}="{_num(v)}"' for k, v in attrs.items())
        self.parts.append(f'<{shape} class="mark" {attributes}><title>{esc(tip)}</title>'
                          f"</{shape}>")

    def text(self, x: float, y: float, text: str, *, anchor: str = "start", size: int = 11,
             color: str = MUTED, weight: str = "normal", cls: str = "") -> None:
        klass = f' class="{cls}"' if cls else ""
        self.parts.append(
            f'<text{klass} x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" '
            f'font-size="{size}" fill="{color}" font-weight="{weight}">{esc(text)}</text>')

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str = GRID,
             width: float = 1, dash: str = "", cls: str = "") -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        klass = f' class="{cls}"' if cls else ""
        self.parts.append(f'<line{klass} x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" '
                          f'y2="{_num(y2)}" stroke="{color}" stroke-width="{width}"{extra}/>')

    def render(self) -> str:
        w, h = _num(self.width), _num(self.height)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" '
                f'data-chart="{esc(self.chart)}" data-marks="{self.marks}" '
                f'viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
                f'aria-label="{esc(self.label)}" style="{FONT}"{self.extra}>'
                + "".join(self.parts) + "</svg>")


def _num(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return esc(value)


def ticks(high: float, count: int = 4) -> list[float]:
    """Round values from 0 to at least `high` for an axis."""
    if high <= 0:
        return [0.0, 1.0]
    step = nice_step(high / count)
    top = math.ceil(high / step - 1e-9) * step
    return [i * step for i in range(round(top / step) + 1)]


# Tick steps of a time axis past a minute: whole minutes and hours, as a clock reads.
_CLOCK_STEPS = (60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10800.0, 21600.0,
                43200.0, 86400.0)


def time_ticks(total: float, count: int = 8) -> list[float]:
    """Round times from 0 to `total` seconds for an axis: 0.5 s, 10 s, 5 min, 2 h steps."""
    raw = max(total, 1e-6) / count
    step = next((s for s in _CLOCK_STEPS if s >= raw), None) if raw > 30 else nice_step(raw)
    if step is None:
        step = math.ceil(raw / 86400.0) * 86400.0
    return [i * step for i in range(int(total / step + 1e-9) + 1)]


# -- charts --------------------------------------------------------------------------------


def columns(chart: str, label: str, series: Sequence[Series], *, step: float,
            y_format: Format, x_format: Format, tip_format: Format, width: float = 1120,
            height: float = 150, gap: bool = True) -> str:
    """Stacked columns over time buckets of `step` seconds, the x axis in seconds from the
    first bucket."""
    left, right, top, bottom = 56, 12, 10, 22
    canvas = Canvas(chart, label, width, height)
    canvas.extra = ' shape-rendering="crispEdges"'  # no seams between adjacent columns
    count = max((len(s.values) for s in series), default=0)
    sums = [sum(s.values[b] for s in series) for b in range(count)]
    y_ticks = ticks(max(sums, default=0.0))
    y_max = y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def y(value: float) -> float:
        return top + plot_h - plot_h * value / y_max

    for tick in y_ticks:
        canvas.line(left, y(tick), width - right, y(tick))
        canvas.text(left - 6, y(tick) + 4, y_format(tick), anchor="end")
    bar = plot_w / max(count, 1)
    inset = min(1.0, bar * 0.15) if gap else 0.0
    for b in range(count):
        base = 0.0
        x = left + b * bar
        span = f"{x_format(b * step)} to {x_format((b + 1) * step)}"
        for s in series:
            value = s.values[b]
            if value <= 0:
                continue
            y0, y1 = y(base), y(base + value)
            canvas.mark("rect", f"{span}: {tip_format(value)} {s.name}", x=x + inset / 2,
                        y=y1, width=max(bar - inset, 0.5), height=max(y0 - y1, 0.5),
                        fill=s.color)
            base += value
    for tick in time_ticks(count * step):
        x = left + plot_w * tick / (count * step)
        canvas.line(x, top + plot_h, x, top + plot_h + 4, color=MUTED)
        canvas.text(x, height - 6, x_format(tick), anchor="middle")
    canvas.line(left, top + plot_h, width - right, top + plot_h, color=MUTED)
    return canvas.render()


def hbars(chart: str, label: str, rows: Sequence[tuple[str, Sequence[float]]],
          series: Sequence[tuple[str, str]], *, value_format: Format,
          width: float = 550, label_width: float | None = None) -> str:
    """Horizontal bars, one per row, stacked by `series` (name, color)."""
    row_h, top = 24, 6
    longest = max((len(name) for name, _ in rows), default=0)
    if label_width is None:  # as wide as the longest label needs, within reason
        label_width = min(max(longest * CHAR_W + 14, 80), width * 0.45)
    fits = int((label_width - 14) / CHAR_W)
    height = top + row_h * max(len(rows), 1) + 6
    canvas = Canvas(chart, label, width, height)
    totals = [sum(values) for _, values in rows]
    high = max(totals, default=0.0) or 1.0
    bar_w = width - label_width - 90
    for i, ((name, values), total) in enumerate(zip(rows, totals, strict=True)):
        y = top + i * row_h
        shown = name if len(name) <= fits else name[:fits - 1] + "…"
        canvas.text(label_width - 8, y + 15, shown, anchor="end", size=12, color=INK)
        x = label_width
        for (series_name, color), value in zip(series, values, strict=True):
            if value <= 0:
                continue
            w = max(bar_w * value / high, 1.0)
            what = f"{name}: {value_format(value)}"
            if len(series) > 1:
                what += f" {series_name}"
            canvas.mark("rect", what, x=x, y=y + 4, width=w, height=row_h - 8, fill=color,
                        rx=2)
            x += w
        canvas.text(x + 6, y + 15, value_format(total), size=11, color=INK)
    return canvas.render()


def histogram(chart: str, latency: Latency, *, seconds: Format, width: float = 550,
              height: float = 150, color: str = "#4c78a8") -> str:
    """A latency distribution with its p50, p90 and p99 marked."""
    left, right, top, bottom = 40, 12, 24, 22
    label = f"{latency.dimension} on {latency.model}: {latency.count} latencies"
    canvas = Canvas(chart, label, width, height)
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = latency.edges[0], latency.edges[-1]
    span = (high - low) or 1.0
    y_max = ticks(max(latency.counts))[-1]

    def x(value: float) -> float:
        return left + plot_w * (min(max(value, low), high) - low) / span

    for tick in ticks(max(latency.counts), 3):
        y = top + plot_h - plot_h * tick / y_max
        canvas.line(left, y, width - right, y)
        canvas.text(left - 5, y + 4, f"{tick:g}", anchor="end")
    bins = len(latency.counts)
    for b, count in enumerate(latency.counts):
        if not count:
            continue
        x0, x1 = x(latency.edges[b]), x(latency.edges[b + 1])
        h = plot_h * count / y_max
        last = b == bins - 1 and latency.overflow
        what = (f"{seconds(latency.edges[b])} to {seconds(latency.edges[b + 1])}"
                + (" and slower" if last else "") + f": {count} requests")
        canvas.mark("rect", what, x=x0 + 0.5, y=top + plot_h - h, width=max(x1 - x0 - 1, 0.5),
                    height=h, fill=color)
    taken: list[tuple[int, float, float]] = []  # (row, left, right) of labels placed
    for name, value, tone in _quantile_labels(latency, x):
        px = x(value)
        canvas.line(px, top - 2, px, top + plot_h, color=tone, width=1.5, dash="4 3",
                    cls="quantile")
        text = f"{name} {seconds(value)}"
        size = len(text) * CHAR_W
        anchor = "end" if px + 4 + size > width - right else "start"
        lo, hi = (px - 4 - size, px) if anchor == "end" else (px, px + 4 + size)
        # Labels of close quantiles would overlap: the later one goes a line lower.
        row = 0
        while any(r == row and lo < b and a < hi for r, a, b in taken):
            row += 1
        taken.append((row, lo, hi))
        canvas.text(px + (-4 if anchor == "end" else 4), top + 8 + 12 * row, text,
                    anchor=anchor, size=11, color=tone, weight="600")
    for tick in _range_ticks(low, high, 5):
        px = x(tick)
        canvas.line(px, top + plot_h, px, top + plot_h + 4, color=MUTED)
        canvas.text(px, height - 6, seconds(tick), anchor="middle")
    canvas.line(left, top + plot_h, width - right, top + plot_h, color=MUTED)
    return canvas.render()


def _quantile_labels(latency: Latency, x: Callable[[float], float],
                     ) -> list[tuple[str, float, str]]:
    """(label, value, color) of p50, p90 and p99; quantiles drawn at the same place share
    one label ("p90 = p99")."""
    out: list[tuple[str, float, str]] = []
    for name, value, tone in (("p50", latency.p50, "#111827"), ("p90", latency.p90, "#b45309"),
                              ("p99", latency.p99, "#b91c1c")):
        if out and abs(x(out[-1][1]) - x(value)) < 1.0:
            out[-1] = (f"{out[-1][0]} = {name}", out[-1][1], tone)
        else:
            out.append((name, value, tone))
    return out


def _range_ticks(low: float, high: float, count: int) -> list[float]:
    step = nice_step(max(high - low, 1e-9) / count)
    first = math.ceil(low / step - 1e-9) * step
    out = []
    value = first
    while value <= high + 1e-9:
        out.append(value)
        value += step
    return out


# -- the DAG -------------------------------------------------------------------------------

NODE_W, NODE_H, COL_GAP, ROW_GAP, PAD = 230, 74, 64, 18, 14


def dag(chart: str, nodes: Sequence[Node], *, money: Format, count: Format,
        seconds: Format, width: float = 1120) -> str:
    """The dimension graph left to right by dependency level, each node with its totals."""
    columns_: dict[int, list[Node]] = {}
    for node in nodes:
        columns_.setdefault(node.level, []).append(node)
    levels = max(columns_, default=0) + 1
    tallest = max((len(c) for c in columns_.values()), default=1)
    natural_w = PAD * 2 + levels * NODE_W + (levels - 1) * COL_GAP
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP
    canvas = Canvas(chart, f"the DAG: {len(nodes)} dimensions", max(width, natural_w), height)
    offset = max(0.0, (width - natural_w) / 2)
    where: dict[str, tuple[float, float]] = {}
    for level, members in columns_.items():
        column_h = len(members) * NODE_H + (len(members) - 1) * ROW_GAP
        y0 = (height - column_h) / 2
        for i, node in enumerate(members):
            where[node.name] = (offset + PAD + level * (NODE_W + COL_GAP),
                                y0 + i * (NODE_H + ROW_GAP))
    canvas.add('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
               'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
               f'<path d="M0,0 L10,5 L0,10 z" fill="{MUTED}"/></marker></defs>')
    for node in nodes:
        tx, ty = where[node.name]
        for dependency in node.dependencies:
            if dependency not in where:
                continue
            sx, sy = where[dependency]
            x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, tx - 2, ty + NODE_H / 2
            bend = (x2 - x1) / 2
            canvas.add(f'<path class="edge" d="M{_num(x1)},{_num(y1)} C{_num(x1 + bend)},'
                       f'{_num(y1)} {_num(x2 - bend)},{_num(y2)} {_num(x2)},{_num(y2)}" '
                       f'fill="none" stroke="{MUTED}" stroke-width="1.5" '
                       'marker-end="url(#arrow)"/>')
    for node in nodes:
        x, y = where[node.name]
        is_global = node.scope == "global"
        fill, stroke = ("#fdf3e7", "#f58518") if is_global else ("#eef4fb", "#4c78a8")
        tip = (f"{node.name} ({node.scope}): {count(node.results)} results, "
               f"{count(node.failed)} failed, {count(node.skipped)} skipped, "
               f"{count(node.cached)} from the cache, {money(node.cost)}, "
               f"{count(node.tokens)} tokens")
        canvas.mark("rect", tip, x=x, y=y, width=NODE_W, height=NODE_H, rx=8, fill=fill,
                    stroke=stroke, stroke_width=1.5)
        title = node.name if len(node.name) <= 24 else node.name[:23] + "…"
        canvas.text(x + 12, y + 21, title, size=13, color=INK, weight="600")
        if is_global:
            canvas.text(x + NODE_W - 10, y + 21, "global", anchor="end", size=10,
                        color="#b45309", weight="600")
        line2 = f"{count(node.results)} results"
        if node.cached:
            line2 += f" · {count(node.cached)} cached"
        if node.skipped:
            line2 += f" · {count(node.skipped)} skipped"
        canvas.text(x + 12, y + 41, line2, size=11, color=INK, cls="node-results")
        if node.failed:
            canvas.text(x + NODE_W - 10, y + 41, f"{count(node.failed)} failed", anchor="end",
                        size=11, color="#b91c1c", weight="600")
        parts = [money(node.cost), f"{count(node.tokens)} tok"]
        if node.p50 is not None:
            parts.append(f"p50 {seconds(node.p50)}")
        canvas.text(x + 12, y + 60, " · ".join(parts), size=11, color=MUTED)
    return canvas.render()
