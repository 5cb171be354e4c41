"""The driver's side of a run over a Ray cluster: `DagEngine(..., cluster=RayCluster(...))`.

The driver runs the DAG level by level across its global barriers. A level is the section
dimensions whose global dependencies have all run (level 0: those with none); its
sections are cut into shards that the worker actors run, a few shards ahead per worker,
each with dagengine's own per-section pipelines (see _worker.py). Between levels the
driver runs the global dimensions that the finished level completes, on its own event
loop and through the same cluster-wide limit, then their transformations; the next level
is sharded from the section list as they left it. Each section dimension runs over the
section list as it was when its global dependencies were done, as in one process.

Results stream back in batches and are applied here through the single-process
scheduler's own bookkeeping (`Scheduler._complete_section`), so progress, the callbacks,
the store, cost and the final result come out as in one process; workers never write the
store, and `resume=True` sends the stored results with the shards, so only what is
missing is called.

A worker that dies (killed actor, lost node) ends its shards' streams with an actor error:
what the driver has not received of them goes, as new shards, to the other workers while
a replacement actor starts; a result that arrives twice counts once. Only the calls in
flight on the dead worker are made twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from .._run import Run, RunState, SectionState
from ..call import Slot
from ..errors import ConfigurationError
from ..graph import Plan
from ..plugin import Observers
from ..scheduler import RunFailed, Scheduler
from ..store._codec import MADE
from ..types import WorkerProgress
from ._errors import ClusterError
from ._leased import LeasedLimiter
from ._pickling import pickled_parts, without_clients
from ._shard import Batch, Shard, ShardItem, packed_shard, unpacked
from ._worker import RunParts, SectionWorker

if TYPE_CHECKING:
    from ..progress import ProgressTracker
    from ._cluster import RayCluster

log = logging.getLogger("dagengine")

# Most sections in one shard: each shard costs the driver a remote call, a stream and its
# final batch; a level is cut finer when it has fewer sections (see _run_level).
SHARD_SECTIONS = 200
SHARDS_AHEAD = 2  # shards in flight per worker, so that one's tail does not idle it
WORKERS_SECONDS = 0.1  # how stale progress.workers may be while results stream in


def levels(plan: Plan) -> list[tuple[list[str], list[str]]]:
    """Per level: its section dimensions, then the global dimensions run after it."""
    level: dict[str, int] = {}
    for name in plan.order:
        deps = plan.dependencies[name]
        if plan.is_global(name):
            level[name] = max((level[d] for d in deps), default=0)
        else:
            level[name] = max((level[d] + 1 if plan.is_global(d) else level[d] for d in deps),
                              default=0)
    out: list[tuple[list[str], list[str]]] = [([], []) for _ in
                                              range(max(level.values(), default=0) + 1)]
    for name in plan.order:
        out[level[name]][1 if plan.is_global(name) else 0].append(name)
    return out


def check_cluster(cluster: Any) -> None:
    from ._cluster import RayCluster

    if not isinstance(cluster, RayCluster):
        raise ConfigurationError(
            f"cluster must be None (one process) or a dagengine.ray.RayCluster, e.g. "
            f"cluster=RayCluster(address=None, workers=4); got {type(cluster).__name__}")


async def execute_on_cluster(cluster: RayCluster, run: Run, state: RunState,
                             observers: Observers, progress: ProgressTracker) -> None:
    """Execute every item of the run over `cluster`; raises RunFailed as Scheduler does."""
    parts = RunParts(process_id=run.process_id, plan=run.plan, plugin=run.plugin,
                     registry=without_clients(run.registry), config=run.config,
                     pricing=run.pricing, metadata=run.metadata)
    pickled = pickled_parts(parts, run.plugin, run.registry)  # before any call
    await _ClusterRun(cluster.start(), run, state, observers, progress, pickled).execute()


@dataclass(slots=True, eq=False)
class _Worker:
    actor: Any
    name: str
    share: int
    lost: bool = False
    started: float = field(default_factory=time.monotonic)
    results: int = 0
    requests: int = 0
    in_flight: int = 0


@dataclass(slots=True, eq=False)
class _Pending:
    """A shard as the driver follows it: what each of its sections still needs."""

    shard: Shard
    states: dict[int, SectionState]  # by item key
    todo: dict[int, set[str]]  # by item key


class _ClusterRun:
    def __init__(self, cluster: RayCluster, run: Run, state: RunState, observers: Observers,
                 progress: ProgressTracker, pickled: bytes) -> None:
        import ray

        self.ray = ray
        self.cluster = cluster
        self.run = run
        self.state = state
        self.observers = observers
        self.progress = progress
        self.pickled = pickled
        self.workers: list[_Worker] = []
        self._names = itertools.count(1)
        self._shard_ids = itertools.count(1)
        self._replacing: dict[str, asyncio.Future[_Worker]] = {}
        self.limiter: Any = None
        self.limiter_stats: Any = None
        self._workers_reported = 0.0
        # A run with a store (batch mode's ledger is the store's) takes each result's row
        # as the worker made it; without, a row made would only be dropped.
        self._rows = run.batch_ledger is not None

    async def execute(self) -> None:
        ray, run = self.ray, self.run
        self.parts_ref = ray.put(self.pickled)
        # What the driver holds grows by every result streamed in; each full collection
        # of the cyclic GC would walk all of it again (about a third of the driver's CPU
        # per call, measured). Frozen after each batch, it is walked no more; thawed at the
        # end. A process that froze objects itself is left alone.
        self._freeze = gc.isenabled() and gc.get_freeze_count() == 0
        leased: LeasedLimiter | None = None
        try:
            # The worker processes start while the limiter actor does (a second each).
            self.workers = self._spawn_workers()
            self.limiter = self.cluster.start_limiter(run.config.rate_limits)
            leased = LeasedLimiter(self.limiter, session="driver")
            # The driver's own calls (the global dimensions) take the cluster's limit too.
            self.local = Scheduler(replace(run, limiter=cast(Any, leased)), self.state,
                                   self.observers)
            await asyncio.gather(*(self._set_up(worker) for worker in self.workers))
            for name in run.plan.order:
                await self.local._arm_if_ready(name)
            for section_dims, global_dims in levels(run.plan):
                if section_dims:
                    await self._run_level(section_dims)
                for name in global_dims:
                    await self._run_global(name)
        finally:
            if self._freeze:
                gc.unfreeze()
            await self._finish(leased)

    # -- workers ---------------------------------------------------------------------------

    def _spawn_workers(self) -> list[_Worker]:
        count = min(self.cluster.worker_count(), self.run.config.concurrency)
        concurrency = self.run.config.concurrency
        shares = [concurrency // count + (1 if i < concurrency % count else 0)
                  for i in range(count)]
        workers = [self._spawn(share) for share in shares]
        self.cluster.actors = [w.actor for w in workers]
        return workers

    def _spawn(self, share: int) -> _Worker:
        name = f"worker-{next(self._names)}"
        actor = _actor_class().options(
            num_cpus=1, max_concurrency=1000, scheduling_strategy="SPREAD",
            namespace=self.cluster.namespace,
        ).remote(name)
        return _Worker(actor, name, share)

    async def _set_up(self, worker: _Worker) -> _Worker:
        try:
            await worker.actor.setup.remote(self.parts_ref, self.limiter, worker.share,
                                            self.observers.has("attempt_done"), self._rows)
        except self.ray.exceptions.RayError as exc:
            raise ClusterError(
                f"a worker actor did not start: {exc}; the cluster's workers must be able to "
                f"import dagengine and the plugin's module (install them there, or pass "
                f"RayCluster(init_options={{'runtime_env': ...}}))") from exc
        return worker

    async def _new_worker(self, share: int) -> _Worker:
        worker = self._spawn(share)
        self.workers.append(worker)  # killed at the end, even if it never gets to work
        return await self._set_up(worker)

    async def _replacement(self, lost: _Worker) -> _Worker:
        """One new worker for a lost one (started once, however many shards noticed)."""
        task = self._replacing.get(lost.name)
        if task is None:
            lost.lost = True
            log.warning("Ray worker %s was lost; its unfinished sections run again",
                        lost.name)
            task = self._replacing[lost.name] = asyncio.ensure_future(
                self._new_worker(lost.share))
        worker = await task
        self.cluster.actors = [w.actor for w in self.workers if not w.lost]
        return worker

    async def _finish(self, leased: LeasedLimiter | None) -> None:
        ray = self.ray
        alive = [w for w in self.workers if not w.lost]
        with contextlib.suppress(Exception):
            await asyncio.gather(*(w.actor.finish.remote() for w in alive),
                                 return_exceptions=True)
        for worker in self.workers:
            with contextlib.suppress(Exception):
                ray.kill(worker.actor)
        self.cluster.actors = []
        if leased is None:  # the limiter actor did not start
            return
        with contextlib.suppress(Exception):
            await leased.aclose()
        with contextlib.suppress(Exception):
            self.limiter_stats = await self.limiter.stats.remote()
            self.cluster.last_limiter_stats = self.limiter_stats
        with contextlib.suppress(Exception):
            ray.kill(self.limiter)

    # -- a level of section dimensions -----------------------------------------------------

    async def _run_level(self, dims: list[str]) -> None:
        state = self.state
        for name in dims:
            await self.local._arm_if_ready(name)  # armed already, unless the plan is odd
        needs: dict[int, tuple[SectionState, list[str]]] = {}
        for name in dims:
            for section_state in state.snapshots.get(name, ()):
                if name not in section_state.results:
                    needs.setdefault(id(section_state), (section_state, []))[1].append(name)
        items = list(needs.values())
        if not items:
            return
        reads = {d for name in dims for d in self.run.plan.dependencies[name]} - set(dims)
        queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        alive = [w for w in self.workers if not w.lost]
        size = max(1, min(SHARD_SECTIONS, math.ceil(
            len(items) / (len(alive) * SHARDS_AHEAD * 2))))
        pending = [self._shard(dims, reads, items[i:i + size])
                   for i in range(0, len(items), size)]
        for shard in pending:
            queue.put_nowait(shard)
        left = [len(pending)]
        globals_ref = self.ray.put(dict(state.global_results))
        try:
            async with asyncio.TaskGroup() as group:
                for worker in alive:
                    for _ in range(SHARDS_AHEAD):
                        group.create_task(self._feed(worker, queue, left, globals_ref))
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None

    def _shard(self, dims: list[str], reads: set[str],
               items: Iterable[tuple[SectionState, list[str]]]) -> _Pending:
        preloaded = self.run.preloaded
        shard = Shard(next(self._shard_ids), tuple(dims), tuple(sorted(reads)), [],
                      len(self.state.current))
        states: dict[int, SectionState] = {}
        todo: dict[int, set[str]] = {}
        for key, (section_state, names) in enumerate(items):
            prior = {d: section_state.results[d] for d in reads | set(dims)
                     if d in section_state.results}
            shard.items.append(ShardItem(key, section_state.index, section_state.section, prior,
                                         tuple(names)))
            for name in names:
                stored = preloaded.get((name, section_state.index))
                if stored is not None:
                    shard.preloaded[name, section_state.index] = stored
            states[key] = section_state
            todo[key] = set(names)
        return _Pending(shard, states, todo)

    def _rest_of(self, pending: _Pending) -> _Pending | None:
        """A new shard of what `pending` has not delivered, with what it did as prior."""
        shard = pending.shard
        reads = set(shard.done)
        items = [(pending.states[item.key],
                  [d for d in item.dimensions if d in pending.todo[item.key]])
                 for item in shard.items if pending.todo[item.key]]
        return self._shard(list(shard.dimensions), reads, items) if items else None

    async def _feed(self, worker: _Worker, queue: asyncio.Queue[_Pending | None],
                    left: list[int], globals_ref: Any) -> None:
        exceptions = self.ray.exceptions
        lost = (exceptions.RayActorError, exceptions.ActorUnavailableError)
        while (pending := await queue.get()) is not None:
            try:
                await self._stream(worker, pending, globals_ref)
            except lost:
                rest = self._rest_of(pending)
                if rest is not None:
                    queue.put_nowait(rest)
                else:
                    self._shard_done(queue, left)
                worker = await self._replacement(worker)
                continue
            except exceptions.RayError as exc:
                raise ClusterError(f"a shard failed on Ray worker {worker.name}: {exc}") from exc
            self._shard_done(queue, left)

    def _shard_done(self, queue: asyncio.Queue[_Pending | None], left: list[int]) -> None:
        left[0] -= 1
        if left[0] == 0:
            for _ in range(len(self.workers) * SHARDS_AHEAD + len(self._replacing) * 2 + 8):
                queue.put_nowait(None)

    async def _stream(self, worker: _Worker, pending: _Pending, globals_ref: Any) -> None:
        stream = worker.actor.run_shard.options(num_returns="streaming").remote(
            packed_shard(pending.shard), globals_ref)
        async for ref in stream:
            item = await ref
            # The cyclic GC would otherwise run a young collection every few hundred of
            # the objects a batch unpickles into (a result is a dozen), walking them all;
            # what the batch leaves is frozen after it anyway (see execute).
            paced = self._freeze and gc.isenabled()
            if paced:
                gc.disable()
            try:
                batch = unpacked(item)
                await self._apply(worker, pending, batch)
            finally:
                if paced:
                    gc.enable()
                    gc.freeze()
            if batch.final:
                if batch.failure is not None:
                    raise RunFailed(batch.failure)
                missing = sum(len(t) for t in pending.todo.values())
                if missing:
                    raise ClusterError(f"Ray worker {worker.name} ended a shard with {missing} "
                                       f"results missing")

    async def _apply(self, worker: _Worker, pending: _Pending, batch: Batch) -> None:
        observers, local, state = self.observers, self.local, self.state
        for (dimension, provider), count in batch.sent.items():
            for _ in range(count):
                await observers.call("request_sent", dimension, provider)
        for (dimension, provider), count in batch.ended.items():
            for _ in range(count):
                await observers.call("request_done", dimension, provider)
        worker.requests += sum(batch.sent.values())
        worker.in_flight += sum(batch.sent.values()) - sum(batch.ended.values())
        for dimension, error in batch.retries:
            await observers.call("retry", dimension, error)
        for attempt in batch.attempts:
            await observers.call("attempt_done", attempt)
        for hook, error in batch.hook_errors:
            await self.run.hooks._report(hook, error)
        for outcome in batch.outcomes:
            todo = pending.todo[outcome.key]
            if outcome.dimension not in todo:
                continue  # a second delivery (a shard run again after its worker died)
            todo.discard(outcome.dimension)
            worker.results += 1
            section_state = pending.states[outcome.key]
            if outcome.dimension not in state.started:
                await local._dimension_started(outcome.dimension)
            if not section_state.started:
                section_state.started = True
                await observers.call("section_started", section_state.index,
                                     section_state.section)
            if outcome.row is not None:
                MADE[id(outcome.result)] = (outcome.result, outcome.row)
            try:
                await local._complete_section(outcome.dimension, section_state,
                                              outcome.result, outcome.error,
                                              restored=outcome.restored)
            finally:
                if outcome.row is not None:  # not taken: the store did not record it
                    MADE.pop(id(outcome.result), None)
        # The per-worker view is a model per worker: made at most every WORKERS_SECONDS,
        # and with each shard's last batch (so a level's end shows every result).
        if batch.final or time.monotonic() - self._workers_reported >= WORKERS_SECONDS:
            self._report_workers()

    def _report_workers(self) -> None:
        now = self._workers_reported = time.monotonic()
        self.progress.workers = [
            WorkerProgress(name=w.name, alive=not w.lost, completed=w.results,
                           requests=w.requests, in_flight=max(0, w.in_flight),
                           concurrency=w.share,
                           calls_per_second=w.results / max(now - w.started, 1e-9))
            for w in self.workers]

    # -- the global dimensions, on the driver ----------------------------------------------

    async def _run_global(self, name: str) -> None:
        state, local = self.state, self.local
        await local._arm_if_ready(name)
        if name in state.finished:
            return
        slot = Slot(asyncio.Semaphore(1))
        await slot.acquire()
        try:
            if name not in state.started:
                await local._dimension_started(name)
            await local._run_global(name, slot)
        finally:
            slot.release()


@functools.cache
def _actor_class() -> Any:
    """SectionWorker as a Ray actor class, made once: each `ray.remote(SectionWorker)`
    exports the class to the cluster again (disassembling it), a tenth of a second of the
    driver's CPU per run."""
    import ray

    return ray.remote(SectionWorker)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What stopped the level (the first shard's error), not the TaskGroup around it."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_error(error)
        if not isinstance(error, asyncio.CancelledError):
            return error
    return group.exceptions[0]


__all__ = ["check_cluster", "execute_on_cluster", "levels"]
