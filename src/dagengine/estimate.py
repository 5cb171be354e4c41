"""`engine.estimate(sections)`: what a run would call, count, cost and take, before any call.

Every figure comes from the plugin's own hooks and, where the engine has a store, from the
earlier runs of the same plugin in it; none from a provider. Each figure that rests on a
guess says so in `Estimate.notes` and in its dimension's `*_source` fields.

- Calls. One per section for a section dimension, one for a global dimension. A skip hook
  is asked as the run would ask it; when its answer may depend on results that do not exist
  yet, `calls` is an upper bound (`calls_upper_bound`) and `calls_expected` uses what the
  hook answered on stand-in results, or the skip rate of earlier runs. A global dimension's
  transformation may change the section list for what follows: those counts are the
  current list's (or, with an earlier completed run, scaled to that run's calls of the
  dimension per input section), marked `calls_known=False`.
  Calls the store's response cache would answer cost nothing and are counted apart.
- Input tokens. The real prompts: `create_prompt` and `select_provider` for every section,
  or for a seeded random sample scaled to the whole when rendering all of them would take
  longer than RENDER_SECONDS. No tokenizer for Claude or Gemini ships offline, and
  tiktoken downloads its tables at run time, so tokens are counted as 4 ASCII characters or
  1 other character a token plus 3 a message (exactly what the simulator counts), then
  calibrated per dimension against the input tokens that the provider reported for the
  same prompts in earlier runs. Uncalibrated counts carry a wide band into the low and high
  costs.
- Dependencies. A prompt that reads a dependency's result gets the earlier run's result
  for the same section (same content and metadata) when the store has one, which makes the
  prompt exact; else an earlier result of that dimension for another section, else a
  placeholder whose every key reads as a short text (both guesses). A prompt hook that fails
  on them is counted as the average of the dimension's other prompts. Exact prompts are
  looked up in the store's response cache when the engine uses it.
- Output tokens. `max_tokens` (the selection's options, else the provider's config, else its
  default) is the ceiling behind `cost_high`; the average of earlier runs of the same
  dimension gives `cost_expected` and their smallest answer `cost_low`. Without earlier runs
  the expected figure is a guess (half the ceiling, at most GUESS_OUTPUT_CAP tokens).
- Cost. Per call, from `engine.pricing` (the user's table, genai-prices, built-in prices),
  at the batch rates (`Pricing.cost(..., batch=True)`) for a dimension in batch mode. (The
  time estimate is the online one.)
- Time. Call latencies from earlier runs (a lognormal fitted to them, so that a wave of
  calls ends with its slowest), else from this engine's own earlier calls, else a guess.
  The DAG is cut into stages at global dimensions; a stage lasts as long as the longest of
  its work spread over `concurrency` slots (plus the first wave's start-up, one call's CPU
  time after another, as measured in the earlier run), its longest per-section chain, its
  rate limits (ExecutionConfig.rate_limits) and the CPU time of all its calls; global
  dimensions follow the stage they wait for.

`engine.estimate` is synchronous: inside a running event loop the work goes to a thread
with an event loop of its own (_sync.run_sync), and the plugin's async hooks run there.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import Field

from ._preflight import preflight
from .config import ExecutionConfig
from .cost import Pricing
from .errors import DagEngineError
from .graph import Plan
from .plugin import (
    HookContext,
    Hooks,
    Plugin,
    PromptContext,
    call_required,
    implements,
    with_arity,
)
from .providers.base import BaseProvider, ProviderRegistry
from .ready import CallTimes
from .store._cache import cache_key
from .store._codec import CANONICAL, result_from_json
from .types import (
    DimensionResult,
    ProviderRequest,
    ProviderSelection,
    Section,
    TokenUsage,
    _Data,
    to_prompt,
    to_sections,
)


class EngineLike(Protocol):
    """What an estimate reads of a DagEngine (named here so that engine.py may import this)."""

    plugin: Plugin
    execution: ExecutionConfig
    registry: ProviderRegistry
    pricing: Pricing
    store: Any
    cache: bool

    async def plan(self) -> Plan: ...

__all__ = ["DimensionEstimate", "Estimate", "estimate_run"]

T = TypeVar("T")

RENDER_SECONDS = 2.0  # per dimension: past it, the prompts rendered so far stand for all
MIN_SAMPLE = 500  # prompts rendered per dimension before RENDER_SECONDS may cut it short
HISTORY_RUNS = 3  # the most recent runs of the plugin that the estimate learns from
CALIBRATION_CALLS = 50  # earlier calls per dimension whose prompts are rendered again
DEPENDENCY_SAMPLES = 100  # earlier results of a dimension that stand in for missing ones
ASCII_CHARS_PER_TOKEN = 4.0
MESSAGE_TOKENS = 3
UNCALIBRATED_BAND = (0.7, 1.5)  # real tokenizers against the character count, English to code
MIN_BAND = 0.03  # the least uncertainty granted to a calibrated count
GUESS_OUTPUT_SHARE = 0.5
GUESS_OUTPUT_CAP = 500
GUESS_CEILING = 4096  # output tokens a call is assumed to stop at when nothing bounds it
GUESS_LATENCY = 0.5  # seconds, plus GUESS_SECONDS_PER_TOKEN per expected output token
GUESS_SECONDS_PER_TOKEN = 0.02
GUESS_SIGMA = 0.35  # lognormal spread assumed for guessed latencies
# CPU time of one call through an SDK provider (README, benchmark W5: 1.1 ms), and through
# any other provider (0.1 ms): calls cannot start faster than one core runs them.
SDK_CPU_SECONDS = 0.0011
ENGINE_CPU_SECONDS = 0.0001
_GLOBAL_INDEX = -1  # the store's section_index of a global result


# -- the result ----------------------------------------------------------------------------------


class DimensionEstimate(_Data):
    """One dimension's share of an Estimate. Token and cost figures are for all its calls.

    `calls` is the most calls it can make (an upper bound if `calls_upper_bound`);
    `calls_expected` what is expected once skips are counted. Token figures are expected
    ones (`output_tokens_max` is the ceiling). The `*_source` fields say where each figure
    comes from; a source starting with "guess" is one.
    """

    scope: Literal["section", "global"] = "section"
    calls: int = 0
    calls_expected: int = 0
    calls_upper_bound: bool = False
    calls_known: bool = True  # False: a transformation before it may change the section list
    cached_calls: int = 0  # answered by the store's response cache: no call, no cost
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    input_tokens_source: str = ""
    output_tokens: int = 0
    output_tokens_max: int = 0
    output_tokens_source: str = ""
    output_tokens_max_source: str = ""
    cost_low: float = 0.0
    cost_expected: float = 0.0
    cost_high: float = 0.0
    seconds_per_call: float = 0.0
    seconds_source: str = ""
    notes: list[str] = Field(default_factory=list)


class Estimate(_Data):
    """What a run of these sections would do, found before any provider call.

    `calls` is by dimension and an upper bound where skip hooks may skip; `input_tokens` and
    `output_tokens` are expected totals; `cost_low` / `cost_expected` / `cost_high` in USD;
    `seconds_expected` the wall time. `notes` says which figures are guesses; `dimensions`
    has the detail of each.
    """

    plugin: str = ""
    sections: int = 0
    concurrency: int = 1
    calls: dict[str, int] = Field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_max: int = 0
    cost_low: float = 0.0
    cost_expected: float = 0.0
    cost_high: float = 0.0
    seconds_expected: float = 0.0
    currency: str = "USD"
    dimensions: dict[str, DimensionEstimate] = Field(default_factory=dict)
    history: list[str] = Field(default_factory=list)  # the earlier runs it learned from
    notes: list[str] = Field(default_factory=list)

    def table(self) -> str:
        """The estimate as a plain-text table, then the notes."""
        return _table(self)

    def __str__(self) -> str:
        return self.table()


# -- the estimate --------------------------------------------------------------------------------


async def estimate_run(engine: EngineLike, sections: Iterable[Any],
                       call_times: CallTimes | None = None) -> Estimate:
    """The Estimate of `engine.process(sections)`; raises what process() would raise first."""
    items = to_sections(sections)
    notes = _Notes()
    hooks = Hooks(engine.plugin, notes.hook_failed, strict=False)
    items = await _pre_processed(hooks, engine, items, notes)
    plan = await engine.plan()
    await preflight(engine.plugin, plan, items, engine.registry, "estimate")
    history = _History.open(engine.store, engine.plugin, plan, items, notes,
                            cache=bool(engine.cache))
    try:
        job = _Job(engine, plan, items, hooks, history, notes, call_times)
        await history.calibrate(job)
        for name in plan.order:
            job.samples[name] = await job.sample(name)
        return job.result()
    finally:
        history.close()


async def _pre_processed(hooks: Hooks, engine: EngineLike, items: list[Section],
                         notes: _Notes) -> list[Section]:
    """The sections after before_process_start, which may replace them as in a run."""
    started = await hooks.call("before_process_start", HookContext(
        process_id="estimate", sections=items,
        dimensions=[d if isinstance(d, str) else d.name for d in engine.plugin.dimensions]),
        None)
    if isinstance(started, Mapping) and started.get("sections") is not None:
        replaced = to_sections(started["sections"], "before_process_start(ctx)['sections']")
        notes.add(f"before_process_start replaced the {len(items)} sections with "
                  f"{len(replaced)}")
        return replaced
    return items


class _Notes:
    """The estimate's notes, each said once, and the hooks that failed while it asked them:
    counted by hook and exception type, with the first message as the example."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failures: Counter[str] = Counter()
        self._examples: dict[str, str] = {}

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)

    async def hook_failed(self, hook: str, error: BaseException) -> None:
        kind = f"{hook} raised {type(error).__name__}"
        self._examples.setdefault(kind, f"{kind}: {error}")
        self.failures[kind] += 1

    def add_failures(self) -> None:
        for kind, count in self.failures.items():
            self.add(f"{self._examples[kind]} ({count} time{'s' if count > 1 else ''} while "
                     "estimating; those calls are counted as made)")


# -- counting tokens -----------------------------------------------------------------------------


def count_tokens(prompt: str | list[dict[str, Any]], system: Any = None) -> int:
    """Tokens of a prompt as the simulator counts them (see the module docstring)."""
    texts = [str(system)] if system else []
    if isinstance(prompt, str):
        texts.append(prompt)
    else:
        texts.extend(_message_text(m.get("content")) for m in prompt)
    chars = sum(map(len, texts)) + max(0, len(texts) - 1)  # joined by newlines
    ascii_chars = sum(len(t.encode("ascii", "ignore")) for t in texts) + max(0, len(texts) - 1)
    return math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN + (chars - ascii_chars)) \
        + MESSAGE_TOKENS * len(texts)


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: their text parts
        return "\n".join(str(b.get("text", "")) if isinstance(b, Mapping) else str(b)
                         for b in content)
    return "" if content is None else str(content)


@dataclass(slots=True)
class _Calibration:
    """Provider tokens per counted token for a dimension's prompts, from earlier calls."""

    ratio: float = 1.0
    low: float = UNCALIBRATED_BAND[0]
    high: float = UNCALIBRATED_BAND[1]
    calls: int = 0

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, int]]) -> _Calibration:
        """From (counted, reported) token pairs of single-attempt calls."""
        counted = sum(c for c, _ in pairs)
        reported = sum(r for _, r in pairs)
        if not pairs or counted <= 0 or reported <= 0:
            return cls()
        ratios = [r / c for c, r in pairs if c > 0]
        ratio = reported / counted
        return cls(ratio, min(min(ratios), ratio * (1 - MIN_BAND)),
                   max(max(ratios), ratio * (1 + MIN_BAND)), len(pairs))

    @property
    def source(self) -> str:
        if not self.calls:
            return "guess: characters counted (4 a token), not calibrated"
        return f"prompts counted, calibrated on {self.calls} earlier calls (x{self.ratio:.3f})"


# -- what earlier runs in the store tell ---------------------------------------------------------


@dataclass(slots=True)
class _StoredCall:
    process_id: str
    index: int | None
    ok: bool
    cached: bool
    skipped: bool
    attempts: int
    duration: float | None
    recorded_at: float | None  # when it ended (time.time())
    input_tokens: int | None
    output_tokens: int | None
    model: str | None

    @property
    def paid(self) -> bool:
        """A call a provider answered (and billed): not a cache hit, not a skip."""
        return not self.cached and not self.skipped and self.output_tokens is not None


@dataclass(eq=False)
class _StoredRun:
    process_id: str
    section_count: int
    status: str
    conn: sqlite3.Connection = field(repr=False)
    section_keys: list[bytes] | None = None
    _inputs: list[Section] | None = field(default=None, repr=False)
    _texts: dict[str, dict[int, str]] = field(default_factory=dict, repr=False)
    _parsed: dict[tuple[str, int], DimensionResult | None] = field(default_factory=dict,
                                                                   repr=False)

    @property
    def inputs(self) -> list[Section]:
        if self._inputs is None:
            self._inputs = self.sections("input")
        return self._inputs

    def result(self, dimension: str, index: int | None) -> DimensionResult | None:
        """The stored result, read with all of its dimension's at the first ask: a prompt
        of every section may need one."""
        key = _GLOBAL_INDEX if index is None else index
        if (dimension, key) in self._parsed:
            return self._parsed[dimension, key]
        texts = self._texts.get(dimension)
        if texts is None:
            texts = self._texts[dimension] = dict(self.conn.execute(
                "SELECT section_index, result FROM results WHERE process_id = ? AND "
                "dimension = ?", (self.process_id, dimension)))
        text = texts.get(key)
        found = self._parsed[dimension, key] = _result(text) if text is not None else None
        return found

    def sample_results(self, dimension: str) -> list[DimensionResult]:
        rows = self.conn.execute(
            "SELECT result FROM results WHERE process_id = ? AND dimension = ? AND ok = 1 "
            "LIMIT ?", (self.process_id, dimension, DEPENDENCY_SAMPLES)).fetchall()
        return [r for (text,) in rows if (r := _result(text)) is not None]

    def sections(self, kind: str = "input") -> list[Section]:
        rows = self.conn.execute(
            "SELECT sections FROM sections WHERE process_id = ? AND kind = ? ORDER BY chunk",
            (self.process_id, kind)).fetchall()
        return [Section(content=content, metadata=metadata)
                for (text,) in rows for content, metadata in json.loads(text)]


def _result(text: str) -> DimensionResult | None:
    try:
        return result_from_json(text)
    except ValueError:  # written by a dagengine that stored other fields: not usable here
        return None


def _section_key(section: Section) -> bytes:
    """What identifies a section across runs: its content and metadata, as the store hashes."""
    text = CANONICAL.encode([section.content, section.metadata])
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class _History:
    """Earlier runs of the plugin in the engine's store, read through a read-only connection."""

    def __init__(self, conn: sqlite3.Connection | None = None, runs: Sequence[_StoredRun] = (),
                 items: Sequence[Section] = (), cache_keys: frozenset[str] = frozenset()) -> None:
        self.conn = conn
        self.runs = list(runs)
        self.calls: dict[str, list[_StoredCall]] = {}
        self.calibration: dict[str, _Calibration] = {}
        self.cache_keys = cache_keys
        self._samples: dict[str, list[DimensionResult]] = {}
        self._by_key: dict[bytes, tuple[_StoredRun, int]] = {}
        self.same_input: _StoredRun | None = None
        self._current_keys = [_section_key(s) for s in items] if self.runs else []
        for run in reversed(self.runs):  # the most recent run wins
            run.section_keys = [_section_key(s) for s in run.inputs]
            self._by_key.update((k, (run, j)) for j, k in enumerate(run.section_keys))
        self.same_input = next(
            (r for r in self.runs if r.section_keys == self._current_keys), None)

    @classmethod
    def open(cls, store: Any, plugin: Any, plan: Plan, items: list[Section], notes: _Notes,
             *, cache: bool) -> _History:
        """What the store knows; `cache`: read the response cache's keys too."""
        path = getattr(store, "path", None)
        if store is None or path is None:
            return cls()
        try:
            conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            notes.add(f"the store {path} could not be read ({exc}): no earlier runs used")
            return cls()
        try:
            history = cls._read(conn, plugin, plan, items, with_cache=bool(cache))
        except sqlite3.Error as exc:
            conn.close()
            notes.add(f"the store {path} could not be read ({exc}): no earlier runs used")
            return cls()
        return history

    @classmethod
    def _read(cls, conn: sqlite3.Connection, plugin: Any, plan: Plan, items: list[Section],
              *, with_cache: bool) -> _History:
        plugin_id = str(getattr(plugin, "id", None) or type(plugin).__name__)
        rows = conn.execute(
            "SELECT process_id, section_count, status FROM runs WHERE plugin = ? AND EXISTS "
            "(SELECT 1 FROM results x WHERE x.process_id = runs.process_id) "
            "ORDER BY created_at DESC LIMIT ?", (plugin_id, HISTORY_RUNS)).fetchall()
        runs = [_StoredRun(pid, count, status, conn) for pid, count, status in rows]
        cache = frozenset(key for (key,) in conn.execute("SELECT key FROM cache")) \
            if with_cache else frozenset()
        history = cls(conn, runs, items, cache)
        for run in runs:
            for row in conn.execute(
                "SELECT dimension, section_index, ok, json_extract(result, '$.metadata.cached'), "
                "json_extract(result, '$.metadata.skipped'), "
                "json_extract(result, '$.metadata.attempts'), "
                "json_extract(result, '$.metadata.duration'), "
                "json_extract(result, '$.metadata.tokens.input_tokens'), "
                "json_extract(result, '$.metadata.tokens.output_tokens'), "
                "json_extract(result, '$.metadata.model'), recorded_at "
                "FROM results WHERE process_id = ?", (run.process_id,)):
                (dimension, index, ok, cached, skip, attempts, duration, tin, tout, model,
                 recorded_at) = row
                if dimension not in plan.dimensions:
                    continue
                history.calls.setdefault(dimension, []).append(_StoredCall(
                    run.process_id, None if index == _GLOBAL_INDEX else index, bool(ok),
                    bool(cached), bool(skip), int(attempts or 1), _float(duration),
                    _float(recorded_at), _int(tin), _int(tout), model))
        return history

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @property
    def process_ids(self) -> list[str]:
        return [r.process_id for r in self.runs]

    def paid(self, dimension: str) -> list[_StoredCall]:
        return [c for c in self.calls.get(dimension, ()) if c.paid]

    def stagger(self) -> float | None:
        """Seconds between the starts of the calls of an earlier run's first wave: the CPU
        time the engine, the SDK and the transport spend to start one call, as measured."""
        found = []
        for run in self.runs:
            ends: list[float] = []
            starts: list[float] = []
            for calls in self.calls.values():
                for c in calls:
                    if (c.process_id == run.process_id and c.paid and c.duration is not None
                            and c.recorded_at is not None):
                        ends.append(c.recorded_at)
                        starts.append(c.recorded_at - c.duration)
            if not ends:
                continue
            first_end = min(ends)
            wave = sorted(s for s in starts if s < first_end)  # started before any slot freed
            if len(wave) >= 2:
                found.append((wave[-1] - wave[0]) / (len(wave) - 1))
        return statistics.median(found) if found else None

    def skip_rate(self, dimension: str) -> float | None:
        calls = self.calls.get(dimension, [])
        if not calls:
            return None
        return sum(1 for c in calls if c.skipped) / len(calls)

    def calls_per_section(self, dimension: str, after: Sequence[str]) -> float | None:
        """Calls of `dimension` per input section in the latest completed run in which the
        globals `after` ran: how their transformations changed the section list."""
        for run in self.runs:
            if run.status != "completed" or not run.section_count:
                continue
            if any(c.process_id == run.process_id for g in after for c in self.calls.get(g, ())):
                count = sum(1 for c in self.calls.get(dimension, ())
                            if c.process_id == run.process_id)
                return count / run.section_count
        return None

    def dependency(self, dimension: str, index: int | None, *,
                   exact_index: bool) -> tuple[DimensionResult, bool] | None:
        """An earlier result of `dimension` for current section `index` (None: the global
        one): (result, exact), exact when it was for the same section."""
        if index is None:
            for run in self.runs:
                found = run.result(dimension, None)
                if found is not None:
                    return found, run is self.same_input
            return None
        if exact_index:
            if self.same_input is not None:
                found = self.same_input.result(dimension, index)
                if found is not None:
                    return found, True
            match = self._by_key.get(self._current_keys[index]) if self._by_key else None
            if match is not None:
                found = match[0].result(dimension, match[1])
                if found is not None:
                    return found, True
        samples = self._samples.get(dimension)
        if samples is None:
            samples = self._samples[dimension] = next(
                (s for run in self.runs if (s := run.sample_results(dimension))), [])
        if samples:
            return samples[index % len(samples)], False
        return None

    async def calibrate(self, job: _Job) -> None:
        """Render the prompts of earlier single-attempt calls again and compare their counted
        tokens with the tokens the provider reported."""
        for name in job.plan.order:
            pairs: list[tuple[int, int]] = []
            if name in job.after_transform:
                continue
            for run in self.runs:
                if len(pairs) >= CALIBRATION_CALLS:
                    break
                pairs.extend(await self._pairs(job, run, name, CALIBRATION_CALLS - len(pairs)))
            if pairs:
                self.calibration[name] = _Calibration.of(pairs)

    async def _pairs(self, job: _Job, run: _StoredRun, name: str,
                     wanted: int) -> list[tuple[int, int]]:
        calls = [c for c in self.calls.get(name, ()) if c.process_id == run.process_id
                 and c.paid and c.ok and c.attempts == 1 and c.input_tokens]
        if not calls:
            return []
        calls = calls[::max(1, len(calls) // wanted)]  # spread over the run, not its first few
        sections = run.inputs
        is_global = job.plan.is_global(name)
        pairs: list[tuple[int, int]] = []
        for stored in calls:
            if len(pairs) >= wanted:
                break
            if is_global:
                site, index = sections, None
                deps = _stored_global_deps(job.plan, run, name, len(sections))
            else:
                if stored.index is None or stored.index >= len(sections):
                    continue
                site, index = [sections[stored.index]], stored.index
                deps = _stored_section_deps(job.plan, run, name, stored.index)
            if deps is None:
                continue
            rendered = await job.render(name, site, index, len(sections), deps)
            if rendered is not None and stored.input_tokens:
                pairs.append((rendered[0], stored.input_tokens))
            if is_global:
                break
        return pairs


def _stored_section_deps(plan: Plan, run: _StoredRun, name: str,
                         index: int) -> dict[str, DimensionResult] | None:
    deps = {}
    for dep in plan.dependencies[name]:
        found = run.result(dep, None if plan.is_global(dep) else index)
        if found is None:
            return None
        deps[dep] = found
    return deps


def _stored_global_deps(plan: Plan, run: _StoredRun, name: str,
                        count: int) -> dict[str, DimensionResult] | None:
    if count > 20_000:  # not worth reading every result of the run for one calibration
        return None
    deps = {}
    for dep in plan.dependencies[name]:
        if plan.is_global(dep):
            found = run.result(dep, None)
            if found is None:
                return None
            deps[dep] = found
            continue
        results = [run.result(dep, i) for i in range(count)]
        if any(r is None for r in results):
            return None
        deps[dep] = DimensionResult(data={"sections": results, "aggregated": True,
                                          "total_sections": count})
    return deps


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


class _Placeholder(dict[str, Any]):
    """A dependency's answer that does not exist yet: every key reads as a short text."""

    def __init__(self, dimension: str) -> None:
        super().__init__()
        self.dimension = dimension

    def __missing__(self, key: str) -> str:
        return f"<{self.dimension}.{key}>"


# -- one dimension's calls -----------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    """One call as the estimate saw it (a rendered prompt, or a stand-in for one)."""

    tokens: int | None  # counted prompt tokens; None: the prompt could not be rendered
    provider: str | None = None
    model: str | None = None
    ceiling: int | None = None
    ceiling_source: str = ""
    # The skip hook's answer (None: it gave none), and whether the run's answer is that one:
    # not when the hook saw stand-in dependency results.
    skip: bool | None = False
    skip_known: bool = True
    cached: bool = False
    selected: bool = True  # False: select_provider failed, the run's call would fail
    dependencies: str = ""  # where its dependencies came from: one of _DEPENDENCY_KINDS


# Where a call's dependency results come from, from exact to guessed; a call with several
# counts as its least exact one.
_DEPENDENCY_KINDS = {
    "": "",
    "same": "the same sections' results in an earlier run",
    "other": "guess: earlier results of other sections",
    "placeholder": "guess: placeholders (no earlier result)",
}


@dataclass(slots=True)
class _Samples:
    total: int  # calls the dimension would make, before skips and cache hits
    calls: list[_Call]


class _Job:
    """One estimate: the engine, the plan, the sections, and what it learns per dimension."""

    def __init__(self, engine: EngineLike, plan: Plan, items: list[Section], hooks: Hooks,
                 history: _History, notes: _Notes, call_times: CallTimes | None) -> None:
        self.engine = engine
        self.plan = plan
        self.items = items
        self.hooks = hooks
        self.history = history
        self.notes = notes
        self.call_times = call_times
        self.samples: dict[str, _Samples] = {}
        self._select = with_arity(engine.plugin.select_provider, 3)
        self.transformers = [
            n for n in plan.order if plan.is_global(n) and (
                plan.dimensions[n].transform is not None
                or implements(engine.plugin, "transform_sections"))]
        self.after_transform = _downstream(plan, self.transformers)
        self.rewrites_requests = implements(engine.plugin, "before_provider_execute")
        self.use_cache = bool(engine.cache) and bool(history.cache_keys) \
            and not self.rewrites_requests

    # -- rendering ---------------------------------------------------------------------------

    async def render(
        self, name: str, sections: list[Section], index: int | None, total: int,
        deps: dict[str, DimensionResult],
    ) -> tuple[int, ProviderSelection, str | list[dict[str, Any]]] | None:
        """(counted prompt tokens, selection, prompt) of one call, or None if a hook failed."""
        is_global = self.plan.is_global(name)
        try:
            prompt = to_prompt(await call_required(
                "create_prompt", self.engine.plugin.create_prompt, PromptContext(
                    sections=sections, dimension=name, dependencies=deps, is_global=is_global,
                    section_index=index, process_id="estimate")), name)
            selection = await self._selection(name, sections, index, total)
        except DagEngineError:
            return None
        return count_tokens(prompt, selection.options.get("system")), selection, prompt

    async def _selection(self, name: str, sections: list[Section], index: int | None,
                         total: int) -> ProviderSelection:
        is_global = self.plan.is_global(name)
        return ProviderSelection.from_value(await call_required(
            "select_provider", self._select, name, sections,
            {"is_global": is_global, "section_index": index, "total_sections": total}),
            dimension=name)

    # -- sampling a dimension ----------------------------------------------------------------

    async def sample(self, name: str) -> _Samples:
        if self.plan.is_global(name):
            return _Samples(1, [await self._call(name, None)])
        order = list(range(len(self.items)))
        random.Random(name).shuffle(order)  # a uniform sample whenever rendering stops early
        calls: list[_Call] = []
        started = time.monotonic()
        for count, index in enumerate(order):
            if count >= MIN_SAMPLE and time.monotonic() - started > RENDER_SECONDS:
                self.notes.add(f"{name}: {count:,} of {len(order):,} prompts rendered in "
                               f"{RENDER_SECONDS:g} s; the totals are scaled from them")
                break
            calls.append(await self._call(name, index))
        return _Samples(len(self.items), calls)

    async def _call(self, name: str, index: int | None) -> _Call:
        is_global = index is None
        sections = self.items if index is None else [self.items[index]]
        deps, kind = self._dependencies(name, index)
        exact = kind in ("", "same")
        if self.hooks.has("transform_dependencies"):
            deps = await self.hooks.call("transform_dependencies", HookContext(
                process_id="estimate", dimension=name, is_global=is_global, sections=sections,
                section=None if is_global else sections[0], section_index=index,
                total_sections=len(self.items), dependencies=deps), deps)
        skip = await self._skip(name, sections, index, deps)
        known = not self.hooks.has(_skip_hook(index)) or (exact and skip is not None)
        if skip and known:
            return _Call(tokens=0, skip=True)
        rendered = await self.render(name, sections, index, len(self.items), deps)
        if rendered is None:
            try:
                selection = await self._selection(name, sections, index, len(self.items))
            except DagEngineError:
                return _Call(tokens=None, selected=False)
            call = self._described(None, selection, skip, known)
        else:
            tokens, selection, prompt = rendered
            call = self._described(tokens, selection, skip, known)
            if self.use_cache and exact and known:
                call.cached = self._cached(name, index, selection, prompt)
        call.dependencies = kind
        return call

    def _described(self, tokens: int | None, selection: ProviderSelection, skip: bool | None,
                   known: bool) -> _Call:
        provider = self._provider(selection.provider)
        options = selection.options
        model = options.get("model") or _setting(provider, "default_model")
        ceiling, source = _ceiling(provider, options)
        if selection.fallbacks:
            self.notes.add("fallback providers are not counted: a call that falls back pays "
                           "for the attempts that failed first")
        return _Call(tokens=tokens, provider=selection.provider,
                     model=str(model) if model else None, ceiling=ceiling,
                     ceiling_source=source, skip=skip, skip_known=known)

    def _provider(self, name: str) -> BaseProvider | None:
        registry = self.engine.registry
        return registry.get(name) if registry.has(name) else None

    def _cached(self, name: str, index: int | None, selection: ProviderSelection,
                prompt: str | list[dict[str, Any]]) -> bool:
        """Whether the store's response cache holds this call's first request (call.py)."""
        provider = self._provider(selection.provider)
        if provider is None:
            return False
        request = ProviderRequest(input=prompt, options=dict(selection.options), dimension=name,
                                  is_global=index is None)
        return cache_key(provider.cache_name, request) in self.history.cache_keys

    async def _skip(self, name: str, sections: list[Section], index: int | None,
                    deps: dict[str, DimensionResult]) -> bool | None:
        """The skip hook's answer: True to skip, False to call, None if it failed."""
        hook = _skip_hook(index)
        if not self.hooks.has(hook):
            return False
        failures = self.notes.failures.total()
        answer = await self.hooks.call(hook, HookContext(
            process_id="estimate", dimension=name, is_global=index is None, sections=sections,
            section=None if index is None else sections[0], section_index=index,
            total_sections=len(self.items), dependencies=deps, global_results={}), False)
        if self.notes.failures.total() > failures:
            return None
        return bool(answer)

    def _dependencies(self, name: str,
                      index: int | None) -> tuple[dict[str, DimensionResult], str]:
        """The call's dependency results as the estimate can have them, and their kind."""
        deps: dict[str, DimensionResult] = {}
        kinds = [""]
        exact_index = name not in self.after_transform
        for dep in self.plan.dependencies[name]:
            if self.plan.is_global(dep) or index is not None:
                result, kind = self._one_dependency(dep, None if self.plan.is_global(dep)
                                                    else index, exact_index)
                kinds.append(kind)
            else:  # a global dimension gets every section's result of a section dependency
                results = [self._one_dependency(dep, i, exact_index)
                           for i in range(len(self.items))]
                result = DimensionResult(data={"sections": [r for r, _ in results],
                                               "aggregated": True,
                                               "total_sections": len(results)})
                kinds.extend({k for _, k in results})
            deps[dep] = result
        order = list(_DEPENDENCY_KINDS)
        return deps, max(kinds, key=order.index)

    def _one_dependency(self, dep: str, index: int | None,
                        exact_index: bool) -> tuple[DimensionResult, str]:
        found = self.history.dependency(dep, index, exact_index=exact_index)
        if found is not None:
            return found[0], "same" if found[1] else "other"
        return DimensionResult(data=_Placeholder(dep)), "placeholder"

    # -- the figures -------------------------------------------------------------------------

    def result(self) -> Estimate:
        dims = {name: self._dimension(name) for name in self.plan.order}
        seconds = self._seconds(dims)
        self.notes.add_failures()
        if not self.history.runs:
            self.notes.add("no earlier run of this plugin in the store: output tokens and "
                           "latencies are guesses" if self.engine.store is not None else
                           "no store: output tokens and latencies are guesses (with a store, "
                           "the estimate learns them from earlier runs)")
        notes = list(self.notes.lines)
        shared: dict[str, list[str]] = {}  # a note -> the dimensions it is about
        for name, dim in dims.items():
            for line in dim.notes:
                shared.setdefault(line, []).append(name)
        notes.extend(f"{', '.join(names)}: {line}" for line, names in shared.items())
        return Estimate(
            plugin=self.engine.plugin.id, sections=len(self.items),
            concurrency=self.engine.execution.concurrency,
            calls={n: d.calls for n, d in dims.items()},
            input_tokens=sum(d.input_tokens for d in dims.values()),
            output_tokens=sum(d.output_tokens for d in dims.values()),
            output_tokens_max=sum(d.output_tokens_max for d in dims.values()),
            cost_low=sum(d.cost_low for d in dims.values()),
            cost_expected=sum(d.cost_expected for d in dims.values()),
            cost_high=sum(d.cost_high for d in dims.values()),
            seconds_expected=seconds, dimensions=dims, history=self.history.process_ids,
            notes=notes)

    def _dimension(self, name: str) -> DimensionEstimate:
        samples = self.samples[name]
        dim = DimensionEstimate(scope=self.plan.dimensions[name].scope)
        sampled = samples.calls
        scale = samples.total / len(sampled) if sampled else 0.0
        if name in self.after_transform:
            dim.calls_known = False
            share = self.history.calls_per_section(name, self.transformers)
            if share is not None:
                scale *= share
                dim.notes.append("a transformation before it changes the section list: its "
                                 f"calls are scaled as in the earlier run ({share:.0%} of the "
                                 "sections)")
            else:
                dim.notes.append("a transformation before it may change the section list: its "
                                 "calls are counted for the sections as they are now")
        selected = [c for c in sampled if c.selected]
        if len(selected) < len(sampled):
            dim.notes.append(f"select_provider failed for {len(sampled) - len(selected)} of "
                             f"{len(sampled)} calls: the run's calls fail there, at no cost")
        cached = [c for c in selected if c.cached]
        made = [c for c in selected if not c.cached and not (c.skip and c.skip_known)]
        # After a transformation no call is certain: it may drop every section.
        known = [c for c in made if c.skip_known]
        certain = known if dim.calls_known else []
        unknown = [c for c in made if not c.skip_known]
        skip_rate = self.history.skip_rate(name)
        expected_made = len(known) + sum(
            (1 - (skip_rate or 0.0)) if c.skip is None else float(not c.skip) for c in unknown)
        dim.calls = round(len(made) * scale)
        dim.cached_calls = round(len(cached) * scale)
        dim.calls_expected = round(expected_made * scale)
        if unknown:
            dim.calls_upper_bound = True
            dim.notes.append(
                "its skip hook decides on results that do not exist yet: calls is an upper "
                "bound, the expected count " + (
                    f"as the earlier runs skipped ({skip_rate:.0%})" if skip_rate is not None
                    else "from the hook's answers on stand-in results"))
        calibration = self.history.calibration.get(name, _Calibration())
        dim.input_tokens_source = calibration.source + _dependencies_source(selected)
        if cached:
            dim.notes.append(f"{dim.cached_calls:,} call{'s' if dim.cached_calls != 1 else ''}"
                             " answered by the store's response cache, at no cost")
        if not made:
            return dim
        models = Counter(c.model for c in made)
        dim.model = models.most_common(1)[0][0]
        dim.provider = Counter(c.provider for c in made).most_common(1)[0][0]
        tokens = self._prompt_tokens(made, dim)
        ceiling = self._ceilings(made, dim)
        out_low, out_expected = self._output(name, ceiling, dim)
        if not calibration.calls:
            self.notes.add(
                "input tokens are counted from the prompts at 4 characters a token: no "
                "tokenizer for these models ships offline; real counts differ by about "
                f"{UNCALIBRATED_BAND[0] - 1:+.0%} to {UNCALIBRATED_BAND[1] - 1:+.0%}, as the "
                "low and high costs allow (earlier runs in a store calibrate them)")
        price = self.engine.pricing
        batch = (self.plan.dimensions[name].mode or self.engine.execution.mode) == "batch"
        per_call_low = per_call_expected = per_call_high = 0.0
        for call, counted in zip(made, tokens, strict=True):
            model = call.model
            per_call_low += price.cost(model, TokenUsage.of(
                math.floor(counted * calibration.low), out_low), batch=batch)
            per_call_expected += price.cost(model, TokenUsage.of(
                round(counted * calibration.ratio), round(out_expected)), batch=batch)
            per_call_high += price.cost(model, TokenUsage.of(
                math.ceil(counted * calibration.high), call.ceiling or GUESS_CEILING),
                batch=batch)
        mean = 1 / len(made)
        dim.cost_low = per_call_low * mean * len(certain) * scale
        dim.cost_expected = per_call_expected * mean * expected_made * scale
        dim.cost_high = per_call_high * mean * len(made) * scale
        dim.input_tokens = round(sum(tokens) * mean * calibration.ratio * expected_made * scale)
        dim.output_tokens = round(out_expected * expected_made * scale)
        dim.output_tokens_max = round(ceiling * len(made) * scale)
        unpriced = sorted(m or "(no model)" for m in models if m is None
                          or price.price(m) is None)
        if unpriced:
            dim.notes.append(f"no price known for {', '.join(unpriced)}: costed as 0; add it "
                             "to DagEngine(pricing=...)")
        return dim

    def _prompt_tokens(self, made: list[_Call], dim: DimensionEstimate) -> list[float]:
        """Counted prompt tokens of each call; a stand-in count where a prompt failed."""
        rendered = [c.tokens for c in made if c.tokens is not None]
        failed = len(made) - len(rendered)
        if rendered:
            fallback: float = statistics.fmean(rendered)
        else:
            # No prompt could be rendered: its section alone, as a rough floor.
            fallback = statistics.fmean(count_tokens(s.content) for s in self.items[:1000]) \
                if self.items else float(MESSAGE_TOKENS)
        if failed:
            dim.notes.append(
                f"create_prompt failed for {failed} of {len(made)} prompts on the stand-in "
                "dependency results; counted as " + (
                    "the average of the others" if rendered else "their section's text (a guess)"))
        return [float(c.tokens) if c.tokens is not None else fallback for c in made]

    def _ceilings(self, made: list[_Call], dim: DimensionEstimate) -> float:
        known = [c.ceiling for c in made if c.ceiling is not None]
        sources = Counter(c.ceiling_source for c in made if c.ceiling is not None)
        if len(known) < len(made):
            dim.notes.append(f"no max_tokens bounds the answers: the ceiling of "
                             f"{GUESS_CEILING:,} tokens a call is a guess; set max_tokens")
            dim.output_tokens_max_source = f"guess: {GUESS_CEILING:,} a call"
        else:
            source = sources.most_common(1)[0][0]
            dim.output_tokens_max_source = source
        return statistics.fmean(c.ceiling or GUESS_CEILING for c in made)

    def _output(self, name: str, ceiling: float, dim: DimensionEstimate) -> tuple[int, float]:
        """(least, expected) output tokens of one call."""
        paid = [c.output_tokens for c in self.history.paid(name) if c.output_tokens is not None]
        if paid:
            dim.output_tokens_source = f"earlier runs ({len(paid)} calls)"
            # A max_tokens lowered since caps what the earlier answers say.
            return min(min(paid), math.floor(ceiling)), min(statistics.fmean(paid), ceiling)
        guess = min(ceiling * GUESS_OUTPUT_SHARE, GUESS_OUTPUT_CAP)
        dim.output_tokens_source = (f"guess: {guess:,.0f} a call (half of max_tokens, at most "
                                    f"{GUESS_OUTPUT_CAP})")
        return 1, guess

    # -- time --------------------------------------------------------------------------------

    def _seconds(self, dims: dict[str, DimensionEstimate]) -> float:
        latency = {name: self._latency(name, dims[name]) for name in self.plan.order}
        for name, dim in dims.items():
            dim.seconds_per_call = latency[name].mean
            dim.seconds_source = latency[name].source
        stages = _stages(self.plan)
        concurrency = self.engine.execution.concurrency
        stagger = self.history.stagger()
        total = 0.0
        for stage in range(max(stages.values(), default=-1) + 1):
            members = [n for n in self.plan.order if stages[n] == stage]
            parallel = [n for n in members if not self.plan.is_global(n)
                        or not _waits_in_stage(self.plan, n, stages)]
            barrier = [n for n in members if n not in parallel]
            total += self._stage_seconds(parallel, dims, latency, concurrency, stagger)
            total += max((latency[n].max_of(1) for n in barrier if dims[n].calls_expected),
                         default=0.0)
        return total

    def _stage_seconds(self, names: list[str], dims: dict[str, DimensionEstimate],
                       latency: dict[str, _Latency], concurrency: int,
                       stagger: float | None) -> float:
        calls = {n: dims[n].calls_expected for n in names if dims[n].calls_expected}
        if not calls:
            return 0.0
        count = sum(calls.values())
        work = sum(calls[n] * latency[n].mean for n in calls)
        mean = work / count
        tails = max(latency[n].max_of(min(calls[n], concurrency)) - latency[n].mean
                    for n in calls)
        if count <= concurrency:
            spread = max(latency[n].max_of(calls[n]) for n in calls)
        else:
            spread = work / concurrency + tails
        chain = _longest_chain(self.plan, list(calls), latency) + tails
        per_call = {n: self._cpu_seconds(dims[n]) if stagger is None else stagger for n in calls}
        cpu = sum(calls[n] * per_call[n] for n in calls)
        limited, group = self._rate_seconds(names, dims)
        rate = limited + mean
        # The first wave's calls start one after another, each after the CPU time of the
        # one before: the stage ends that much after its slowest call would.
        first_wave = min(count, concurrency) * max(per_call.values())
        if group and rate > max(spread + first_wave, chain, cpu):
            self.notes.add(f"time: the rate limit of {group!r} (ExecutionConfig.rate_limits) "
                           f"sets the pace of {', '.join(calls)}")
        return max(spread + first_wave, chain, cpu, rate)

    def _cpu_seconds(self, dim: DimensionEstimate) -> float:
        provider = self._provider(dim.provider) if dim.provider else None
        return SDK_CPU_SECONDS if provider is not None and hasattr(provider, "settings") \
            else ENGINE_CPU_SECONDS

    def _rate_seconds(self, names: list[str],
                      dims: dict[str, DimensionEstimate]) -> tuple[float, str]:
        """How long the configured rate limits make the stage's calls last at least, and the
        limit group that takes longest."""
        limits = _rate_limits(self.engine.execution.rate_limits)
        if not limits:
            return 0.0, ""
        use: dict[str, list[float]] = {}  # group -> [requests, tokens]
        for name in names:
            dim = dims[name]
            if not dim.calls_expected or dim.provider is None:
                continue
            qualified = f"{dim.provider}/{dim.model}" if dim.model else dim.provider
            group = qualified if qualified in limits else dim.provider
            if group not in limits:
                continue
            totals = use.setdefault(group, [0.0, 0.0])
            totals[0] += dim.calls_expected
            totals[1] += dim.input_tokens + dim.output_tokens
        slowest, seconds = "", 0.0
        for group, (requests, tokens) in use.items():
            per_minute_requests, per_minute_tokens = limits[group]
            needed = max(requests / per_minute_requests * 60 if per_minute_requests else 0.0,
                         tokens / per_minute_tokens * 60 if per_minute_tokens else 0.0)
            if needed > seconds:
                slowest, seconds = group, needed
        return seconds, slowest

    def _latency(self, name: str, dim: DimensionEstimate) -> _Latency:
        durations = [c.duration for c in self.history.paid(name)
                     if c.duration is not None and c.ok]
        if durations:
            return _Latency(statistics.fmean(durations), durations,
                            f"earlier runs ({len(durations)} calls)")
        times = self.call_times
        if times is not None and times.seen(name):
            mean = times.means([name])[name]
            return _Latency(mean, None, "this engine's earlier calls (mean)", sigma=0.0)
        calls = max(dim.calls_expected, 1)
        per_call = dim.output_tokens / calls if dim.output_tokens else GUESS_OUTPUT_CAP
        mean = GUESS_LATENCY + GUESS_SECONDS_PER_TOKEN * per_call
        return _Latency(mean, None, f"guess: {GUESS_LATENCY:g} s + "
                                    f"{GUESS_SECONDS_PER_TOKEN * 1000:g} ms an output token")


@dataclass(slots=True)
class _Latency:
    """Seconds one call of a dimension takes: the mean, and a lognormal spread around it,
    fitted to the observed durations when there are some, else assumed."""

    mean: float
    observed: list[float] | None
    source: str
    sigma: float = GUESS_SIGMA
    median: float = 0.0

    def __post_init__(self) -> None:
        logs = [math.log(d) for d in self.observed or () if d > 0]
        if len(logs) >= 2:
            self.median, self.sigma = math.exp(statistics.fmean(logs)), statistics.pstdev(logs)
        else:
            self.median = self.mean * math.exp(-self.sigma ** 2 / 2)

    def max_of(self, count: int) -> float:
        """The expected slowest of `count` calls (Blom's approximation of the quantile where
        the largest of `count` draws falls)."""
        if count <= 1 or not self.sigma:
            return self.mean
        z = statistics.NormalDist().inv_cdf((count - 0.375) / (count + 0.25))
        return max(self.mean, self.median * math.exp(self.sigma * z))


def _dependencies_source(calls: Sequence[_Call]) -> str:
    kinds = Counter(c.dependencies for c in calls if c.dependencies)
    if not kinds:
        return ""
    if len(kinds) == 1:
        return f"; dependencies: {_DEPENDENCY_KINDS[next(iter(kinds))]}"
    parts = [f"{_DEPENDENCY_KINDS[k].removeprefix('guess: ')} for {n:,}"
             for k, n in sorted(kinds.items(), key=lambda kv: list(_DEPENDENCY_KINDS).index(kv[0]))]
    return f"; dependencies: guess: {', '.join(parts)}"


def _skip_hook(index: int | None) -> str:
    return "should_skip_global_dimension" if index is None else "should_skip_section_dimension"


def _stages(plan: Plan) -> dict[str, int]:
    """Each dimension's stage: how many global barriers lie before it.

    A section dimension is in the stage after the globals it depends on; a global one in the
    stage of what it waits for, running once that stage's section work is done."""
    stage: dict[str, int] = {}
    for name in plan.order:
        found = 0
        for dep in plan.dependencies[name]:
            found = max(found, stage[dep] + 1 if plan.is_global(dep) else stage[dep])
        stage[name] = found
    return stage


def _waits_in_stage(plan: Plan, name: str, stages: dict[str, int]) -> bool:
    return any(not plan.is_global(d) and stages[d] == stages[name]
               for d in plan.dependencies[name])


def _longest_chain(plan: Plan, names: list[str], latency: dict[str, _Latency]) -> float:
    """The longest chain of mean latencies through `names` along the DAG's edges."""
    chain: dict[str, float] = {}
    for name in plan.order:
        if name in names:
            chain[name] = latency[name].mean + max(
                (chain[d] for d in plan.dependencies[name] if d in chain), default=0.0)
    return max(chain.values(), default=0.0)


def _downstream(plan: Plan, roots: Sequence[str]) -> set[str]:
    seen: set[str] = set()
    stack = [d for r in roots for d in plan.dependents[r]]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(plan.dependents[node])
    return seen


def _rate_limits(config: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """Per limit group: (requests, tokens) per minute, 0 where unlimited."""
    limits = {}
    for name, spec in config.items():
        requests = spec.get("requests_per_minute") or 60 * (spec.get("requests_per_second") or 0)
        tokens = spec.get("tokens_per_minute") or 60 * (spec.get("tokens_per_second") or 0)
        limits[name] = (float(requests), float(tokens))
    return limits


def _setting(provider: BaseProvider | None, name: str) -> Any:
    return getattr(getattr(provider, "settings", None), name, None)


_CEILING_OPTIONS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _ceiling(provider: BaseProvider | None, options: Mapping[str, Any]) -> tuple[int | None, str]:
    """A call's most output tokens, and where that number comes from."""
    for key in _CEILING_OPTIONS:
        value = options.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, f"{key} {value:,} (select_provider)"
    configured = _setting(provider, "max_tokens")
    if isinstance(configured, int) and configured > 0:
        return configured, f"max_tokens {configured:,} (provider config)"
    default = getattr(provider, "default_max_tokens", None)
    if isinstance(default, int) and default > 0:
        return default, f"max_tokens {default:,} (the provider's default)"
    return None, ""


# -- the table -----------------------------------------------------------------------------------


def _table(estimate: Estimate) -> str:
    header = ("dimension", "calls", "input tok", "output tok", "max output", "cost low",
              "expected", "cost high", "s/call")
    rows = []
    for name, dim in estimate.dimensions.items():
        calls = f"{'<=' if dim.calls_upper_bound else ''}{dim.calls:,}"
        if not dim.calls_known:
            calls = "~" + calls
        if dim.calls_expected != dim.calls:
            calls += f" (~{dim.calls_expected:,})"
        if dim.cached_calls:
            calls += f" +{dim.cached_calls:,} cached"
        label = f"{name} (global)" if dim.scope == "global" else name
        rows.append((label, calls, f"{dim.input_tokens:,}", f"{dim.output_tokens:,}",
                     f"{dim.output_tokens_max:,}", _usd(dim.cost_low), _usd(dim.cost_expected),
                     _usd(dim.cost_high), f"{dim.seconds_per_call:.2f}"))
    rows.append(("total", f"{sum(estimate.calls.values()):,}", f"{estimate.input_tokens:,}",
                 f"{estimate.output_tokens:,}", f"{estimate.output_tokens_max:,}",
                 _usd(estimate.cost_low), _usd(estimate.cost_expected),
                 _usd(estimate.cost_high), ""))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return f"{first}  {rest}".rstrip()

    runs = len(estimate.history)
    learned = (f", learned from {runs} earlier run{'s' if runs > 1 else ''}" if runs
               else "")
    lines = [
        f"Estimate for {estimate.plugin}: {estimate.sections:,} sections, "
        f"{len(estimate.dimensions)} dimension{'s' if len(estimate.dimensions) != 1 else ''}"
        f" (no provider call made{learned})",
        "",
        line(header),
        *(line(r) for r in rows),
        "",
        f"cost: {_usd(estimate.cost_expected)} expected, between {_usd(estimate.cost_low)} "
        f"and {_usd(estimate.cost_high)} ({estimate.currency})",
        f"time: ~{_duration(estimate.seconds_expected)} at concurrency {estimate.concurrency}",
    ]
    sources = [(name, dim) for name, dim in estimate.dimensions.items() if dim.calls]
    if sources:
        lines += ["", "where the figures come from:"]
        for name, dim in sources:
            lines.append(f"  {name}: input {dim.input_tokens_source}")
            lines.append(f"  {' ' * len(name)}  output {dim.output_tokens_source}; ceiling "
                         f"{dim.output_tokens_max_source}")
            lines.append(f"  {' ' * len(name)}  latency {dim.seconds_source}")
    if estimate.notes:
        lines += ["", "notes:", *(f"  - {note}" for note in estimate.notes)]
    return "\n".join(lines) + "\n"


def _usd(value: float) -> str:
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
