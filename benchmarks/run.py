"""The benchmark suite: each workload on dagengine and on a hand-written asyncio baseline.

    .venv/bin/python benchmarks/run.py              # all but W4S (about 5 minutes)
    .venv/bin/python benchmarks/run.py W3 W4        # some of them
    .venv/bin/python benchmarks/run.py WN           # random 429s: 10 % at 200 in flight, 50 %
    .venv/bin/python benchmarks/run.py W4S          # W4 over five more latency seeds
    .venv/bin/python benchmarks/run.py W4H          # a slow step beside a quick chain
    .venv/bin/python benchmarks/run.py W3P W4E      # a pool of keys; W4 hedged (issue 17)
    .venv/bin/python benchmarks/run.py W5           # per-call cost, each API format
    .venv/bin/python benchmarks/run.py W7           # first request after process()

The simulator runs in its own process (it never shares this process's CPU or event loop).
Prints one table and writes benchmarks/results/<timestamp>.json so later runs compare.
The baseline is what a user writes without us: asyncio.gather + Semaphore + exponential
retry on any error, the same SDK client and transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import schedules  # benchmarks/, on sys.path as the script's own folder

from dagengine import (
    BaseProvider,
    DagEngine,
    Dimension,
    Plugin,
    ProcessInterrupted,
    ProcessResult,
    ProviderError,
    ProviderRequest,
    ProviderResponse,
)
from dagengine.providers import build_provider
from dagengine.providers._settings import read_settings
from dagengine.providers.anthropic import AnthropicProvider
from dagengine.simulator import SimulatorProcess
from dagengine.testing import FunctionProvider

HERE = Path(__file__).resolve().parent
MODEL = "claude-3-5-haiku-20241022"
KEY = "bench-key"
logging.disable(logging.WARNING)


@dataclass
class Row:
    workload: str
    runner: str
    wall: float
    figures: dict[str, Any] = field(default_factory=dict)


# -- the plugin and the baseline ------------------------------------------------------------


MODELS = {"anthropic": MODEL, "openai": "gpt-4o-mini", "gemini": "gemini-2.0-flash"}


class Bench(Plugin):
    def __init__(self, dims: list[Any], deps: dict[str, list[str]] | None = None,
                 provider: str = "anthropic") -> None:
        super().__init__("bench", "Benchmark")
        self.dimensions = dims
        self._deps = deps or {}
        self._provider = provider

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return self._deps

    def create_prompt(self, ctx: Any) -> str:
        if ctx.is_global:
            return f"Give an overall summary of {len(ctx.sections)} reviews."
        return f"Give the {ctx.dimension} of this review: {ctx.sections[0].content}"

    def select_provider(self, dimension: str, *args: Any) -> Any:
        return {"provider": self._provider,
                "options": {"model": MODELS[self._provider], "max_tokens": 100}}


def sections(n: int) -> list[str]:
    return [f"Review {i}: the blender is great but shipping was slow." for i in range(n)]


def engine(sim: SimulatorProcess | str, plugin: Plugin, store: Any = None,
           cache: bool | None = None, provider: str = "anthropic", transport: str = "http",
           **execution: Any) -> DagEngine:
    base_url = sim if isinstance(sim, str) else sim.base_url
    config = {"api_key": KEY, "transport": transport,
              "base_url": base_url + "/v1" if provider == "openai" else base_url}
    # store=None means no store here: the default store would record (and cache) every run.
    return DagEngine(plugin, providers={provider: config}, execution=execution,
                     store=False if store is None else store, cache=cache)


STORE_RUNNERS = {"dagengine + store": False, "dagengine + store + cache": True}


def fresh_store() -> str:
    folder = Path(tempfile.mkdtemp(prefix="dagengine-bench-"))
    return str(folder / "runs.db")


class Baseline:
    """asyncio.gather + Semaphore + exponential retry (1 s, 2 s, 4 s ...) on any error."""

    def __init__(self, sim: SimulatorProcess | str, concurrency: int, retries: int = 5,
                 delay: float = 1.0, honour_retry_after: bool = False) -> None:
        import anthropic  # here: W5's other runners measure a process without the SDK

        self.client = anthropic.AsyncAnthropic(
            api_key=KEY, base_url=sim if isinstance(sim, str) else sim.base_url, max_retries=0,
            http_client=anthropic.DefaultAioHttpClient())
        self.semaphore = asyncio.Semaphore(concurrency)
        self.retries = retries
        self.delay = delay
        self.honour_retry_after = honour_retry_after
        self.requests = 0
        self.durations: list[float] = []

    async def call(self, prompt: str) -> Any:
        import anthropic

        async with self.semaphore:
            for attempt in range(self.retries + 1):
                self.requests += 1
                started = time.monotonic()
                try:
                    message = await self.client.messages.create(
                        model=MODEL, max_tokens=100,
                        messages=[{"role": "user", "content": prompt}])
                    self.durations.append(time.monotonic() - started)
                    return message.content[0].text
                except anthropic.APIError as exc:
                    if attempt == self.retries:
                        return None
                    wait = self.delay * 2 ** attempt
                    if self.honour_retry_after and isinstance(exc, anthropic.APIStatusError):
                        wait = float(exc.response.headers.get("retry-after", wait))
                    await asyncio.sleep(wait)
        return None

    async def close(self) -> None:
        await self.client.close()


def durations(result: ProcessResult, dim: str | None = None) -> list[float]:
    out = []
    for s in result.sections:
        for name, r in s.results.items():
            if dim in (None, name) and r.ok:
                out.append(r.metadata["duration"])
    return out


def successes(result: ProcessResult) -> int:
    return sum(all(r.ok for r in s.results.values()) for s in result.sections)


async def timed(work: Awaitable[Any]) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    value = await work
    return value, time.perf_counter() - wall, time.process_time() - cpu


# -- workloads -------------------------------------------------------------------------------

SEED_LATENCY = {"latency_median": 0.8, "latency_sigma": 0.5}


async def w1(sim: SimulatorProcess, faults: bool = False) -> list[Row]:
    name = "W2 faults" if faults else "W1 seed"
    config: dict[str, Any] = dict(SEED_LATENCY)
    if faults:
        config.update(error_429_rate=0.2, error_429_retry_after=1.0, error_500_rate=0.05)
    # A quarter of all requests fail: 8 retries leave one call in 260,000 unanswered (5 would
    # leave one in 4,000, one W2 run in 40 ending 99/100). Both runners get the same budget.
    retries = 8
    rows = []
    runners = ["dagengine", "baseline"] + ([] if faults else list(STORE_RUNNERS))
    for runner in runners:
        await sim.configure(**config, seed=11)
        await sim.reset()
        if runner.startswith("dagengine"):
            store = fresh_store() if runner in STORE_RUNNERS else None
            eng = engine(sim, Bench(["analyze"]), store=store, cache=STORE_RUNNERS.get(runner),
                         concurrency=100, max_retries=retries, retry_delay=1.0)
            result, wall, _ = await timed(eng.process(sections(100)))
            ok, slowest = successes(result), max(durations(result), default=0.0)
        else:
            base = Baseline(sim, 100, retries=retries)
            texts, wall, _ = await timed(asyncio.gather(
                *(base.call(f"Give the analyze of this review: {s}") for s in sections(100))))
            await base.close()
            ok, slowest = sum(t is not None for t in texts), max(base.durations, default=0.0)
        stats = await sim.stats()
        rows.append(Row(name, runner, wall, {
            "success": f"{ok}/100", "requests": stats["requests"],
            "429s": stats["rate_limited"], "slowest_call": round(slowest, 3),
            "wall/slowest": round(wall / slowest, 3) if slowest else None}))
    return rows


class TimedAnthropic(AnthropicProvider):
    """The built-in provider, noting how long each answered request took on the wire and
    when (from `start`) each answer and each 429 came back."""

    def __init__(self, name: str, settings: Any, backend: Any) -> None:
        super().__init__(name, settings, backend)
        self.latencies: dict[Any, float] = {}
        self.answers: list[float] = []
        self.refusals: list[float] = []
        self.start = time.perf_counter()
        self.answered = asyncio.Event()
        self.sent: list[float] = []  # when each call reached the provider, from `start`

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        started = time.perf_counter()
        self.sent.append(started - self.start)
        try:
            response = await super().execute(request)
        except ProviderError as exc:
            if exc.status_code == 429:
                self.refusals.append(time.perf_counter() - self.start)
            raise
        ended = time.perf_counter()
        key = (request.dimension, request.metadata.get("section_index"))
        self.latencies[key] = ended - started
        self.answers.append(ended - self.start)
        self.answered.set()
        return response


W3_LIMIT = {"requests_per_minute": 3000}  # bursts of 50 (one second's worth), then 50/s


async def w3(sim: SimulatorProcess) -> list[Row]:
    """300 calls, 100 in flight, against 50 requests/s; with the limit configured or learned,
    from the simulator's rate-limit headers or (as Gemini and many OpenAI-compatible servers)
    from 429s + retry-after alone."""
    rows = []
    n, bound = 300, 300 / 50
    runners = ("dagengine (limit set)", "dagengine (learned)", "dagengine (limit set, no headers)",
               "dagengine (learned, no headers)", "baseline")
    for runner in runners:
        await sim.configure(latency=0.1, latency_median=None, latency_sigma=0.0, **W3_LIMIT,
                            error_429_rate=0.0, error_500_rate=0.0, seed=13,
                            rate_limit_headers="no headers" not in runner)
        await sim.reset()
        figures: dict[str, Any] = {}
        if runner.startswith("dagengine"):
            limits = {"anthropic": W3_LIMIT} if "set" in runner else {}
            settings = read_settings("anthropic", {"api_key": KEY, "base_url": sim.base_url},
                                     TimedAnthropic.env_vars)
            provider = TimedAnthropic("anthropic", settings,
                                      TimedAnthropic.direct_backend("anthropic", settings))
            eng = DagEngine(Bench(["analyze"]), providers=[provider], execution={
                "concurrency": 100, "max_retries": 8, "retry_delay": 0.5, "rate_limits": limits},
                store=False)
            provider.start = time.perf_counter()
            result, wall, _ = await timed(eng.process(sections(n)))
            ok = successes(result)
            if "set" in runner:
                # The same latencies, each call started in order the moment a slot and the
                # limit allow it, by a client with no overhead that knows the limit exactly.
                lat = [provider.latencies[("analyze", i)] for i in range(n)]
                replay = schedules.paced(lat, 100, 50.0, 50.0)
                # When the first request reached the simulator: its answer, less its latency.
                wire = min(provider.answers) - 0.1
                figures = {"paced replay": round(replay, 3), "wall/replay": round(wall / replay, 3),
                           "first request at": round(wire, 3),
                           "wall/(replay+first)": round(wall / (replay + wire), 3)}
            else:
                [group] = eng.get_rate_limits().values()
                learned = (group["learned_requests_per_minute"]
                           or group.get("inferred_requests_per_minute"))
                figures = {"learned rpm": round(learned) if learned else None,
                           "429s after 1 s": sum(t > 1.0 for t in provider.refusals)}
        else:
            base = Baseline(sim, 100, retries=8, delay=0.5)
            texts, wall, _ = await timed(asyncio.gather(
                *(base.call(f"Give the analyze of this review: {s}") for s in sections(n))))
            await base.close()
            ok = sum(t is not None for t in texts)
        stats = await sim.stats()
        rows.append(Row("W3 rate limit", runner, wall, {
            "success": f"{ok}/{n}", "wall/bound": round(wall / bound, 3),
            "requests": stats["requests"], "429s": stats["rate_limited"],
            "429 share": f"{100 * stats['rate_limited'] / stats['requests']:.1f}%", **figures}))
    await sim.configure(requests_per_minute=None, rate_limit_headers=True)
    return rows


POOL_KEYS = ("bench-pool-key-a", "bench-pool-key-b")


async def w3_pools(sim: SimulatorProcess) -> list[Row]:
    """W3 over a pool of two keys, each with its own limit and no rate_limits configured:
    25 + 25 requests/s (the limits learned per key from headers and 429s), and 75 + 25
    requests/s weighted 3:1 (the split of calls follows capacity and weights)."""
    rows = []
    n = 300
    cases = (("2 keys x 25/s", (25, 25), (1, 1)), ("keys 75/s + 25/s, weights 3:1", (75, 25),
                                                   (3, 1)))
    for runner, per_second, weights in cases:
        await sim.configure(latency=0.1, latency_median=None, latency_sigma=0.0,
                            requests_per_minute=None, error_429_rate=0.0, error_500_rate=0.0,
                            seed=13, rate_limit_headers=True, key_limits={
                                key: {"requests_per_minute": rate * 60}
                                for key, rate in zip(POOL_KEYS, per_second, strict=True)})
        await sim.reset()
        bound = n / sum(per_second)
        targets = [{"api_key": key, "weight": weight, "name": f"key{i}"}
                   for i, (key, weight) in enumerate(zip(POOL_KEYS, weights, strict=True))]
        eng = DagEngine(Bench(["analyze"]), providers={"anthropic": {
            "base_url": sim.base_url, "targets": targets}}, execution={
            "concurrency": 100, "max_retries": 8, "retry_delay": 0.5}, store=False)
        result, wall, _ = await timed(eng.process(sections(n)))
        await eng.close()
        stats = await sim.stats()
        calls = [s.results["analyze"].call for s in result.sections]
        split = {t["name"]: sum(c is not None and c.target == t["name"] for c in calls)
                 for t in targets}
        rows.append(Row("W3 pool", runner, wall, {
            "success": f"{successes(result)}/{n}", "bound": round(bound, 2),
            "wall/bound": round(wall / bound, 3), "requests": stats["requests"],
            "429 share": f"{100 * stats['rate_limited'] / stats['requests']:.1f}%",
            "split": "/".join(f"{100 * v / n:.1f}%" for v in split.values())}))
    await sim.configure(key_limits=None, requests_per_minute=None, rate_limit_headers=True)
    return rows


async def w4_hedge(sim: SimulatorProcess) -> list[Row]:
    """W4 with latency drawn per request (a duplicate draws its own), 50 in flight, without
    and with hedge={"after": "p95", "budget": 0.05}: the same seed, the same process."""
    rows: list[Row] = []
    data: dict[str, list[Any]] = {}
    for runner, hedge in (("dagengine", None),
                          ("dagengine, hedge p95 5 %", {"after": "p95", "budget": 0.05})):
        await sim.configure(latency=0.0, latency_median=0.5, latency_sigma=1.0, seed=17,
                            latency_draw="request", error_429_rate=0.0, error_500_rate=0.0)
        await sim.reset()
        eng = engine(sim, Bench(W4_DIMS, W4_DEPS), concurrency=50, hedge=hedge)
        result, wall, _ = await timed(eng.process(sections(200)))
        await eng.close()
        stats = await sim.stats()
        calls = 200 * 3 + 1
        data[runner] = [s.results[d].data for s in result.sections for d in s.results]
        data[runner].append(result.global_results["overall"].data)
        figures: dict[str, Any] = {
            "success": f"{successes(result)}/200", "requests": stats["requests"],
            "extra requests": f"{100 * (stats['requests'] - calls) / stats['requests']:.1f}%",
            "cancelled": stats["cancelled"]}
        if rows:
            figures["wall ratio"] = round(wall / rows[0].wall, 3)
            figures["results equal"] = data[runner] == data["dagengine"]
        rows.append(Row("W4 hedge", runner, wall, figures))
    await sim.configure(latency_draw="prompt")
    return rows


NOISY_LATENCY = {"latency": 0.0, "latency_median": 0.3, "latency_sigma": 0.5}


async def noisy(sim: SimulatorProcess) -> list[Row]:
    """2,000 sections x 2 dimensions at 200 in flight with 10 % of requests answered 429 at
    random (retry-after 1 s): against the same run without faults and a plain client that
    honours retry-after. Then 30 sections with half the requests answered 429 (each call at
    most 3 times), 5 retries and 15 s per dimension: every section must be answered."""
    rows: list[Row] = []
    n = 2000
    prompts = [f"Give the {d} of this review: {s}"
               for s in sections(n) for d in ("first", "second")]
    for runner, rate in (("dagengine, no faults", 0.0), ("dagengine, 10% 429s", 0.1),
                         ("plain client, 10% 429s", 0.1)):
        await sim.configure(**NOISY_LATENCY, seed=23, error_429_rate=rate,
                            error_429_retry_after=1.0, max_faults_per_prompt=None)
        await sim.reset()
        if runner.startswith("dagengine"):
            eng = engine(sim, Bench(["first", "second"]), concurrency=200, max_retries=8)
            result, wall, _ = await timed(eng.process(sections(n)))
            done = sum(r.ok for s in result.sections for r in s.results.values())
        else:
            base = Baseline(sim, 200, retries=8, honour_retry_after=True)
            texts, wall, _ = await timed(asyncio.gather(*(base.call(p) for p in prompts)))
            await base.close()
            done = sum(t is not None for t in texts)
        stats = await sim.stats()
        figures: dict[str, Any] = {"calls done": f"{done}/{2 * n}", "requests": stats["requests"],
                                   "429s": stats["rate_limited"]}
        if rows:
            figures["wall/no faults"] = round(wall / rows[0].wall, 3)
        rows.append(Row("WN noisy 429s", runner, wall, figures))
    await sim.configure(**NOISY_LATENCY, seed=29, error_429_rate=0.5, error_429_retry_after=1.0,
                        max_faults_per_prompt=3)
    await sim.reset()
    eng = engine(sim, Bench(["analyze"]), concurrency=100, max_retries=5,
                 dimension_timeouts={"analyze": 15.0})
    result, wall, _ = await timed(eng.process(sections(30)))
    stats = await sim.stats()
    rows.append(Row("WN noisy 429s", "dagengine, 50% 429s (<=3 a call)", wall, {
        "success": f"{successes(result)}/30", "requests": stats["requests"],
        "429s": stats["rate_limited"]}))
    await sim.configure(error_429_rate=0.0, max_faults_per_prompt=None)
    return rows


W4_DIMS = ["sentiment", "topics", "summary", Dimension(name="overall", scope="global")]
W4_DEPS = {"summary": ["sentiment", "topics"], "overall": ["summary"]}


async def levels(base: Baseline, texts: list[str]) -> None:
    """The usual hand-written DAG: one gather per level, each waiting for the whole level."""
    await asyncio.gather(*(base.call(f"Give the {d} of this review: {t}")
                           for t in texts for d in ("sentiment", "topics")))
    await asyncio.gather(*(base.call(f"Give the summary of this review: {t}") for t in texts))
    await base.call("Give an overall summary of 200 reviews.")


def latencies(result: ProcessResult) -> list[dict[str, float]]:
    """Each section's call durations, as the run measured them."""
    return [{d: r.metadata["duration"] for d, r in s.results.items()} for s in result.sections]


def w4_figures(result: ProcessResult, wall: float, concurrency: int) -> dict[str, Any]:
    """Wall time against the lower bound and against zero-overhead replays of the same
    latencies: online (nothing known in advance) and clairvoyant (every latency known)."""
    lat, overall = latencies(result), result.global_results["overall"].metadata["duration"]
    deps = schedules.W4_DEPS
    ideal = schedules.ideal(lat, deps, concurrency) + overall
    online = schedules.replay(lat, deps, concurrency) + overall
    clairvoyant = schedules.replay(lat, deps, concurrency, "clairvoyant") + overall
    return {"success": f"{successes(result)}/200", "ideal": round(ideal, 3),
            "wall/ideal": round(wall / ideal, 3), "online replay": round(online, 3),
            "wall/online": round(wall / online, 3),
            "wall/clairvoyant": round(wall / clairvoyant, 3)}


async def w4(sim: SimulatorProcess) -> list[Row]:
    rows = []
    # The last row lifts the concurrency bound to show the pipeline alone: with every
    # first-level call able to start at once, only barriers could keep it from the ideal.
    for runner in ("dagengine", "baseline (levels)", "dagengine, 400 in flight"):
        await sim.configure(latency=0.0, latency_median=0.5, latency_sigma=1.0, seed=17,
                            error_429_rate=0.0, error_500_rate=0.0)
        await sim.reset()
        if runner.startswith("dagengine"):
            concurrency = 400 if "400" in runner else 50
            eng = engine(sim, Bench(W4_DIMS, W4_DEPS), concurrency=concurrency)
            result, wall, _ = await timed(eng.process(sections(200)))
            figures = w4_figures(result, wall, concurrency)
        else:
            base = Baseline(sim, 50)
            _, wall, _ = await timed(levels(base, sections(200)))
            await base.close()
            figures = {"success": f"{len(base.durations)}/601 calls"}
        rows.append(Row("W4 DAG", runner, wall, figures))
    return rows


async def w4_seeds(sim: SimulatorProcess) -> list[Row]:
    """W4 at 50 in flight over other latency draws: how much luck is in one seed's figure."""
    rows = []
    for seed in (1, 2, 3, 4, 5):
        await sim.configure(latency=0.0, latency_median=0.5, latency_sigma=1.0, seed=seed)
        await sim.reset()
        eng = engine(sim, Bench(W4_DIMS, W4_DEPS), concurrency=50)
        result, wall, _ = await timed(eng.process(sections(200)))
        rows.append(Row("W4 seeds", f"dagengine, seed {seed}", wall,
                        w4_figures(result, wall, 50)))
    return rows


W4H_MEDIANS = {"classify": 0.3, "tag": 0.3, "essay": 3.0}
W4H_DEPS: dict[str, tuple[str, ...]] = {"classify": (), "tag": ("classify",), "essay": ()}


def lognormal_latency(medians: dict[str, float], seed: int) -> Callable[[ProviderRequest], float]:
    """A lognormal latency (sigma 0.5) drawn from the prompt, its median set per dimension, so
    every runner meets the same latency for the same call."""

    def latency(request: ProviderRequest) -> float:
        draw = random.Random(f"{seed}:{request.input}")
        return draw.lognormvariate(math.log(medians[request.dimension]), 0.5)

    return latency


def in_process(latency: Callable[[ProviderRequest], float] | float = 0.0) -> FunctionProvider:
    """In process, no HTTP: answers {"ok": true} after `latency`; keeps no per-call records."""
    return FunctionProvider(lambda request: {"ok": True}, latency=latency, name="anthropic",
                            model=MODEL, tokens=(20, 5), record=False)


async def w4_mixed(sim: SimulatorProcess) -> list[Row]:
    """A quick two-step chain (classify, then tag) beside one slow step (essay) per section:
    the slow step should start first although the quick chain is deeper."""
    rows, n, concurrency = [], 200, 50
    plugin = Bench(list(W4H_DEPS), {k: list(v) for k, v in W4H_DEPS.items() if v})
    # Seed 1 runs twice on one engine: the second run starts from what the first learned.
    for seed, run in ((1, 1), (1, 2), (2, 1), (3, 1)):
        if run == 1:
            provider = in_process(lognormal_latency(W4H_MEDIANS, seed))
            eng = DagEngine(plugin, providers=[provider], execution={"concurrency": concurrency},
                            store=False)
        result, wall, _ = await timed(eng.process(sections(n)))
        lat = latencies(result)
        ideal = schedules.ideal(lat, W4H_DEPS, concurrency)
        deepest = schedules.replay(lat, W4H_DEPS, concurrency, "deepest first")
        clairvoyant = schedules.replay(lat, W4H_DEPS, concurrency, "clairvoyant")
        label = f"dagengine, seed {seed}" + (" again" if run == 2 else "")
        rows.append(Row("W4H mixed", label, wall, {
            "success": f"{successes(result)}/{n}", "ideal": round(ideal, 3),
            "wall/ideal": round(wall / ideal, 3),
            "deepest-first replay/ideal": round(deepest / ideal, 3),
            "clairvoyant/ideal": round(clairvoyant / ideal, 3)}))
    return rows


W5_CALLS = 5000
W5_PASSES = 3  # each runner's fastest pass is its row: this machine is shared
# Each runner in a process of its own (see w5_child), "x plain" against the first row.
W5_RUNNERS = (
    "plain aiohttp", "provider anthropic, no engine", "dagengine anthropic",
    "dagengine openai", "dagengine gemini",
    "dagengine anthropic, gc tuned", "dagengine anthropic, sdk", "baseline (SDK)",
    *STORE_RUNNERS, "dagengine, no HTTP",
)


async def w5(sim: SimulatorProcess) -> list[Row]:
    """5,000 calls at zero latency, 200 in flight: what a call costs the client process.

    Each runner runs in a fresh child process, so that its CPU time is its own and its
    garbage collector walks only what that runner imports (an SDK's classes make every full
    collection of a process slower): a warm-up of 500 calls on the same engine or client
    (imports, sessions, connections), then 5,000 timed. The simulator has its own process.
    Each runner's row is the fastest of W5_PASSES passes.
    """
    await sim.configure(latency=0.0, latency_median=None, latency_sigma=0.0, seed=19)
    best: dict[str, dict[str, Any]] = {}
    for _ in range(W5_PASSES):  # passes over all runners, so a busy moment hits them all
        for runner in W5_RUNNERS:
            await sim.reset()
            figures = await asyncio.to_thread(w5_in_child, runner, sim.base_url)
            if runner not in best or figures["wall"] < best[runner]["wall"]:
                best[runner] = figures
    rows = []
    for runner, figures in best.items():
        wall = figures.pop("wall")
        rows.append(Row("W5 overhead", runner, wall, {
            "calls/s": round(W5_CALLS / wall), **figures}))
    # Against plain aiohttp: in calls/s, and in CPU per call (what one core could sustain;
    # steadier than calls/s while other work shares the machine).
    plain, plain_cpu = rows[0].figures["calls/s"], rows[0].figures["cpu ms/call"]
    for row in rows[1:]:
        row.figures["x plain"] = round(row.figures["calls/s"] / plain, 2)
        row.figures["x plain cpu"] = round(plain_cpu / row.figures["cpu ms/call"], 2)
    return rows


def w5_in_child(runner: str, base_url: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--w5-child", runner, base_url],
                         capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def w5_child(runner: str, base_url: str) -> None:
    warm, work = w5_work(runner, base_url)
    collecting = GcTime()

    async def timed_run() -> tuple[float, float, float]:
        await warm()
        if runner.endswith("gc tuned"):
            # What the garbage collector costs the others: what is loaded so far is never
            # walked again, and young collections come every 10,000 allocations, not 700.
            gc.freeze()
            gc.set_threshold(10_000, 10, 10)
        collecting.seconds = 0.0
        _, wall, cpu = await timed(work())
        return wall, cpu, collecting.seconds

    wall, cpu, gc_seconds = asyncio.run(timed_run())
    print(json.dumps({"wall": wall, "cpu ms/call": round(1000 * cpu / W5_CALLS, 3),
                      "of it gc": round(1000 * gc_seconds / W5_CALLS, 3)}))


def w5_work(runner: str, base_url: str) -> tuple[Callable[[], Awaitable[Any]],
                                                   Callable[[], Awaitable[Any]]]:
    """(warm-up, timed work) of one W5 runner."""
    if runner == "plain aiohttp":
        client = PlainClient(base_url, 200)
        return (lambda: client.run(500)), (lambda: client.run(W5_CALLS, close=True))
    if runner == "provider anthropic, no engine":
        provider = build_provider("anthropic", {"api_key": KEY, "base_url": base_url})
        return (lambda: provider_calls(provider, 500)), \
            (lambda: provider_calls(provider, W5_CALLS, close=True))
    if runner == "baseline (SDK)":
        base = Baseline(base_url, 200)

        async def baseline(n: int) -> None:
            await asyncio.gather(*(base.call(f"Give the analyze of this review: {s}")
                                   for s in sections(n)))

        async def last_baseline() -> None:
            await baseline(W5_CALLS)
            await base.close()

        return (lambda: baseline(500)), last_baseline
    if runner == "dagengine, no HTTP":
        eng = DagEngine(Bench(["analyze"]), providers=[in_process()],
                        execution={"concurrency": 200}, store=False)
    else:
        store = fresh_store() if runner in STORE_RUNNERS else None
        provider = runner.split()[1].strip(",") if runner.startswith("dagengine ") \
            and runner.split()[1].strip(",") in MODELS else "anthropic"
        eng = engine(base_url, Bench(["analyze"], provider=provider), store=store,
                     cache=STORE_RUNNERS.get(runner), provider=provider,
                     transport="sdk" if runner.endswith(", sdk") else "http", concurrency=200)

    async def last_run() -> None:
        async with eng:
            await eng.process(sections(W5_CALLS))

    return (lambda: eng.process(sections(500))), last_run


async def provider_calls(provider: BaseProvider, n: int, close: bool = False) -> None:
    """The built-in provider's execute() from 200 workers: the transport without the engine."""
    indexes = iter(range(n))

    async def worker() -> None:
        for i in indexes:
            response = await provider.execute(ProviderRequest(
                input=f"Give the analyze of this review: Review {i}",
                options={"model": MODEL, "max_tokens": 100}, dimension="analyze"))
            assert response.data

    async with asyncio.TaskGroup() as workers:
        for _ in range(200):
            workers.create_task(worker())
    if close:
        await provider.aclose()


class PlainClient:
    """What a careful user writes on plain aiohttp: one session, 200 workers posting
    Anthropic-format requests and decoding each answer, no engine."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        self.url = f"{base_url}/v1/messages"
        self.concurrency = concurrency
        self.session: aiohttp.ClientSession | None = None

    async def run(self, n: int, close: bool = False) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                connector=aiohttp.TCPConnector(limit=0))
        session, indexes = self.session, iter(range(n))

        async def worker() -> None:
            for i in indexes:
                body = {"model": MODEL, "max_tokens": 100, "messages": [
                    {"role": "user", "content": f"Give the analyze of this review: Review {i}"}]}
                async with session.post(self.url, json=body) as response:
                    answer = await response.json()
                    assert answer["content"][0]["text"]

        async with asyncio.TaskGroup() as workers:
            for _ in range(self.concurrency):
                workers.create_task(worker())
        if close:
            await session.close()


class GcTime:
    """CPU seconds spent in the garbage collector since `seconds` was last reset."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started


W6_STORED = (10_000, 1_000_000)  # sections x 1 dimension with a store (issue 14)


def w6() -> list[Row]:
    """Each size in a fresh process so its peak RSS is its own: 1k, 10k and 100k sections x 2
    dimensions, then 10k and 1M x 1 dimension with a store (`W6_STORED`)."""
    rows = []
    per_item = {}
    for n in (1_000, 10_000, 100_000):
        figures = w6_in_child(n, 2, stored=False)
        per_item[n] = figures["us/item"]
        rows.append(Row("W6 scale", f"dagengine {n:,}x2", figures.pop("wall"), figures))
    rows[-1].figures["per-item 100k/1k"] = round(per_item[100_000] / per_item[1_000], 3)
    small, big = W6_STORED
    for n in W6_STORED:
        figures = w6_in_child(n, 1, stored=True)
        per_item[-n] = figures["us/item"]
        rows.append(Row("W6 scale", f"dagengine {n:,}x1 + store", figures.pop("wall"), figures))
    rows[-1].figures[f"per-item {big:,}/{small:,}"] = round(per_item[-big] / per_item[-small], 3)
    return rows


def w6_in_child(n: int, dimensions: int, *, stored: bool) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--w6-child", str(n), str(dimensions),
                          "store" if stored else "none"],
                         capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def w6_child(n: int, dimensions: int = 2, stored: bool = False) -> None:
    plugin = (Bench(["first", "second"], {"second": ["first"]}) if dimensions == 2
              else Bench(["first"]))
    eng = DagEngine(plugin, providers=[in_process()], execution={"concurrency": 200},
                    store=fresh_store() if stored else False)
    items = [f"item {i}" for i in range(n)]
    started = time.perf_counter()
    result = eng.run(items)
    wall = time.perf_counter() - started
    assert successes(result) == n
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "us/item": round(1e6 * wall / n, 1),
                      "peak RSS MB": round(rss_mb)}))


W7_SIZES = (300, 100_000)


async def w7(sim: SimulatorProcess) -> list[Row]:
    """From process() to the first request on the wire, at 300 and 100k sections (100 in
    flight, 0.1 s latency): what the run prepares before it dispatches. Each size on a warm
    engine (imports and the session are paid by a first run of 10 sections), without a store
    and with one; the run is cancelled once the first answer is back."""
    await sim.configure(latency=0.1, latency_median=None, latency_sigma=0.0, seed=7,
                        requests_per_minute=None)
    rows = []
    for n in W7_SIZES:
        for runner in ("dagengine", "dagengine + store"):
            await sim.reset()
            settings = read_settings("anthropic", {"api_key": KEY, "base_url": sim.base_url},
                                     TimedAnthropic.env_vars)
            provider = TimedAnthropic("anthropic", settings,
                                      TimedAnthropic.direct_backend("anthropic", settings))
            eng = DagEngine(Bench(["analyze"]), providers=[provider],
                            execution={"concurrency": 100},
                            store=fresh_store() if runner.endswith("store") else False)
            await eng.process(sections(10), process_id="warm-up")
            texts = sections(n)
            provider.answers.clear()
            provider.answered.clear()
            provider.sent.clear()
            provider.start = started = time.perf_counter()
            run = asyncio.create_task(eng.process(texts))
            answered = asyncio.create_task(provider.answered.wait())
            await asyncio.wait([run, answered], return_when=asyncio.FIRST_COMPLETED)
            answered.cancel()
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError, ProcessInterrupted):
                await run
            await eng.close()
            wire = min(provider.answers) - 0.1  # the first answer, less its latency
            rows.append(Row("W7 first request", f"{runner} {n:,}", time.perf_counter() - started,
                            {"first request ms": round(1000 * wire, 1),
                             "first call to provider ms": round(1000 * provider.sent[0], 1)}))
    await sim.configure(latency=0.0)
    return rows


# -- the table -------------------------------------------------------------------------------

WORKLOADS: dict[str, Callable[[SimulatorProcess], Awaitable[list[Row]]]] = {
    "W1": w1,
    "W2": lambda sim: w1(sim, faults=True),
    "W3": w3,
    "WN": noisy,
    "W3P": w3_pools,
    "W4": w4,
    "W4E": w4_hedge,
    "W4S": w4_seeds,
    "W4H": w4_mixed,
    "W5": w5,
    "W7": w7,
}


async def main(selected: list[str]) -> list[Row]:
    rows: list[Row] = []
    async with SimulatorProcess(seed=1) as sim:
        await warm_up(sim)
        for key, fn in WORKLOADS.items():
            if key in selected:
                new_rows = await fn(sim)
                with_overhead(new_rows)
                print_rows(new_rows)
                rows.extend(new_rows)
    if "W6" in selected:
        w6_rows = w6()
        rows.extend(w6_rows)
        print_rows(w6_rows)
    return rows


def with_overhead(rows: list[Row]) -> None:
    """Wall time a store adds, relative to the plain dagengine row of the same workload."""
    plain = next((r for r in rows if r.runner in ("dagengine", "dagengine anthropic")), None)
    for row in rows:
        if plain is not None and row.runner in STORE_RUNNERS:
            row.figures["store overhead"] = f"{100 * (row.wall / plain.wall - 1):+.1f}%"


async def warm_up(sim: SimulatorProcess) -> None:
    """Imports, SDK clients and first connections, paid once before anything is timed."""
    await engine(sim, Bench(["analyze"]), concurrency=50).process(sections(100))
    base = Baseline(sim, 50)
    await asyncio.gather(*(base.call(s) for s in sections(100)))
    await base.close()


def print_rows(rows: list[Row]) -> None:
    for row in rows:
        extras = "  ".join(f"{k}={v}" for k, v in row.figures.items())
        print(f"{row.workload:<14} {row.runner:<30} {row.wall:>8.2f}s  {extras}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--w6-child":
        w6_child(int(sys.argv[2]), int(sys.argv[3]), stored=sys.argv[4] == "store")
        sys.exit(0)
    if len(sys.argv) == 4 and sys.argv[1] == "--w5-child":
        w5_child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    chosen = [a.upper() for a in sys.argv[1:]] or ["W1", "W2", "W3", "W3P", "WN", "W4",
                                                  "W4E", "W4H", "W5", "W6"]
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    print(f"$ {command.strip()}   ({platform.python_version()}, {platform.machine()}, "
          f"simulated backend)")
    print(f"{'workload':<14} {'runner':<30} {'wall':>9}  figures")
    all_rows = asyncio.run(main(chosen))
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{stamp}.json"
    path.write_text(json.dumps({"command": command, "rows": [r.__dict__ for r in all_rows]},
                               indent=2))
    print(f"results written to {path.relative_to(HERE.parent)}")

