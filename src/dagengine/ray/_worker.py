"""SectionWorker: one Ray worker actor, running shards with dagengine's own scheduler.

The actor is set up once per run with the run's frozen parts (plugin, providers,
execution config, pricing), pickled once by the driver; each shard it gets then runs on
a `Scheduler` over a `RunState` of the shard's sections alone, whose plan is the level's
section dimensions plus the finished dimensions they read. Every call goes through the
same CallRunner as in one process (prompts, provider selection, retries, fallbacks,
parsing, the per-section hooks), paced by the worker's LeasedLimiter on the run's
ClusterLimiter, within the worker's share of `concurrency`.

What the scheduler tells its observers is gathered and streamed to the driver in batches
(every BATCH_SECONDS), so the driver does no work per call beyond applying the results.
The worker never opens the store, never calls the user's callbacks, and never runs a
global dimension or a transformation.

This module imports nothing of Ray; the driver wraps the class as an actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, cast

from .._run import Run, RunState, SectionState
from ..config import ExecutionConfig
from ..cost import Pricing
from ..graph import Plan
from ..plugin import Attempt, Hooks, Observer, Observers, Plugin
from ..providers.base import ProviderRegistry
from ..ready import CallTimes
from ..scheduler import RunFailed, Scheduler
from ..store._codec import result_json
from ..types import DimensionResult
from ._leased import LeasedLimiter
from ._shard import BATCH_SECONDS, Batch, Outcome, Shard, packed, portable, unpacked_shard


@dataclass(frozen=True, slots=True)
class RunParts:
    """The run's frozen parts the driver sends each worker once, pickled together."""

    process_id: str
    plan: Plan
    plugin: Plugin
    registry: ProviderRegistry
    config: ExecutionConfig
    pricing: Pricing
    metadata: Any


class _Counts:
    """The worker's requests and results, over all its shards (the driver's per-worker view)."""

    def __init__(self) -> None:
        self.results = 0
        self.requests = 0
        self.in_flight = 0


class _Collector(Observer):
    """What one shard's scheduler reports, kept until the next batch goes out."""

    def __init__(self, worker: str, shard: Shard, counts: _Counts, attempts: bool,
                 rows: bool) -> None:
        self._worker = worker
        self._counts = counts
        self._want_attempts = attempts
        self._want_rows = rows
        # Results arrive by section index; the driver knows a shard's sections by key.
        self._keys = {(dim, item.index): item.key for item in shard.items
                      for dim in item.dimensions}
        self.batch = Batch(worker)

    def take(self) -> Batch:
        batch, self.batch = self.batch, Batch(self._worker)
        return batch

    def result(self, dimension: str, index: int | None, result: DimensionResult) -> None:
        self._add(dimension, index, result, restored=False)

    def restored(self, dimension: str, index: int | None, result: DimensionResult) -> None:
        self._add(dimension, index, result, restored=True)

    def _add(self, dimension: str, index: int | None, result: DimensionResult,
             restored: bool) -> None:
        key = self._keys.get((dimension, index)) if index is not None else None
        if key is None:
            return
        self._counts.results += 1
        # The store's JSON of a result is made here, not on the driver, which only writes it.
        row = result_json(result) if self._want_rows and not restored else None
        self.batch.outcomes.append(Outcome(dimension, key, result, restored, row=row))

    def error(self, error: BaseException, where: dict[str, Any]) -> None:
        # The scheduler reports a failed result's error right after the result itself.
        outcomes = self.batch.outcomes
        if outcomes and outcomes[-1].dimension == where.get("dimension") and "hook" not in where:
            outcomes[-1].error = portable(error)

    def hook_failed(self, hook: str, error: BaseException) -> None:
        self.batch.hook_errors.append((hook, portable(error)))

    def request_sent(self, dimension: str, provider: str) -> None:
        sent = self.batch.sent
        sent[dimension, provider] = sent.get((dimension, provider), 0) + 1
        self._counts.requests += 1
        self._counts.in_flight += 1

    def request_done(self, dimension: str, provider: str) -> None:
        ended = self.batch.ended
        ended[dimension, provider] = ended.get((dimension, provider), 0) + 1
        self._counts.in_flight -= 1

    def retry(self, dimension: str, error: BaseException) -> None:
        self.batch.retries.append((dimension, portable(error)))

    def attempt_done(self, attempt: Attempt) -> None:
        if self._want_attempts:
            self.batch.attempts.append(replace(attempt, error=portable(attempt.error)))


class _ShardScheduler(Scheduler):
    """The scheduler over one shard: each dimension over the shard's sections that need it,
    within the worker's concurrency, with the run's section count."""

    def __init__(self, run: Run, state: RunState, observers: Observers, shard: Shard,
                 slots: asyncio.Semaphore) -> None:
        super().__init__(run, state, observers)
        self._slots = slots
        self._shard = shard
        self._needs = {id(s): item.dimensions for s, item in zip(state.current, shard.items,
                                                                    strict=True)}

    def _snapshot_for(self, name: str) -> list[SectionState]:
        return [s for s in self.state.current if name in self._needs[id(s)]]

    @property
    def total_sections(self) -> int:
        return self._shard.total_sections


class SectionWorker:
    """A worker actor: set up for a run, then runs the shards the driver streams to it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._parts: RunParts | None = None
        self._leased: LeasedLimiter | None = None
        self._slots = asyncio.Semaphore(1)
        self._times = CallTimes()
        self._counts = _Counts()
        self._attempts = False
        self._rows = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def setup(self, parts: bytes, limiter: Any, concurrency: int,
                    attempts: bool, rows: bool = False) -> str:
        """Take a run's parts; `concurrency` is this worker's share of the run's; `rows`:
        the driver has a store (each result comes with its JSON as stored)."""
        await self.finish()
        self._parts = pickle.loads(parts)
        self._leased = LeasedLimiter(limiter, session=f"{self.name}-{id(self._parts):x}")
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._counts = _Counts()
        self._attempts = attempts
        self._rows = rows
        return self.name

    async def run_shard(self, packed_shard: bytes | Shard,
                        global_results: dict[str, DimensionResult]
                        ) -> AsyncIterator[bytes | Batch]:
        """Run a shard (as `packed_shard` made it), yielding a batch of results every
        BATCH_SECONDS and a final one (each as `packed` makes it)."""
        shard = unpacked_shard(packed_shard)
        collector = _Collector(self.name, shard, self._counts, self._attempts, self._rows)
        task = asyncio.get_running_loop().create_task(
            self._run(shard, global_results, collector))
        self._tasks.add(task)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=BATCH_SECONDS)
                if collector.batch.outcomes and not task.done():
                    yield packed(collector.take())
            final = collector.take()
            final.final = True
            failure = None if task.cancelled() else task.exception()
            if isinstance(failure, RunFailed):  # the driver raises its own around it
                failure = failure.error
            final.failure = portable(failure)
            yield packed(final)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._tasks.discard(task)

    def counts(self) -> dict[str, int]:
        return {"results": self._counts.results, "requests": self._counts.requests,
                "in_flight": self._counts.in_flight}

    async def finish(self) -> dict[str, int]:
        """End the run here: stop its shards, return unspent permits, close the providers.

        What it returns: this worker's counts, and its calls into the limiter actor."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        counts = {**self.counts(), "limiter_rpcs": 0}
        leased, self._leased = self._leased, None
        if leased is not None:
            with contextlib.suppress(Exception):
                await leased.aclose()
            counts["limiter_rpcs"] = leased.rpcs
        parts, self._parts = self._parts, None
        if parts is not None:
            for provider in parts.registry:
                with contextlib.suppress(Exception):
                    await provider.aclose()
        return counts

    async def _run(self, shard: Shard, global_results: dict[str, DimensionResult],
                   collector: _Collector) -> None:
        parts, leased = self._parts, self._leased
        assert parts is not None and leased is not None, "setup() comes before run_shard()"
        plan = _shard_plan(parts.plan, shard)
        state = RunState(plan, [item.section for item in shard.items])
        for section_state, item in zip(state.current, shard.items, strict=True):
            section_state.index = item.index
            section_state.results.update(item.prior)
        for name in shard.done:
            state.arm(name, 0)
            state.started.add(name)
            state.finished.add(name)
        state.global_results.update(global_results)
        config = parts.config
        run = Run(process_id=parts.process_id, plan=plan, plugin=parts.plugin,
                  hooks=Hooks(parts.plugin, _sync_report(collector),
                              strict=not config.continue_on_error),
                  config=config, registry=parts.registry, limiter=cast(Any, leased),
                  pricing=parts.pricing, call_times=self._times, metadata=parts.metadata,
                  preloaded=shard.preloaded)
        await _ShardScheduler(run, state, Observers([collector]), shard, self._slots).execute()


def _shard_plan(plan: Plan, shard: Shard) -> Plan:
    """The level's dimensions, and the finished ones they read (with nothing to wait for)."""
    level = set(shard.dimensions)
    names = level | set(shard.done)
    order = tuple(name for name in plan.order if name in names)
    return Plan({name: plan.dimensions[name] for name in order},
                {name: plan.dependencies[name] if name in level else () for name in order},
                order)


def _sync_report(collector: _Collector) -> Any:
    async def report(hook: str, error: BaseException) -> None:
        collector.hook_failed(hook, error)

    return report
