"""The report page: ReportData as one self-contained HTML document (inline CSS and SVG)."""

from __future__ import annotations

from collections.abc import Sequence

from . import _format as fmt
from ._data import FAILURE_EXAMPLES, ReportData, Timeline
from ._svg import Series, columns, dag, esc, hbars, histogram

ANSWERED, RATE_LIMITED, FAILED = "#4c78a8", "#f58518", "#e45756"
IN_FLIGHT, COMPLETED = "#72b7b2", "#54a24b"
INPUT, OUTPUT = "#4c78a8", "#9ecae9"
LIMITER, BACKOFF = "#b279a2", "#ff9da6"
RETRIED, FINAL = "#f58518", "#e45756"

_CSS = """
:root { color-scheme: light; --ink: #1f2933; --muted: #6b7280; --line: #e5e7eb;
        --panel: #ffffff; --bg: #f6f7f9; --accent: #4c78a8; --bad: #b91c1c; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 40px; }
header { margin-bottom: 18px; }
.eyebrow { color: var(--muted); font-size: 12px; letter-spacing: .08em; text-transform: uppercase; }
h1 { font-size: 26px; margin: 2px 0 6px; }
h2 { font-size: 17px; margin: 0 0 12px; }
.meta { color: var(--muted); margin: 0; }
.meta code { color: var(--ink); }
.status { font-weight: 600; padding: 1px 8px; border-radius: 10px; background: #e5e7eb; }
.status-completed { background: #dcfce7; color: #166534; }
.status-failed { background: #fee2e2; color: #991b1b; }
.status-running, .status-interrupted { background: #fef3c7; color: #92400e; }
.run-error { color: var(--bad); margin: 6px 0 0; }
section.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
                padding: 16px 18px; margin: 0 0 16px; }
.tiles { display: grid; grid-template-columns: repeat(7, 1fr); gap: 10px; margin-bottom: 16px; }
.tile { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
        padding: 10px 12px; }
.tile .label { color: var(--muted); font-size: 12px; }
.tile .value { font-size: 21px; font-weight: 650; margin: 2px 0; white-space: nowrap; }
.tile .sub { color: var(--muted); font-size: 12px; }
.tile.bad .value { color: var(--bad); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px 22px; }
figure { margin: 0 0 10px; min-width: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
figcaption .hint { font-weight: 400; color: var(--muted); font-size: 12px; margin-left: 6px; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg .mark:hover { opacity: .75; }
.keys { font-size: 12px; color: var(--muted); margin: 2px 0 4px; }
.keys i { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
          margin: 0 4px 0 10px; vertical-align: -1px; }
.keys i:first-child { margin-left: 0; }
.empty { color: var(--muted); font-style: italic; margin: 6px 0 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: 650; border-top: 2px solid var(--line); }
td.where { color: var(--muted); font-size: 12px; }
.note { color: var(--muted); font-size: 12px; margin: 8px 0 0; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 20px; }
"""


def render(data: ReportData, version: str) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(_page_title(data))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        _header(data),
        _tiles(data),
        _timeline_panel(data),
        _dag_panel(data),
        _latency_panel(data),
        _cost_panel(data),
        _reliability_panel(data),
        _failures_panel(data),
        f"<footer>dagengine {esc(version)} run report, generated {fmt.when(data.generated_at)}"
        " · one self-contained page: no scripts, no network · figures from "
        f"{esc(data.origin)}</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _page_title(data: ReportData) -> str:
    run = f" · {data.process_id}" if data.process_id else ""
    return f"{data.title}{run} · dagengine run report"


def _header(data: ReportData) -> str:
    meta = []
    if data.process_id:
        meta.append(f"run <code>{esc(data.process_id)}</code>")
    if data.status:
        meta.append(f'<span class="status status-{esc(data.status)}">{esc(data.status)}</span>')
    if data.created_at:
        meta.append(f"started {fmt.when(data.created_at)}")
    if data.totals.wall_seconds is not None:
        meta.append(f"took {fmt.seconds(data.totals.wall_seconds)}")
    meta.append(f"{fmt.count(data.sections)} sections")
    meta.append(f"from {esc(data.origin)}")
    error = f'<p class="run-error">{esc(data.error)}</p>' if data.error else ""
    return (f'<header><div class="eyebrow">dagengine run report</div>'
            f"<h1>{esc(data.title)}</h1><p class=\"meta\">{' · '.join(meta)}</p>{error}"
            "</header>")


def _tile(key: str, label: str, value: float | None, shown: str, sub: str = "",
          bad: bool = False) -> str:
    raw = "" if value is None else repr(value)
    klass = "tile bad" if bad else "tile"
    return (f'<div class="{klass}" data-total="{key}" data-value="{raw}">'
            f'<div class="label">{esc(label)}</div><div class="value">{esc(shown)}</div>'
            f'<div class="sub">{sub}</div></div>')


def _tiles(data: ReportData) -> str:
    t = data.totals
    unknown = "not recorded"
    requests = t.requests
    rps = (f"{fmt.rate(requests / t.wall_seconds)} requests/s"
           if requests and t.wall_seconds else "")
    waits = None if t.limiter_wait is None else t.limiter_wait + (t.backoff_wait or 0.0)
    tiles = [
        _tile("cost", "Cost", t.cost, fmt.money(t.cost),
              f"the cache saved {esc(fmt.money(t.cache_saved))}" if t.cache_saved else
              "USD"),
        _tile("tokens", "Tokens", t.input_tokens + t.output_tokens,
              fmt.count(t.input_tokens + t.output_tokens),
              f"{esc(fmt.count(t.input_tokens))} in · {esc(fmt.count(t.output_tokens))} out"),
        _tile("results", "Results", t.results, fmt.count(t.results),
              f"{fmt.count(t.skipped)} skipped · {fmt.count(t.cached)} from the cache"),
        _tile("failed", "Failed", t.failed, fmt.count(t.failed),
              fmt.plural(len(data.failures), "cause") if t.failed else "none",
              bad=t.failed > 0),
        _tile("requests", "Provider requests", requests,
              unknown if requests is None else fmt.count(requests),
              " · ".join(filter(None, (rps, fmt.plural(t.hedged, "call") + " hedged"
                                       if t.hedged else "")))),
        _tile("rate_limited", "Answered 429", t.rate_limited,
              unknown if t.rate_limited is None else fmt.count(t.rate_limited),
              f"{fmt.plural(t.retries, 'retry', 'retries')} · "
              + (unknown if t.fallbacks is None else fmt.plural(t.fallbacks, "fallback")),
              bad=bool(t.rate_limited)),
        _tile("waited", "Waiting", waits, unknown if waits is None else fmt.seconds(waits),
              "" if t.limiter_wait is None else
              f"{esc(fmt.seconds(t.limiter_wait))} limiter · "
              f"{esc(fmt.seconds(t.backoff_wait or 0.0))} backoff"),
    ]
    return f'<section class="tiles">{"".join(tiles)}</section>'


def _keys(items: Sequence[tuple[str, str]]) -> str:
    return ('<div class="keys">' + "".join(f'<i style="background:{c}"></i>{esc(n)}'
                                           for n, c in items) + "</div>")


def _figure(caption: str, hint: str, body: str, keys: str = "") -> str:
    hint_html = f'<span class="hint">{esc(hint)}</span>' if hint else ""
    return f"<figure><figcaption>{esc(caption)}{hint_html}</figcaption>{keys}{body}</figure>"


def _empty(text: str) -> str:
    return f'<p class="empty">{esc(text)}</p>'


# -- timeline ------------------------------------------------------------------------------


def _timeline_panel(data: ReportData) -> str:
    timeline = data.timeline
    if timeline is None:
        why = ("No timeline: nothing of this run was recorded yet." if data.process_id else
               "No timeline: a ProcessResult keeps no times. Run with a store "
               "(DagEngine(store='runs.db')) and report it with `dagengine runs report "
               "runs.db`.")
        return '<section class="panel"><h2>Timeline</h2>' + _empty(why) + "</section>"
    return ('<section class="panel"><h2>Timeline</h2>' + _timeline(timeline) + "</section>")


def _timeline(t: Timeline) -> str:
    per_second = [[v / t.step for v in values]
                  for values in (t.answered, t.rate_limited, t.failed)]
    what = "provider requests" if t.unit == "requests" else "calls"
    older = ("" if t.unit == "requests" else
             " (this store predates per-request records: calls, from their durations)")
    bucket = f"buckets of {fmt.seconds(t.step)}"
    requests = columns(
        "timeline-requests", f"{what} per second",
        [Series("answered", ANSWERED, per_second[0]),
         Series("answered 429", RATE_LIMITED, per_second[1]),
         Series("failed", FAILED, per_second[2])],
        step=t.step, y_format=fmt.rate, x_format=fmt.offset,
        tip_format=lambda v: f"{fmt.rate(v)}/s")
    in_flight = columns(
        "timeline-in-flight", f"{what} in flight", [Series("in flight", IN_FLIGHT, t.in_flight)],
        step=t.step, y_format=fmt.rate, x_format=fmt.offset,
        tip_format=lambda v: f"{v:.1f} on average", height=120, gap=False)
    completed = columns(
        "timeline-completed", "results completed",
        [Series("results completed", COMPLETED, [float(v) for v in t.completed])],
        step=t.step, y_format=fmt.count, x_format=fmt.offset,
        tip_format=lambda v: fmt.count(v), height=120, gap=False)
    return (_figure(f"{what.capitalize()} per second", f"throughput by outcome, {bucket}{older}",
                    requests, _keys([("answered", ANSWERED), ("answered 429", RATE_LIMITED),
                                     ("failed otherwise", FAILED)]))
            + _figure(f"{what.capitalize()} in flight", "average over each bucket", in_flight)
            + _figure("Results completed", "cumulative, since the start", completed))


# -- the DAG -------------------------------------------------------------------------------


def _dag_panel(data: ReportData) -> str:
    if not data.nodes:
        return '<section class="panel"><h2>The DAG</h2>' + _empty("no dimensions") + "</section>"
    chart = dag("dag", data.nodes, money=fmt.money, count=fmt.count, seconds=fmt.seconds)
    return ('<section class="panel"><h2>The DAG</h2>'
            + _figure("Dimensions and their dependencies",
                      "per dimension: results, failures, cost, tokens, median latency", chart,
                      _keys([("section dimension", "#4c78a8"), ("global dimension", "#f58518")]))
            + "</section>")


# -- latency -------------------------------------------------------------------------------


def _latency_panel(data: ReportData) -> str:
    if not data.latencies:
        return ('<section class="panel"><h2>Latency</h2>'
                + _empty("no answered requests") + "</section>")
    hint = ("time from sending a request to its answer; dashed: p50, p90, p99"
            if data.latency_of == "requests" else
            "duration of each call, retries and waits included; dashed: p50, p90, p99")
    figures = []
    for i, lat in enumerate(data.latencies):
        chart = histogram(f"latency:{i}", lat, seconds=fmt.seconds)
        what = "request" if data.latency_of == "requests" else "call"
        figures.append(_figure(f"{lat.dimension} · {lat.model}",
                               f"{fmt.plural(lat.count, what)}, max {fmt.seconds(lat.max)}",
                               chart))
    return (f'<section class="panel"><h2>Latency</h2><p class="note">{esc(hint)}</p>'
            f'<div class="grid2">{"".join(figures)}</div></section>')


# -- cost ----------------------------------------------------------------------------------


def _cost_panel(data: ReportData) -> str:
    rows = data.costs
    if not rows:
        return ('<section class="panel"><h2>Cost and tokens</h2>'
                + _empty("no provider call reported tokens") + "</section>")
    by: dict[str, dict[str, float]] = {"dimension": {}, "provider": {}, "model": {}}
    tokens: dict[str, list[float]] = {}
    for row in rows:
        for key, name in (("dimension", row.dimension), ("provider", row.provider),
                          ("model", row.model)):
            by[key][name] = by[key].get(name, 0.0) + row.cost
        pair = tokens.setdefault(row.dimension, [0.0, 0.0])
        pair[0] += row.input_tokens
        pair[1] += row.output_tokens
    charts = [
        _figure("Cost by dimension", "USD",
                hbars("cost-by-dimension", "cost by dimension",
                      [(k, [v]) for k, v in by["dimension"].items()], [("cost", INPUT)],
                      value_format=fmt.money)),
        _figure("Tokens by dimension", "input and output",
                hbars("tokens-by-dimension", "tokens by dimension",
                      [(k, v) for k, v in tokens.items()],
                      [("input tokens", INPUT), ("output tokens", OUTPUT)],
                      value_format=fmt.count),
                _keys([("input", INPUT), ("output", OUTPUT)])),
        _figure("Cost by provider", "USD",
                hbars("cost-by-provider", "cost by provider",
                      _ranked(by["provider"]), [("cost", INPUT)], value_format=fmt.money)),
        _figure("Cost by model", "USD",
                hbars("cost-by-model", "cost by model",
                      _ranked(by["model"]), [("cost", INPUT)], value_format=fmt.money)),
    ]
    head = ("<tr><th>dimension</th><th>provider</th><th>model</th><th>mode</th>"
            '<th class="num">calls</th><th class="num">input tokens</th>'
            '<th class="num">output tokens</th><th class="num">cache read</th>'
            '<th class="num">cost</th></tr>')
    body = "".join(
        f"<tr><td>{esc(r.dimension)}</td><td>{esc(r.provider)}</td><td>{esc(r.model)}</td>"
        f'<td>{esc(r.mode)}</td><td class="num">{r.calls:,}</td>'
        f'<td class="num">{r.input_tokens:,}</td><td class="num">{r.output_tokens:,}</td>'
        f'<td class="num">{r.cache_read_tokens:,}</td><td class="num">{fmt.money(r.cost)}</td>'
        "</tr>" for r in rows)
    total = (f'<tr class="total"><td colspan="4">total</td>'
             f'<td class="num">{sum(r.calls for r in rows):,}</td>'
             f'<td class="num">{sum(r.input_tokens for r in rows):,}</td>'
             f'<td class="num">{sum(r.output_tokens for r in rows):,}</td>'
             f'<td class="num">{sum(r.cache_read_tokens for r in rows):,}</td>'
             f'<td class="num">{fmt.money(sum(r.cost for r in rows))}</td></tr>')
    return ('<section class="panel"><h2>Cost and tokens</h2>'
            f'<div class="grid2">{"".join(charts)}</div>'
            f'<table class="costs">{head}{body}{total}</table>'
            '<p class="note">mode: online, or batch for calls through a provider\'s batch API. '
            "Calls answered from the cache cost nothing and are not counted here.</p>"
            "</section>")


def _ranked(values: dict[str, float]) -> list[tuple[str, list[float]]]:
    return [(k, [v]) for k, v in sorted(values.items(), key=lambda kv: -kv[1])]


# -- retries, fallbacks, waits, cache ------------------------------------------------------


def _reliability_panel(data: ReportData) -> str:
    t = data.totals
    figures = []
    if data.attempt_causes:
        chart = hbars("attempt-causes", "failed requests by cause",
                      [(c.cause, [float(c.retried), float(c.final)])
                       for c in data.attempt_causes],
                      [("retried", RETRIED), ("gave up", FINAL)], value_format=fmt.count)
        figures.append(_figure("Failed requests by cause", "then retried (or fell back), or the "
                               "call's last", chart,
                               _keys([("retried", RETRIED), ("gave up", FINAL)])))
    elif t.requests is None:
        figures.append(_figure("Failed requests by cause", "", _empty(
            f"not recorded (retries from the results' attempt counts: {t.retries})")))
    else:
        figures.append(_figure("Failed requests by cause", "", _empty("every request answered")))
    if data.waits and (t.limiter_wait or t.backoff_wait):
        chart = hbars("waits-by-dimension", "waiting by dimension",
                      [(w.dimension, [w.limiter, w.backoff]) for w in data.waits],
                      [("rate limiter", LIMITER), ("retry backoff", BACKOFF)],
                      value_format=fmt.seconds)
        figures.append(_figure("Time spent waiting", "summed over requests",
                               chart, _keys([("rate limiter", LIMITER),
                                             ("retry backoff", BACKOFF)])))
    else:
        figures.append(_figure("Time spent waiting", "", _empty(
            "not recorded" if t.limiter_wait is None else "no request waited")))
    if data.cache:
        chart = hbars("cache-by-dimension", "cache hits by dimension",
                      [(c.dimension, [float(c.hits)]) for c in data.cache],
                      [("cache hits", COMPLETED)], value_format=fmt.count)
        figures.append(_figure("Cache hits", f"saved {fmt.money(t.cache_saved)}", chart))
    else:
        figures.append(_figure("Cache hits", "", _empty("no call was answered from the cache")))
    routes = "".join(f"<tr><td>{esc(route)}</td><td class=\"num\">{n:,}</td></tr>"
                     for route, n in data.fallback_routes.items())
    if routes:
        fallback = ("<table><tr><th>fallback</th><th class=\"num\">calls</th></tr>"
                    f"{routes}</table>")
    else:
        fallback = _empty("not recorded" if t.fallbacks is None else "no call fell back")
    figures.append(_figure("Fallbacks", "calls that went on to another provider", fallback))
    if t.by_target:
        rows = "".join(f"<tr><td>{esc(label)}</td><td class=\"num\">{calls:,}</td>"
                       f"<td class=\"num\">{esc(fmt.money(cost))}</td></tr>"
                       for label, (calls, cost) in sorted(t.by_target.items()))
        figures.append(_figure("Pool targets", "calls each target answered", (
            "<table><tr><th>target</th><th class=\"num\">calls</th>"
            f"<th class=\"num\">cost</th></tr>{rows}</table>")))
    summary = (fmt.plural(t.retries, "retry", "retries") + ", "
               + ("fallbacks not recorded" if t.fallbacks is None
                  else fmt.plural(t.fallbacks, "fallback"))
               + ", " + fmt.plural(t.cached, "cache hit"))
    return ('<section class="panel"><h2>Retries, fallbacks, waits and cache</h2>'
            f'<p class="note">{esc(summary)}</p>'
            f'<div class="grid2">{"".join(figures)}</div></section>')


# -- failures ------------------------------------------------------------------------------


def _failures_panel(data: ReportData) -> str:
    if not data.failures:
        return ('<section class="panel"><h2>Failures</h2>'
                + _empty("no result failed") + "</section>")
    chart = hbars("failures-by-cause", "failed results by cause",
                  [(g.cause, [float(g.count)]) for g in data.failures], [("failed", FAILED)],
                  value_format=fmt.count, width=1120)
    rows = []
    for g in data.failures:
        dims = ", ".join(f"{esc(d)} ({n:,})" for d, n in g.by_dimension.items())
        where = "; ".join(esc(w) for w in g.examples)
        if g.count > len(g.examples):
            where += f"; and {g.count - len(g.examples):,} more"
        rows.append(f'<tr><td>{esc(g.cause)}</td><td class="num">{g.count:,}</td>'
                    f'<td>{dims}</td><td class="where">{where}</td></tr>')
    table = ('<table class="failures"><tr><th>cause</th><th class="num">results</th>'
             f"<th>dimensions</th><th>where (the first {FAILURE_EXAMPLES})</th></tr>"
             + "".join(rows) + "</table>")
    return ('<section class="panel"><h2>Failures</h2>'
            + _figure("Failed results by cause", f"{fmt.count(data.totals.failed)} in all", chart)
            + table + "</section>")
