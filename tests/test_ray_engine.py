"""DagEngine(..., cluster=RayCluster(...)) on a real local Ray cluster started here, against
the simulator as a real HTTP server: the same results as one process, one cluster-wide
limit, a killed worker's sections run elsewhere, the store and resume on the driver.

Ray starts once for the module (two CPUs, two workers); each run starts its own worker
actors and limiter actor, as a user's run does.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from dagengine import (
    ConfigurationError,
    DagEngine,
    Dimension,
    DimensionResult,
    Plugin,
    ProcessResult,
)
from dagengine.ray import RayCluster
from dagengine.ray._engine import levels
from dagengine.simulator import Simulator, SimulatorProcess

HAVE_RAY = find_spec("ray") is not None
pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'dagengine[ray]'"),
]
WORKERS = 2
KEY = "sk-test-ray-engine-0123456789"
MODEL = "gpt-4o-mini"


class Reviews(Plugin):
    """Two dependent section dimensions and a global one over the second."""

    def __init__(self) -> None:
        super().__init__("reviews", "Reviews", "ray engine test plugin")
        self.dimensions = ["sentiment", "summary", Dimension("overview", scope="global")]

    def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        return {"summary": ["sentiment"], "overview": ["summary"]}

    def create_prompt(self, ctx: Any) -> str:
        if ctx.is_global:
            summaries = [str(r.data) for r in ctx.dependencies["summary"].data["sections"]]
            return "Summarize these reviews:\n" + "\n".join(summaries)
        section = ctx.sections[0]
        if ctx.dimension == "sentiment":
            return f"[{section.metadata['id']}/sentiment] Sentiment of: {section.content}"
        total = ctx.dependencies["total"].data
        score = ctx.dependencies["sentiment"].data["score"]
        return (f"[{section.metadata['id']}/summary] Summarize this review.\n"
                f"{section.content} (number {ctx.section_index} of {total}, score {score})")

    def transform_dependencies(self, ctx: Any) -> dict[str, Any]:
        # What a worker's hooks see of the run: its section count, not the shard's.
        return {**ctx.dependencies, "total": DimensionResult(data=ctx.total_sections)}

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "openai", "options": {"model": MODEL, "max_tokens": 60}}


class Refusing(Reviews):
    """A plugin whose prompt for one section fails."""

    def create_prompt(self, ctx: Any) -> str:
        if not ctx.is_global and ctx.sections[0].metadata["id"] == "s5":
            raise ValueError("section s5 cannot be prompted")
        return super().create_prompt(ctx)


class Locked(Reviews):
    """A plugin holding a lock, which does not pickle."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = {"retries": 2, "guard": threading.Lock()}


def sections(count: int) -> list[dict[str, Any]]:
    moods = ["great product, works well", "terrible, it broke", "fine, nothing special"]
    return [{"content": f"Review {i}: {moods[i % 3]}", "metadata": {"id": f"s{i}"}}
            for i in range(count)]


def engine(sim: Simulator | SimulatorProcess, cluster: RayCluster | None,
           plugin: Plugin | None = None, **options: Any) -> DagEngine:
    execution = {"concurrency": 8, "retry_delay": 0.01, **options.pop("execution", {})}
    return DagEngine(plugin or Reviews(),
                     providers={"openai": {"api_key": KEY, "base_url": sim.openai_base_url}},
                     execution=execution, cluster=cluster, **{"store": False, **options})


def everything(result: ProcessResult) -> dict[str, Any]:
    """What must be equal between runs: every section's data per dimension, the global
    results, the cost."""
    assert result.costs is not None
    return {
        "sections": [{d: (r.data, r.error) for d, r in s.results.items()} for s in result.sections],
        "globals": {d: (r.data, r.error) for d, r in result.global_results.items()},
        "cost": round(result.costs.total_cost, 12),
        "tokens": (result.costs.input_tokens, result.costs.output_tokens),
    }


def requested(log: list[dict[str, Any]]) -> Counter[str]:
    """(section, dimension) of each logged request, from the tag the prompts start with."""
    tags: Counter[str] = Counter()
    for entry in log:
        found = re.search(r"\[(s\d+/\w+)\]", json.dumps(entry["body"]))
        tags[found.group(1) if found else "global"] += 1
    return tags


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    import ray.cloudpickle

    # Workers cannot import this test module: its plugin classes travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayCluster(address=None, workers=WORKERS) as started:
        yield started


# -- without Ray ------------------------------------------------------------------------


def test_an_engine_without_a_cluster_imports_nothing_of_ray() -> None:
    code = ("import sys, dagengine\n"
            "from dagengine.testing import FunctionProvider\n"
            "class P(dagengine.Plugin):\n"
            "    def __init__(self):\n"
            "        super().__init__('p'); self.dimensions = ['d']\n"
            "    def create_prompt(self, ctx): return 'hi'\n"
            "    def select_provider(self, *a): return {'provider': 'f'}\n"
            "e = dagengine.DagEngine(P(), providers=[FunctionProvider(name='f')], store=False)\n"
            "r = e.run(['a', 'b'])\n"
            "assert all(s.results['d'].ok for s in r.sections)\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ | {"PYTHONPATH": str(src)})
    assert out.stdout.strip() == "[]"


def test_a_cluster_that_is_not_a_ray_cluster_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"cluster must be None.*RayCluster"):
        DagEngine(Reviews(), providers={"openai": {"api_key": KEY}}, cluster="ray://x:1")


def test_levels_split_the_dag_at_its_global_barriers() -> None:
    from dagengine.graph import Plan

    plan = Plan.build(["a", "b", Dimension("g", scope="global"), "c", "d",
                       Dimension("h", scope="global")],
                      {"b": ["a"], "g": ["b"], "c": ["g"], "d": ["a"], "h": ["c", "d"]})
    assert levels(plan) == [(["a", "b", "d"], ["g"]), (["c"], ["h"])]


def test_a_batch_travels_as_one_pickle_and_comes_back_equal() -> None:
    from dagengine.ray._shard import Batch, Outcome, packed, unpacked
    from dagengine.types import CallInfo, TokenUsage

    tokens = TokenUsage.of(18, 13)
    call = CallInfo(model="gpt-4o-mini", provider="openai", tokens=tokens, cost=1e-5,
                    attempts=1, duration=0.01, finish_reason="stop", status_code=200)
    result = DimensionResult(data={"summary": "fine"}, metadata={"model": call.model,
                             "tokens": tokens}, call=call)
    batch = Batch("worker-1", outcomes=[Outcome("summary", 3, result, False)],
                  sent={("summary", "openai"): 1}, ended={("summary", "openai"): 1},
                  final=True)
    item = packed(batch)
    assert isinstance(item, bytes)  # one pickle: the driver's Ray thread does not load it
    back = unpacked(item)
    assert back == batch
    assert back.outcomes[0].result.metadata["tokens"] is back.outcomes[0].result.call.tokens


def test_a_batch_that_needs_cloudpickle_travels_as_itself() -> None:
    from dagengine.ray._shard import Batch, Outcome, packed, unpacked

    class Local:  # made inside a function: pickle cannot find it by name, cloudpickle can
        pass

    batch = Batch("worker-1", outcomes=[Outcome("summary", 0, DimensionResult(data=Local()),
                                                False)])
    assert packed(batch) is batch
    assert unpacked(batch) is batch


def test_the_progress_line_shows_the_live_workers_and_their_throughput() -> None:
    from dagengine.display import format_line
    from dagengine.types import ProgressUpdate, WorkerProgress

    line = format_line(ProgressUpdate(completed=5, total=10, workers=[
        WorkerProgress(name="worker-1", calls_per_second=61.4),
        WorkerProgress(name="worker-2", alive=False, calls_per_second=9.0),
        WorkerProgress(name="worker-3", calls_per_second=57.6)]))
    assert line.endswith("| workers: 2 (61/s, 58/s)")
    assert "workers" not in format_line(ProgressUpdate(completed=5, total=10))


# -- on Ray -----------------------------------------------------------------------------


async def test_a_run_on_ray_equals_the_run_in_one_process(cluster: RayCluster) -> None:
    async with Simulator(seed=4) as sim:
        local = await engine(sim, None).process(sections(30))
        local_requests = (await sim.stats())["requests"]
        await sim.reset()
        completed: list[str] = []
        # A generator on Ray (the driver reads it whole to shard it), a list in one process.
        on_ray = await engine(sim, cluster).process(
            (s for s in sections(30)),
            on_dimension_complete=lambda name, summary: completed.append(name))
        ray_requests = (await sim.stats())["requests"]
    assert everything(on_ray) == everything(local)
    assert all(r.ok for s in on_ray.sections for r in s.results.values())
    assert on_ray.global_results["overview"].ok
    assert ray_requests == local_requests == 61
    assert completed == ["sentiment", "summary", "overview"]


def test_run_on_ray_retries_on_the_workers_as_in_one_process(cluster: RayCluster) -> None:
    from dagengine import ProviderError
    from dagengine.testing import FunctionProvider

    def first_attempt_fails(request: Any, attempt: int) -> BaseException | None:
        return ProviderError("HTTP 500", status_code=500) if attempt == 1 else None

    def engine_on(where: RayCluster | None) -> DagEngine:
        provider = FunctionProvider(name="openai", fail=first_attempt_fails,
                                    answer=lambda request: {"score": 1.0, "echo": request.input})
        return DagEngine(Reviews(), providers=[provider], store=False, cluster=where,
                         execution={"concurrency": 6, "retry_delay": 0.01})

    local = engine_on(None).run(sections(10))  # the synchronous entry point
    on_ray = engine_on(cluster).run(sections(10))
    assert everything(on_ray) == everything(local)
    assert [r.call.attempts for s in on_ray.sections for r in s.results.values()
            if r.call is not None] == [2] * 20


async def test_a_failure_stops_a_strict_run_on_ray_as_in_one_process(
        cluster: RayCluster) -> None:
    strict = {"continue_on_error": False}
    async with Simulator() as sim:
        with pytest.raises(Exception) as local:
            await engine(sim, None, Refusing(), execution=strict).process(sections(12))
        with pytest.raises(Exception) as on_ray:
            await engine(sim, cluster, Refusing(), execution=strict).process(sections(12))
    assert type(on_ray.value) is type(local.value)
    assert "section s5 cannot be prompted" in str(on_ray.value)
    assert str(on_ray.value) == str(local.value)


async def test_progress_shows_each_worker_and_its_throughput(cluster: RayCluster) -> None:
    updates: list[Any] = []
    async with Simulator(seed=4) as sim:
        result = await engine(sim, cluster).process(sections(20), on_progress=updates.append)
    assert len(result.sections) == 20
    final = updates[-1]
    assert final.completed == final.total == 41
    assert len(final.workers) == WORKERS
    assert sum(w.completed for w in final.workers) == 40  # the global ran on the driver
    assert all(w.completed > 0 and w.calls_per_second > 0 for w in final.workers)
    assert [w.concurrency for w in final.workers] == [4, 4]  # concurrency 8, cluster-wide


async def test_rate_limits_hold_for_the_whole_cluster(cluster: RayCluster) -> None:
    # In its own process, so that the driver's event loop does not bunch up its arrivals.
    async with SimulatorProcess(requests_per_minute=1200, seed=3) as sim:  # 20/s, bursts of 20
        result = await engine(sim, cluster, execution={
            "concurrency": 32, "rate_limits": {"openai": {"requests_per_second": 20}},
        }).process(sections(40))
        stats = await sim.stats()
    assert all(r.ok for s in result.sections for r in s.results.values())
    # Each worker pacing itself to the limit (40/s together) got 23 429s of 61 in a trial.
    assert stats["rate_limited"] <= 1
    assert stats["requests"] == 81 + stats["rate_limited"]


async def test_a_plugin_that_cannot_be_pickled_names_its_attribute(
        cluster: RayCluster) -> None:
    async with Simulator() as sim:
        with pytest.raises(ConfigurationError, match=r"its attribute settings\['guard'\]"):
            await engine(sim, cluster, Locked()).process(sections(3))
        assert (await sim.stats())["requests"] == 0


async def test_a_provider_that_cannot_be_pickled_names_its_attribute(
        cluster: RayCluster) -> None:
    from dagengine.testing import FunctionProvider

    provider = FunctionProvider(name="openai")
    provider.audit_log = open(os.devnull, "w")  # noqa: SIM115, ASYNC230 (an open file, on purpose)
    try:
        with pytest.raises(ConfigurationError, match=r"provider 'openai'.*attribute audit_log"):
            await DagEngine(Reviews(), providers=[provider], store=False,
                            cluster=cluster).process(sections(3))
    finally:
        provider.audit_log.close()
    assert provider.calls == []


async def test_a_killed_worker_s_sections_run_again_elsewhere(
        cluster: RayCluster, caplog: pytest.LogCaptureFixture) -> None:
    import ray

    count, concurrency = 20, 4
    killed: list[int] = []

    def kill_one(progress: Any) -> None:
        if not killed and progress.completed >= 8:
            killed.append(progress.in_flight)
            ray.kill(cluster.actors[0])

    async with Simulator(seed=2, latency=0.15) as sim:
        result = await engine(sim, cluster, execution={"concurrency": concurrency}).process(
            sections(count), on_progress=kill_one)
        log = await sim.recent_requests()
        stats = await sim.stats()
    assert killed, "the run ended before a worker was killed"
    assert "Ray worker worker-1 was lost" in caplog.text
    assert len(result.sections) == count
    assert all(r.ok for s in result.sections for r in s.results.values())
    assert result.global_results["overview"].ok
    assert stats["requests"] <= 50, "the simulator keeps the last 50 requests only"
    tags = requested(log)
    assert len(tags) == 2 * count + 1
    twice = sum(n - 1 for n in tags.values())
    assert twice <= concurrency  # at most the calls in flight at the kill
    assert stats["requests"] == 2 * count + 1 + twice


async def test_the_store_is_written_on_the_driver_and_resume_calls_only_what_is_missing(
        cluster: RayCluster, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with Simulator(seed=6, latency=0.05) as sim:
        full = await engine(sim, None).process(sections(24))
        await sim.reset()
        seen = asyncio.Event()

        def stop_midway(progress: Any) -> None:
            if progress.completed >= 20:
                seen.set()

        first = engine(sim, cluster, store=str(db), cache=False)
        task = asyncio.ensure_future(first.process(sections(24), process_id="reviews-1",
                                                   on_progress=stop_midway))
        await seen.wait()
        task.cancel()  # the driver goes down mid-run
        with pytest.raises(asyncio.CancelledError):
            await task
        stored = sqlite_results(db)
        assert 20 <= stored < 49
        before = (await sim.stats())["requests"]
        resumed = await engine(sim, cluster, store=str(db), cache=False).process(
            sections(24), process_id="reviews-1", resume=True)
        after = (await sim.stats())["requests"]
    assert everything(resumed) == everything(full)
    assert after - before == 49 - stored
    assert sqlite_results(db) == 49


def sqlite_results(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as connection:
        return int(connection.execute("select count(*) from results where ok = 1")
                   .fetchone()[0])


async def test_the_workers_make_the_store_rows_and_the_driver_writes_them_as_one_process(
        cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import pydantic_core

    from dagengine.store import _codec

    made_here = Counter[str]()

    def counted(value: Any, **options: Any) -> bytes:
        if isinstance(value, dict) and set(value) == {"data", "error", "metadata", "call"}:
            made_here["rows"] += 1
        return pydantic_core.to_json(value, **options)

    async with Simulator(seed=7) as sim:
        await engine(sim, None, store=str(tmp_path / "one.db"), cache=False).process(
            sections(12), process_id="rows")
        await sim.reset()
        monkeypatch.setattr(_codec, "pydantic_core", types.SimpleNamespace(to_json=counted))
        await engine(sim, cluster, store=str(tmp_path / "ray.db"), cache=False).process(
            sections(12), process_id="rows")
    assert made_here["rows"] == 1  # the global dimension's, run on the driver
    assert not _codec.MADE
    assert stored_rows(tmp_path / "ray.db") == stored_rows(tmp_path / "one.db")


def stored_rows(db: Path) -> dict[tuple[str, int], Any]:
    """Each stored result as JSON, without what differs from run to run (durations)."""
    import sqlite3

    def timeless(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if k != "duration"}
        return value

    with sqlite3.connect(db) as connection:
        rows = connection.execute("select dimension, section_index, ok, result from results")
        return {(d, i): (ok, timeless(json.loads(text))) for d, i, ok, text in rows}
