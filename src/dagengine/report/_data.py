"""What the run report shows, computed from a stored run or from a ProcessResult.

Everything here is an aggregate whose size does not grow with the run: time buckets,
histogram bins, one row per (dimension, provider, model), the first few sections of each
failure cause. A page of a 100k-section run is as small as one of ten sections.

Sources, richest first: a store holding the run's provider requests (schema version 2:
timeline, per-request latencies, retries, fallbacks, waits), a store written before that
(results with their record time and duration: a timeline of calls), a ProcessResult
(costs, durations, attempts: no timeline).
"""

from __future__ import annotations

import bisect
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import StoreError
from ..store import Attempt, CallRecord, RunStore, all_attempts
from ..types import ProcessResult

TIMELINE_BUCKETS = 120  # at most this many time buckets
HISTOGRAM_BINS = 24
FAILURE_EXAMPLES = 10  # sections listed per failure cause
MAX_CAUSES = 12  # failure causes shown one by one; the rest are added up
NICE_STEPS = (1.0, 2.0, 2.5, 5.0)


# -- the report's content ------------------------------------------------------------------


@dataclass(slots=True)
class Totals:
    """The figures at the top of the page. None: the source did not record it."""

    results: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    cached: int = 0
    cost: float = 0.0
    cache_saved: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    retries: int = 0
    requests: int | None = None
    rate_limited: int | None = None
    fallbacks: int | None = None
    limiter_wait: float | None = None  # seconds requests waited for the client rate limiter
    backoff_wait: float | None = None  # seconds calls waited between attempts
    wall_seconds: float | None = None
    hedged: int = 0  # calls that sent a duplicate request (execution.hedge)
    by_target: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Pool targets, as "provider[target]": (calls answered, cost)."""


@dataclass(slots=True)
class Timeline:
    """Requests (or, from an older store, calls) over time, in equal buckets of `step` s."""

    start: float  # Unix time of the first bucket's start
    step: float
    unit: Literal["requests", "calls"]
    answered: list[int]  # requests that ended answered and accepted, per bucket
    rate_limited: list[int]  # ... answered 429
    failed: list[int]  # ... failed otherwise
    in_flight: list[float]  # average number in flight during the bucket
    completed: list[int]  # results recorded up to the bucket's end (cumulative)

    @property
    def buckets(self) -> int:
        return len(self.answered)


@dataclass(slots=True)
class Latency:
    """The latency distribution of one dimension on one model."""

    dimension: str
    model: str
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    edges: list[float]  # bin edges, len(counts) + 1
    counts: list[int]
    overflow: int  # values above edges[-1], counted in the last bin


@dataclass(slots=True)
class CostRow:
    dimension: str
    provider: str
    model: str
    mode: str  # "online", or "batch" for calls made through a provider's batch API
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost: float = 0.0


@dataclass(slots=True)
class AttemptCause:
    """Failed provider requests of one cause: `retried` were followed by another attempt."""

    cause: str
    retried: int = 0
    final: int = 0


@dataclass(slots=True)
class DimensionWaits:
    dimension: str
    limiter: float = 0.0
    backoff: float = 0.0


@dataclass(slots=True)
class CacheHits:
    dimension: str
    hits: int = 0
    saved: float = 0.0


@dataclass(slots=True)
class FailureGroup:
    cause: str
    count: int
    by_dimension: dict[str, int]
    examples: list[str]  # where, for the first FAILURE_EXAMPLES: "classify, section 7"


@dataclass(slots=True)
class Node:
    """A dimension of the DAG with its totals."""

    name: str
    scope: str
    level: int
    dependencies: list[str]
    results: int = 0
    failed: int = 0
    skipped: int = 0
    cached: int = 0
    cost: float = 0.0
    tokens: int = 0
    p50: float | None = None


@dataclass(slots=True)
class ReportData:
    title: str
    origin: str  # where the figures come from, in words
    process_id: str | None = None
    status: str | None = None
    error: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    sections: int = 0
    totals: Totals = field(default_factory=Totals)
    timeline: Timeline | None = None
    latency_of: Literal["requests", "calls"] = "requests"
    latencies: list[Latency] = field(default_factory=list)
    costs: list[CostRow] = field(default_factory=list)
    attempt_causes: list[AttemptCause] = field(default_factory=list)
    fallback_routes: dict[str, int] = field(default_factory=dict)  # "a -> b": calls
    waits: list[DimensionWaits] = field(default_factory=list)
    cache: list[CacheHits] = field(default_factory=list)
    failures: list[FailureGroup] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    generated_at: float = field(default_factory=time.time)


# -- sources -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Source:
    title: str
    origin: str
    dimensions: list[tuple[str, str]]  # (name, scope) in plan order
    dependencies: dict[str, list[str]]
    calls: list[CallRecord]
    attempts: list[Attempt] | None  # None: not recorded
    section_count: int
    process_id: str | None = None
    status: str | None = None
    error: str | None = None
    created_at: float | None = None
    updated_at: float | None = None


def from_store(store: RunStore, process_id: str | None = None) -> ReportData:
    """The report of a stored run (`process_id` None: the newest run in the store)."""
    if process_id is None:
        runs = store.runs()
        if not runs:
            raise StoreError(f"{store.path} has no runs to report")
        info = runs[0]
    else:
        info = store.run(process_id)
    calls = store.calls(info.process_id)
    attempts: list[Attempt] | None = all_attempts(calls, store.failed_attempts(info.process_id))
    if not attempts and any(_needed_request(c) for c in calls):
        attempts = None  # results written before the store kept requests (schema 1)
    graph = info.plan
    source = _Source(
        title=info.plugin, origin=f"run store {store.path}",
        dimensions=[(str(n), str(s)) for n, s in graph.get("dimensions", [])],
        dependencies={str(k): list(v) for k, v in graph.get("dependencies", {}).items()},
        calls=calls, attempts=attempts, section_count=info.section_count,
        process_id=info.process_id, status=info.status, error=info.error,
        created_at=info.created_at, updated_at=info.updated_at)
    return _build(source)


def from_result(result: ProcessResult, *, graph: Mapping[str, Any] | None = None,
                title: str | None = None) -> ReportData:
    """The report of what a ProcessResult holds: costs, durations and attempts per call
    (no timeline: a result keeps no times). `graph` is a Plan.signature() for the DAG's
    edges; without it the dimensions are read from the results."""
    calls = [CallRecord.of(d, i, r) for i, s in enumerate(result.sections)
             for d, r in s.results.items()]
    calls += [CallRecord.of(d, None, r) for s in result.dropped_sections
              for d, r in s.results.items()]
    calls += [CallRecord.of(d, None, r) for d, r in result.global_results.items()]
    if graph is not None:
        dimensions = [(str(n), str(s)) for n, s in graph.get("dimensions", [])]
        dependencies = {str(k): list(v) for k, v in graph.get("dependencies", {}).items()}
    else:
        names = dict.fromkeys(c.dimension for c in calls
                              if c.dimension not in result.global_results)
        dimensions = [(n, "section") for n in names]
        dimensions += [(n, "global") for n in result.global_results]
        dependencies = {}
    source = _Source(
        title=title or "dagengine run", origin="a ProcessResult (no store: no timeline)",
        dimensions=dimensions, dependencies=dependencies, calls=calls, attempts=None,
        section_count=len(result.sections) + len(result.dropped_sections))
    return _build(source)


def find_stored_run(store: RunStore, result: ProcessResult) -> str | None:
    """The process_id of the stored run `result` came from, or None.

    A result keeps no process_id; the duration of a call, measured to the microsecond, is
    as good as one: the newest runs are checked for a result with the same duration."""
    probe = _probe(result)
    if probe is None:
        return None
    dimension, index, duration = probe
    for info in store.runs()[:50]:
        stored = store.result(info.process_id, dimension, index)
        if stored is not None and stored.metadata.get("duration") == duration:
            return info.process_id
    return None


def _probe(result: ProcessResult) -> tuple[str, int | None, float] | None:
    for index, section in enumerate(result.sections):
        for dimension, r in section.results.items():
            if isinstance(r.metadata.get("duration"), float):
                return dimension, index, r.metadata["duration"]
    for dimension, r in result.global_results.items():
        if isinstance(r.metadata.get("duration"), float):
            return dimension, None, r.metadata["duration"]
    return None


def _needed_request(call: CallRecord) -> bool:
    """A call that had to ask a provider (not skipped, not from the cache)."""
    return bool(call.attempts) and not call.cached and not call.skipped


# -- building ------------------------------------------------------------------------------


def _build(source: _Source) -> ReportData:
    data = ReportData(
        title=source.title, origin=source.origin, process_id=source.process_id,
        status=source.status, error=source.error, created_at=source.created_at,
        updated_at=source.updated_at, sections=source.section_count)
    order = {name: i for i, (name, _) in enumerate(source.dimensions)}
    for c in source.calls:  # results of dimensions the graph does not name still count
        if c.dimension not in order:
            order[c.dimension] = len(order)
            scope = "global" if c.section_index is None else "section"
            source.dimensions.append((c.dimension, scope))
    data.totals = _totals(source.calls)
    data.costs = _costs(source.calls, order)
    data.cache = _cache_hits(source.calls, order)
    data.failures = _failures(source.calls, order, dict(source.dimensions))
    if source.attempts is not None:
        _from_attempts(data, source.attempts, order)
        data.timeline = _timeline(_request_spans(source.attempts), source.calls, "requests")
    else:
        data.latency_of = "calls"
        data.latencies = _latencies(_call_durations(source.calls), order)
        spans = _call_spans(source.calls)
        if spans:
            data.timeline = _timeline(spans, source.calls, "calls")
    data.totals.wall_seconds = _span(source)
    data.nodes = _nodes(source, data.latencies)
    return data


def _priced(call: CallRecord) -> bool:
    """Counted in costs and tokens, as cost.summarize_costs counts: it reported tokens and
    did not come from the cache."""
    return call.input_tokens is not None and not call.cached


def _totals(calls: Sequence[CallRecord]) -> Totals:
    totals = Totals()
    for c in calls:
        totals.results += 1
        if c.error is not None:
            totals.failed += 1
        else:
            totals.ok += 1
        totals.skipped += bool(c.skipped)
        totals.retries += max(0, (c.attempts or 0) - 1)
        totals.hedged += bool(c.hedged)
        if c.target is not None and not c.cached:
            label = f"{c.provider or ''}[{c.target}]"
            answered, cost = totals.by_target.get(label, (0, 0.0))
            totals.by_target[label] = (answered + 1, cost + (c.cost or 0.0))
        if c.cached:
            totals.cached += 1
            totals.cache_saved += c.saved_cost or 0.0
        elif c.input_tokens is not None:
            totals.cost += c.cost or 0.0
            totals.input_tokens += c.input_tokens
            totals.output_tokens += c.output_tokens or 0
            totals.cache_read_tokens += c.cache_read_tokens or 0
    return totals


def _costs(calls: Sequence[CallRecord], order: Mapping[str, int]) -> list[CostRow]:
    rows: dict[tuple[str, str, str, str], CostRow] = {}
    for c in calls:
        if not _priced(c):
            continue
        if not c.model and not (c.input_tokens or c.output_tokens or c.cost):
            continue  # failed before any model answered: it cost nothing and names no model
        key = (c.dimension, c.provider or "unknown", c.model or "unknown", c.mode or "online")
        row = rows.get(key)
        if row is None:
            row = rows[key] = CostRow(*key)
        row.calls += 1
        row.input_tokens += c.input_tokens or 0
        row.output_tokens += c.output_tokens or 0
        row.cache_read_tokens += c.cache_read_tokens or 0
        row.cost += c.cost or 0.0
    return sorted(rows.values(), key=lambda row: (order.get(row.dimension, 0), -row.cost))


def _cache_hits(calls: Sequence[CallRecord], order: Mapping[str, int]) -> list[CacheHits]:
    hits: dict[str, CacheHits] = {}
    for c in calls:
        if c.cached and not c.skipped:
            entry = hits.setdefault(c.dimension, CacheHits(c.dimension))
            entry.hits += 1
            entry.saved += c.saved_cost or 0.0
    return sorted(hits.values(), key=lambda h: order.get(h.dimension, 0))


# Parts of provider messages that differ from one request to the next: ids, long numbers.
_VARYING = re.compile(r"\b(?:req|msg|chatcmpl|resp)[_-][A-Za-z0-9]+|\b[0-9a-f]{16,}\b|\b\d{5,}\b")
_AFTER = re.compile(r"\s*\(after \d+ attempts\)$")


def failure_cause(error: str) -> str:
    """What failed results have in common: the message without its attempt count and ids."""
    text = " ".join(_AFTER.sub("", error).split())
    text = _VARYING.sub("…", text)
    return text if len(text) <= 200 else text[:199] + "…"


def _failures(calls: Sequence[CallRecord], order: Mapping[str, int],
              scopes: Mapping[str, str]) -> list[FailureGroup]:
    groups: dict[str, list[CallRecord]] = defaultdict(list)
    for c in calls:
        if c.error is not None:
            groups[failure_cause(c.error)].append(c)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    out = [_failure_group(cause, members, order, scopes)
           for cause, members in ranked[:MAX_CAUSES]]
    rest = [c for _, members in ranked[MAX_CAUSES:] for c in members]
    if rest:
        others = len(ranked) - MAX_CAUSES
        out.append(_failure_group(f"{others} other causes", rest, order, scopes))
    return out


def _failure_group(cause: str, members: list[CallRecord], order: Mapping[str, int],
                   scopes: Mapping[str, str]) -> FailureGroup:
    by_dimension = Counter(c.dimension for c in members)
    first = sorted(members, key=lambda c: (order.get(c.dimension, 0),
                                           -1 if c.section_index is None else c.section_index))
    return FailureGroup(
        cause=cause, count=len(members),
        by_dimension=dict(sorted(by_dimension.items(), key=lambda kv: order.get(kv[0], 0))),
        examples=[_where(c, scopes) for c in first[:FAILURE_EXAMPLES]])


def _where(c: CallRecord, scopes: Mapping[str, str]) -> str:
    if c.section_index is not None:
        return f"{c.dimension}, section {c.section_index}"
    if scopes.get(c.dimension) == "global":
        return f"{c.dimension} (global)"
    return f"{c.dimension}, a section a transform removed"


# -- from the provider requests ----------------------------------------------------------


def _from_attempts(data: ReportData, attempts: Sequence[Attempt],
                   order: Mapping[str, int]) -> None:
    totals = data.totals
    totals.requests = len(attempts)
    totals.rate_limited = sum(1 for a in attempts if a.status == 429)
    by_call: dict[tuple[str, int | None], list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_call[(a.dimension, a.section_index)].append(a)
    causes: dict[str, AttemptCause] = {}
    waits: dict[str, DimensionWaits] = {}
    routes: Counter[str] = Counter()
    retries = fallbacks = 0
    limiter = backoff = 0.0
    for (dimension, _), trail in by_call.items():
        trail.sort(key=lambda a: a.started_at)
        wait = waits.setdefault(dimension, DimensionWaits(dimension))
        fell_back = False
        for position, a in enumerate(trail):
            queued = max(0.0, a.sent_at - a.started_at)
            wait.limiter += queued
            limiter += queued
            following = trail[position + 1] if position + 1 < len(trail) else None
            if a.error is not None:
                cause = causes.setdefault(a.error, AttemptCause(a.error))
                if following is not None:
                    cause.retried += 1
                else:
                    cause.final += 1
            if following is None:
                continue
            pause = max(0.0, following.started_at - a.ended_at)
            wait.backoff += pause
            backoff += pause
            if following.provider != a.provider:
                routes[f"{a.provider} → {following.provider}"] += 1
                fell_back = True
            else:
                retries += 1
        fallbacks += fell_back
    totals.retries = retries
    totals.fallbacks = fallbacks
    totals.limiter_wait = limiter
    totals.backoff_wait = backoff
    data.attempt_causes = sorted(causes.values(), key=lambda c: (-(c.retried + c.final), c.cause))
    data.fallback_routes = dict(routes.most_common())
    data.waits = sorted(waits.values(), key=lambda w: order.get(w.dimension, 0))
    latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
    for a in attempts:
        if a.ok:
            latencies[(a.dimension, a.model or "unknown")].append(a.ended_at - a.sent_at)
    data.latencies = _latencies(latencies, order)


_Span = tuple[float, float, str]  # (start, end, "answered" | "rate_limited" | "failed")


def _request_spans(attempts: Iterable[Attempt]) -> list[_Span]:
    return [(a.sent_at, a.ended_at, "answered" if a.ok else
             "rate_limited" if a.status == 429 else "failed") for a in attempts]


def _call_spans(calls: Iterable[CallRecord]) -> list[_Span]:
    """From a store without requests: each call from its start (recorded time less its
    duration) to its end, by how it ended."""
    return [(c.recorded_at - c.duration, c.recorded_at,
             "answered" if c.error is None else "failed") for c in calls
            if c.recorded_at is not None and c.duration is not None and _needed_request(c)]


def _call_durations(calls: Iterable[CallRecord]) -> dict[tuple[str, str], list[float]]:
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    for c in calls:
        if c.error is None and c.duration is not None and _needed_request(c):
            durations[(c.dimension, c.model or "unknown")].append(c.duration)
    return durations


def _span(source: _Source) -> float | None:
    """Seconds from the first thing the run did to the last (None: no times recorded)."""
    times = [c.recorded_at for c in source.calls if c.recorded_at is not None]
    if source.attempts:
        times.append(min(a.started_at for a in source.attempts))
        times.append(max(a.ended_at for a in source.attempts))
    elif source.attempts is None:
        times += [s for s, _, _ in _call_spans(source.calls)]
    return max(times) - min(times) if times else None


def _timeline(spans: Sequence[_Span], calls: Sequence[CallRecord],
              unit: Literal["requests", "calls"]) -> Timeline | None:
    recorded = sorted(c.recorded_at for c in calls if c.recorded_at is not None)
    starts = [s for s, _, _ in spans] + recorded[:1]
    ends = [e for _, e, _ in spans] + recorded[-1:]
    if not starts:
        return None
    first, last = min(starts), max(ends)
    step = nice_step(max(last - first, 1e-3) / TIMELINE_BUCKETS)
    start = math.floor(first / step) * step
    count = max(1, math.ceil((last - start) / step + 1e-9))
    series = {"answered": [0] * count, "rate_limited": [0] * count, "failed": [0] * count}
    busy = [0.0] * count
    for begin, end, kind in spans:
        series[kind][_bucket(end, start, step, count)] += 1
        low, high = _bucket(begin, start, step, count), _bucket(end, start, step, count)
        if low == high:
            busy[low] += end - begin
            continue
        for b in range(low, high + 1):
            left, right = start + b * step, start + (b + 1) * step
            busy[b] += max(0.0, min(end, right) - max(begin, left))
    completed = [bisect.bisect_right(recorded, start + (b + 1) * step) for b in range(count)]
    return Timeline(start=start, step=step, unit=unit, answered=series["answered"],
                    rate_limited=series["rate_limited"], failed=series["failed"],
                    in_flight=[b / step for b in busy], completed=completed)


def _bucket(t: float, start: float, step: float, count: int) -> int:
    return min(count - 1, max(0, int((t - start) / step)))


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `raw`."""
    exponent = math.floor(math.log10(raw))
    for factor in NICE_STEPS:
        step = factor * 10.0 ** exponent
        if step >= raw * (1 - 1e-9):
            return step
    return 10.0 ** (exponent + 1)


# -- latency -------------------------------------------------------------------------------


def _latencies(groups: Mapping[tuple[str, str], list[float]],
               order: Mapping[str, int]) -> list[Latency]:
    out = [_distribution(d, m, values) for (d, m), values in groups.items() if values]
    return sorted(out, key=lambda lat: (order.get(lat.dimension, 0), -lat.count))


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly between neighbours."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _distribution(dimension: str, model: str, values: list[float]) -> Latency:
    ordered = sorted(values)
    p50, p90, p99 = (quantile(ordered, q) for q in (0.5, 0.9, 0.99))
    top = ordered[-1]
    # The axis ends a little past p99: one slow outlier must not squeeze the whole shape
    # into a few bins; what lies beyond is counted in the last bin.
    high = top if top <= p99 * 1.3 else p99 * 1.3
    low = ordered[0]
    if high - low < max(1e-4, high * 0.02):  # (nearly) one value: centre it on the axis
        pad = max(high * 0.1, 1e-3)
        low, high = max(0.0, low - pad), high + pad
    width = nice_step(max(high - low, 1e-4) / HISTOGRAM_BINS)
    low = math.floor(low / width) * width
    bins = max(1, math.ceil((high - low) / width - 1e-9))
    edges = [low + i * width for i in range(bins + 1)]
    counts = [0] * bins
    overflow = 0
    for v in ordered:
        b = int((v - low) / width)
        if b >= bins:
            overflow += v > edges[-1]
            b = bins - 1
        counts[b] += 1
    return Latency(dimension, model, len(ordered), p50, p90, p99, top, edges, counts, overflow)


# -- the DAG -------------------------------------------------------------------------------


def _nodes(source: _Source, latencies: Sequence[Latency]) -> list[Node]:
    levels: dict[str, int] = {}
    deps = source.dependencies
    for name, _ in source.dimensions:  # plan order: dependencies come first
        levels[name] = 1 + max((levels.get(d, 0) for d in deps.get(name, ())), default=-1)
    nodes = {name: Node(name, scope, levels[name], list(deps.get(name, ())))
             for name, scope in source.dimensions}
    for c in source.calls:
        node = nodes[c.dimension]
        node.results += 1
        node.failed += c.error is not None
        node.skipped += bool(c.skipped)
        node.cached += bool(c.cached)
        if _priced(c):
            node.cost += c.cost or 0.0
            node.tokens += (c.input_tokens or 0) + (c.output_tokens or 0)
    for node in nodes.values():
        mine = [lat for lat in latencies if lat.dimension == node.name]
        if mine:  # the median of the busiest model's requests
            node.p50 = max(mine, key=lambda lat: lat.count).p50
    return list(nodes.values())
