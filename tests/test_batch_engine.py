"""Batch mode (issue 13), the engine's side: a batch dimension's calls go through the
providers' batch APIs, pipelined through the DAG, durable and resumable by batch id, priced
at the batch discount.

The acceptance tests run the built-in providers through their official SDKs against the
simulator as a real server on 127.0.0.1, whose batches take a small delay; which batch held
which call is read from the simulator's own batch records (custom_ids `d<dimension>-s<section>
-a<attempt>`), never from timing. The collector's limits are checked with a small BatchAPI of
the test's own over dagengine.testing.FunctionProvider.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anthropic
import pytest

from batch_crash_worker import KEY, MODEL, BatchPlugin, batch_engine, batch_sections
from dagengine import DagEngine, Dimension, PreflightError, ProcessResult, RunStore
from dagengine.errors import ProviderError
from dagengine.providers._batch import (
    BatchAPI,
    BatchLimits,
    BatchOutcome,
    BatchRequest,
    BatchStatus,
)
from dagengine.simulator import Simulator
from dagengine.testing import FunctionProvider
from dagengine.types import TokenUsage

pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

WORKER = Path(__file__).with_name("batch_crash_worker.py")
DIMENSIONS = {"d0": "summarize", "d1": "classify", "d2": "overview"}


def data_of(result: ProcessResult) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return ([{d: r.data for d, r in s.results.items()} for s in result.sections],
            {d: r.data for d, r in result.global_results.items()})


def every_result(result: ProcessResult) -> list[Any]:
    return [*(r for s in result.sections for r in s.results.values()),
            *result.global_results.values()]


def call_key(custom_id: str) -> tuple[str, str]:
    """(dimension, section) of one of the engine's custom_ids: "d1-s12-a2" -> ("classify",
    "12")."""
    dimension, section, _ = custom_id.split("-")
    return DIMENSIONS[dimension], section[1:]


def billed_calls(stats: dict[str, Any]) -> Counter[tuple[str, str]]:
    """How often the simulator billed each (dimension, section)."""
    billed: Counter[tuple[str, str]] = Counter()
    for custom_id, count in stats["batch_billed_by_custom_id"].items():
        billed[call_key(custom_id)] += count
    return billed


def sim_batches(sim: Simulator) -> list[Any]:
    """The simulator's record of every batch it was sent (creation and end times, items)."""
    return list(sim._core.batches.by_id.values())


def every_call(sections: int) -> set[tuple[str, str]]:
    return ({(d, str(i)) for d in ("summarize", "classify") for i in range(sections)}
            | {("overview", "g")})


# -- the 1,000-section acceptance run ----------------------------------------------------------

THOUSAND = 1000


async def test_thousand_sections_in_batch_have_data_at_half_the_online_cost_and_pipeline(
) -> None:
    sections = batch_sections(THOUSAND)
    # Items error now and then (not billed), so the first dimension has later retry batches.
    async with Simulator(api_key=KEY, batch_delay=0.2, batch_error_rate=0.02,
                         seed=13) as sim:
        online = await batch_engine(None, sim.base_url, mode="online").process(sections)
        online_requests = (await sim.stats())["requests"]
        await sim.reset()
        batch = await batch_engine(None, sim.base_url, max_size=250).process(sections)
        stats = await sim.stats()
        batches = sim_batches(sim)

    results = every_result(batch)
    assert len(results) == 2 * THOUSAND + 1
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert data_of(batch) == data_of(online)
    assert all(r.call.mode == "batch" and r.metadata["mode"] == "batch" for r in results)
    assert stats["requests"] == 0 and online_requests == 2 * THOUSAND + 1  # none online

    assert online.costs is not None and batch.costs is not None
    assert batch.costs.total_cost == pytest.approx(online.costs.total_cost / 2, rel=0.01)
    assert set(batch.costs.by_mode) == {"batch"}
    by_batch = batch.costs.by_mode["batch"]
    assert by_batch.calls == 2 * THOUSAND + 1
    assert by_batch.online_cost == pytest.approx(online.costs.total_cost, rel=1e-9)
    assert batch.costs.batch_savings == pytest.approx(online.costs.total_cost / 2, rel=0.01)

    # Every call billed once; errored items were retried into later batches.
    assert stats["batch_items_by_result"]["errored"] > 0
    assert billed_calls(stats) == Counter(dict.fromkeys(every_call(THOUSAND), 1))

    def holding(dimension: str) -> list[Any]:
        return sorted((b for b in batches if any(
            call_key(i.request.custom_id)[0] == dimension for i in b.items)),
            key=lambda b: b.created)

    summarize, classify = holding("summarize"), holding("classify")
    assert all(len(b.items) <= 250 for b in batches)
    assert len(summarize) >= THOUSAND // 250
    # The DAG pipelines: classify's first batch went in before summarize's last one ended.
    assert classify[0].created < max(b.ends_at for b in summarize)


# -- durable: SIGKILL while batches are in flight, then resume -----------------------------------

CRASH_SECTIONS = 200


def recorded(store: Path, dimension: str) -> int:
    """Batch items of `dimension` the store committed, as a second connection sees them."""
    if not store.exists():
        return 0
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM batch_items WHERE dimension = ?",
                                (dimension,)).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    finally:
        conn.close()


def recorded_batches(store: Path) -> set[str]:
    if not store.exists():
        return set()
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return {batch_id for (batch_id,) in conn.execute("SELECT batch_id FROM batches")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def all_on_file(sim: Simulator, store: Path) -> bool:
    """Every batch the simulator holds is in the store. The one window batch mode leaves
    open is the instant between the provider's answer to a submission and its commit (see
    store/_batches.py); the simulator runs on this test's loop, so it creates no batch
    between this check and the kill that follows it in the same step."""
    return {b.id for b in sim_batches(sim)} <= recorded_batches(store)


async def wait_for(condition: Callable[[], bool], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.005)


async def test_a_run_sigkilled_mid_batch_resumes_by_batch_id_and_pays_for_nothing_twice(
    tmp_path: Path,
) -> None:
    sections = batch_sections(CRASH_SECTIONS)
    async with Simulator(api_key=KEY, batch_delay=0.4, seed=7) as sim:
        reference = await batch_engine(None, sim.base_url).process(sections)
        assert all(r.ok for r in every_result(reference))
        await sim.reset()

        store, process_id = tmp_path / "batch-crash.db", "batch-crash"
        flag = tmp_path / "submissions-on-the-wire"
        worker = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), str(store), process_id, sim.base_url,
            "--sections", str(CRASH_SECTIONS), "--flag", str(flag),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            # Killed once the dependent dimension's first batch is on file, at a moment
            # when no submission is between the provider and the store: the worker is
            # stopped first, so no submission can start between the check and the kill.
            while True:
                await wait_for(lambda: worker.returncode is not None
                               or (recorded(store, "classify") > 0
                                   and all_on_file(sim, store)))
                if worker.returncode is not None:
                    output, _ = await worker.communicate()
                    pytest.fail(f"the worker exited early:\n{output.decode()}")
                os.kill(worker.pid, signal.SIGSTOP)
                if flag.read_text() == "0" and all_on_file(sim, store):
                    break
                os.kill(worker.pid, signal.SIGCONT)
                await asyncio.sleep(0.005)
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            if worker.returncode is None:
                worker.kill()
            await worker.communicate()
        now = time.monotonic()
        in_flight = [b for b in sim_batches(sim) if not b.ended(now)]
        assert in_flight, "no batch was in flight when the worker was killed"
        submitted_before = len(sim_batches(sim))
        in_flight_ids = {b.id for b in in_flight}

        engine = batch_engine(store, sim.base_url)
        resumed = await engine.process(sections, process_id=process_id, resume=True)
        await engine.close()
        stats = await sim.stats()

    assert data_of(resumed) == data_of(reference)
    assert billed_calls(stats) == Counter(dict.fromkeys(every_call(CRASH_SECTIONS), 1))
    assert stats["requests"] == 0
    # The batches in flight were re-attached to, not submitted again.
    resubmitted = {call_key(i.request.custom_id) for b in sim_batches(sim)[submitted_before:]
                   for i in b.items}
    attached = {call_key(i.request.custom_id) for b in in_flight for i in b.items}
    assert attached and not attached & resubmitted
    ledger = RunStore(store).batch_ledger(process_id)
    assert in_flight_ids <= set(ledger.states())
    assert RunStore(store).run(process_id).status == "completed"


async def test_every_batch_is_on_file_before_the_engine_waits_on_it(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    async with Simulator(api_key=KEY, batch_delay=0.3, seed=1) as sim:
        task = asyncio.create_task(batch_engine(store, sim.base_url).process(
            batch_sections(20), process_id="on-file"))
        await wait_for(lambda: bool(sim_batches(sim)), within=30)
        first = sim_batches(sim)[0]
        # The provider has the batch, it has not ended, and the store has it already.
        await wait_for(lambda: recorded(store, "summarize") == 20, within=30)
        assert not first.ended(time.monotonic())
        await task
    conn = sqlite3.connect(store)
    rows = conn.execute("SELECT custom_id, dimension, section_index, attempt FROM batch_items "
                        "WHERE batch_id = ?", (first.id,)).fetchall()
    assert {r[0] for r in rows} == {i.request.custom_id for i in first.items}
    assert all(r[1] == "summarize" and r[3] == 1 for r in rows)
    assert sorted(r[2] for r in rows) == list(range(20))


# -- per-item errors, expiry, cancellation ----------------------------------------------------


async def test_items_that_errored_are_retried_in_later_batches_until_they_have_data() -> None:
    async with Simulator(api_key=KEY, batch_delay=0.01, batch_error_rate=0.3, seed=5) as sim:
        result = await batch_engine(None, sim.base_url, retries=6).process(batch_sections(30))
        stats = await sim.stats()
    assert all(r.ok for r in every_result(result))
    assert stats["batch_items_by_result"]["errored"] > 0
    assert any(r.call.attempts > 1 for r in every_result(result))
    assert billed_calls(stats) == Counter(dict.fromkeys(every_call(30), 1))


async def test_items_still_erroring_after_their_retries_end_with_the_cause() -> None:
    async with Simulator(api_key=KEY, batch_delay=0.01, batch_error_rate=1.0) as sim:
        result = await batch_engine(None, sim.base_url, retries=1).process(batch_sections(3))
    assert len(result.sections) == 3
    for section in result.sections:
        error = section.results["summarize"].error
        assert error is not None and "500" in error and "after 2 attempts" in error


async def test_expired_items_are_retried_and_an_expiring_batch_names_the_expiry() -> None:
    async with Simulator(api_key=KEY, batch_delay=0.01, batch_expire_rate=0.3, seed=9) as sim:
        retried = await batch_engine(None, sim.base_url, retries=6).process(batch_sections(20))
        stats = await sim.stats()
    assert all(r.ok for r in every_result(retried))
    assert stats["batch_items_by_result"]["expired"] > 0

    # Every batch outlives its completion window: what is left ends with the cause.
    async with Simulator(api_key=KEY, batch_delay=5.0, batch_expire_after=0.05) as sim:
        expired = await batch_engine(None, sim.base_url, retries=1).process(batch_sections(2))
    for section in expired.sections:
        error = section.results["summarize"].error
        assert error is not None and "expired" in error


async def test_a_batch_cancelled_at_the_provider_is_retried_in_a_new_batch() -> None:
    async with Simulator(api_key=KEY, batch_delay=0.5, seed=2) as sim:
        client = anthropic.AsyncAnthropic(api_key=KEY, base_url=sim.base_url, max_retries=0)
        run = asyncio.create_task(batch_engine(None, sim.base_url).process(batch_sections(10)))
        await wait_for(lambda: bool(sim_batches(sim)), within=30)
        cancelled = sim_batches(sim)[0].id
        await client.messages.batches.cancel(cancelled)
        result = await run
        await client.close()
        stats = await sim.stats()
        batches = sim_batches(sim)
    assert batches[0].cancel_at is not None
    assert stats["batch_items_by_result"]["canceled"] == 10
    assert all(r.ok for r in every_result(result))
    assert all(r.call.attempts == 2 for s in result.sections for n, r in s.results.items()
               if n == "summarize")
    assert billed_calls(stats) == Counter(dict.fromkeys(every_call(10), 1))


# -- the three providers end to end ------------------------------------------------------------

KINDS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.0-flash",
         "anthropic": "claude-3-5-haiku-20241022"}


class ProviderPlugin(BatchPlugin):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": self.kind, "options": {"model": KINDS[self.kind],
                                                   "max_tokens": 64}}


def provider_engine(kind: str, sim: Simulator, mode: str) -> DagEngine:
    base = {"anthropic": sim.base_url, "openai": sim.openai_base_url,
            "gemini": sim.gemini_base_url}[kind]
    return DagEngine(ProviderPlugin(kind), providers={kind: {"api_key": KEY, "base_url": base}},
                     execution={"mode": mode, "max_retries": 2, "retry_delay": 0.01,
                                "batch": {"max_size": 4, "max_wait": 0.01,
                                          "poll_interval": 0.01}},
                     store=False)


@pytest.mark.parametrize("kind", list(KINDS))
async def test_each_provider_runs_a_plugin_through_its_batch_api(kind: str) -> None:
    async with Simulator(api_key=KEY, batch_delay=0.01) as sim:
        online_engine = provider_engine(kind, sim, "online")
        online = await online_engine.process(batch_sections(6))
        await online_engine.close()
        await sim.reset()
        engine = provider_engine(kind, sim, "batch")
        batch = await engine.process(batch_sections(6))
        await engine.close()
        stats = await sim.stats()
    assert data_of(batch) == data_of(online)
    assert all(r.ok and r.call.mode == "batch" for r in every_result(batch))
    assert stats["requests"] == 0 and stats["batches_created"] >= 3
    assert sum(stats["batch_requests"][k] for k in KINDS if k != kind) == 0
    assert billed_calls(stats) == Counter(dict.fromkeys(every_call(6), 1))
    assert batch.costs is not None and online.costs is not None
    assert batch.costs.total_cost == pytest.approx(online.costs.total_cost / 2, rel=1e-6)


async def test_a_global_dimension_may_stay_online_while_the_section_ones_batch() -> None:
    async with Simulator(api_key=KEY, batch_delay=0.01) as sim:
        engine = batch_engine(None, sim.base_url, plugin=BatchPlugin(mode="online"))
        result = await engine.process(batch_sections(5))
        stats = await sim.stats()
    assert result.global_results["overview"].call.mode == "online"
    assert all(r.call.mode == "batch" for s in result.sections for r in s.results.values())
    assert stats["requests"] == 1
    assert result.costs is not None
    assert set(result.costs.by_mode) == {"online", "batch"}
    assert result.costs.by_mode["online"].calls == 1
    assert result.costs.by_mode["batch"].calls == 10


# -- preflight -------------------------------------------------------------------------------


async def test_a_batch_dimension_whose_provider_has_no_batch_api_is_refused_before_any_call(
) -> None:
    provider = FunctionProvider(name="fake")

    class Plugin(BatchPlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "fake", "options": {"model": "m"}}

    engine = DagEngine(Plugin(), providers=[provider], execution={"mode": "batch"},
                       store=False)
    with pytest.raises(PreflightError, match=r"dimension 'summarize'.*provider 'fake' has no "
                                             r"batch API"):
        await engine.process(batch_sections(3))
    assert provider.calls == []


async def test_a_dimension_in_online_mode_needs_no_batch_api() -> None:
    provider = FunctionProvider(name="fake")

    class Online(BatchPlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "fake", "options": {"model": "m"}}

    online = Online()
    online.dimensions = [Dimension("summarize", mode="online"),
                         Dimension("classify", mode="online"),
                         Dimension("overview", scope="global", mode="online")]
    result = await DagEngine(online, providers=[provider], execution={"mode": "batch"},
                             store=False).process(batch_sections(2))
    assert all(r.ok for r in every_result(result))


# -- the collector's limits, over a BatchAPI of the test's own --------------------------------


class RecordingBatchAPI(BatchAPI):
    """Answers each batch at once through the FunctionProvider, and records what it got."""

    def __init__(self, provider: FunctionProvider, limits: BatchLimits) -> None:
        self.provider = provider
        self.limits = limits
        self.submitted: list[list[BatchRequest]] = []

    async def submit(self, requests: Sequence[BatchRequest]) -> str:
        assert len(requests) <= self.limits.max_requests
        assert sum(self.request_bytes(r) for r in requests) <= self.limits.max_bytes
        self.submitted.append(list(requests))
        return f"batch-{len(self.submitted)}"

    async def status(self, batch_id: str) -> BatchStatus:
        return BatchStatus(batch_id, "ended")

    async def results(self, batch_id: str,
                      custom_ids: Sequence[str]) -> AsyncIterator[BatchOutcome]:
        requests = {r.custom_id: r for r in self.submitted[int(batch_id.split("-")[1]) - 1]}
        for custom_id in custom_ids:
            try:
                response = await self.provider.execute(requests[custom_id].request)
            except ProviderError as exc:
                yield BatchOutcome(custom_id, error=exc)
            else:
                yield BatchOutcome(custom_id, response=response)

    async def cancel(self, batch_id: str) -> None:
        raise AssertionError("not cancelled in these tests")

    def request_bytes(self, request: BatchRequest) -> int:
        return 100


class BatchingProvider(FunctionProvider):
    api: RecordingBatchAPI | None = None

    def batch_api(self) -> BatchAPI | None:
        return self.api


def batching_engine(limits: BatchLimits, rate_limits: dict[str, Any] | None = None,
                    **batch: float) -> tuple[DagEngine, RecordingBatchAPI]:
    provider = BatchingProvider(name="fake", tokens=(1000, 1000))
    api = provider.api = RecordingBatchAPI(provider, limits)

    class Plugin(BatchPlugin):
        def select_provider(self, dimension: str, sections: Any = None,
                            context: Any = None) -> Any:
            return {"provider": "fake", "options": {"model": "gpt-4o-mini"}}

    engine = DagEngine(Plugin(), providers=[provider], store=False, execution={
        "mode": "batch", "concurrency": 2, "retry_delay": 0.01, "rate_limits": rate_limits or {},
        "batch": {"max_wait": 0.01, "poll_interval": 0.001, **batch}})
    return engine, api


async def test_batches_hold_at_most_max_size_and_the_providers_request_limit() -> None:
    engine, api = batching_engine(BatchLimits(max_requests=7, max_bytes=10**9), max_size=5)
    result = await engine.process(batch_sections(23))
    assert all(r.ok for r in every_result(result))
    assert max(len(b) for b in api.submitted) == 5
    assert sum(len(b) for b in api.submitted) == 2 * 23 + 1

    engine, api = batching_engine(BatchLimits(max_requests=7, max_bytes=10**9), max_size=100)
    await engine.process(batch_sections(23))
    assert max(len(b) for b in api.submitted) == 7


async def test_batches_stay_within_the_providers_byte_limit() -> None:
    engine, api = batching_engine(BatchLimits(max_requests=1000, max_bytes=350))
    result = await engine.process(batch_sections(10))
    assert all(r.ok for r in every_result(result))
    assert max(len(b) for b in api.submitted) == 3  # 100 bytes each


async def test_a_batch_call_is_priced_at_the_batch_rate_and_holds_no_slot_nor_permit(
) -> None:
    # concurrency=2 and one request a minute, yet the 23 first calls wait in one batch.
    engine, api = batching_engine(BatchLimits(max_requests=1000, max_bytes=10**9),
                                  {"fake": {"requests_per_minute": 1}}, max_wait=0.05)
    result = await engine.process(batch_sections(23))
    assert len(api.submitted[0]) == 23
    first = result.sections[0].results["summarize"].call
    assert first.mode == "batch"
    assert first.cost == pytest.approx(engine.pricing.cost(
        "gpt-4o-mini", TokenUsage.of(1000, 1000)) / 2)


async def test_a_batch_answer_failing_validation_is_re_asked_in_the_next_batch() -> None:
    from pydantic import BaseModel

    class Label(BaseModel):
        label: str

    engine, api = batching_engine(BatchLimits(max_requests=1000, max_bytes=10**9))
    provider = api.provider
    answers = Counter[int]()

    def answer(request: Any) -> Any:
        index = request.metadata.get("section_index")
        answers[index] += 1
        # Section 0's first answer is not a Label; the re-asked one is.
        return {"nope": 1} if index == 0 and answers[index] == 1 else {"label": "ok"}

    provider.answer = answer
    engine.plugin.dimensions = [Dimension("summarize", output_schema=Label)]
    engine.plugin.define_dependencies = lambda ctx: {}  # type: ignore[method-assign]
    result = await engine.process(batch_sections(3))
    assert result.sections[0].results["summarize"].data == {"label": "ok"}
    assert result.sections[0].results["summarize"].call.attempts == 2
    ids = [[r.custom_id for r in b] for b in api.submitted]
    assert "d0-s0-a1" in ids[0] and ids[1] == ["d0-s0-a2"]
    first = next(r for r in api.submitted[0] if r.custom_id == "d0-s0-a1")
    assert api.submitted[1][0].request.input != first.request.input  # the re-ask


def test_custom_ids_fit_anthropics_rule() -> None:
    from dagengine._batching import CUSTOM_ID, custom_id

    assert CUSTOM_ID.fullmatch(custom_id(12, 99_999_999, 101))
    assert CUSTOM_ID.fullmatch(custom_id(0, None, 1))


def test_an_old_store_opens_with_the_batch_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    RunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE batch_items")
    conn.execute("DROP TABLE batches")
    conn.execute("UPDATE schema_version SET version = 2")
    conn.commit()
    conn.close()
    RunStore(path).close()
    conn = sqlite3.connect(path)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"batches", "batch_items"} <= tables
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 3


# -- progress ----------------------------------------------------------------------------------


def test_batch_progress_counts_batches_and_items_and_estimates_from_the_providers_counts(
) -> None:
    from dagengine._batching import BatchInfo
    from dagengine.progress import batch_progress

    now = time.monotonic()
    running = BatchInfo("b1", "anthropic", MODEL, 100, now - 30.0,
                        BatchStatus("b1", "in_progress", processing=25, succeeded=75))
    ended = BatchInfo("b2", "anthropic", MODEL, 40, now - 60.0,
                      BatchStatus("b2", "ended", succeeded=39, errored=1))
    progress = batch_progress([running, ended])
    assert (progress.submitted, progress.in_progress, progress.ended) == (2, 1, 1)
    assert (progress.items, progress.items_done) == (140, 115)
    assert progress.eta_seconds == pytest.approx(10.0, abs=0.5)  # 75 done in 30 s, 25 left


async def test_the_live_display_and_progress_show_the_batches() -> None:
    import io

    stream = io.StringIO()
    updates: list[Any] = []
    async with Simulator(api_key=KEY, batch_delay=0.02) as sim:
        engine = batch_engine(None, sim.base_url)
        await engine.process(batch_sections(50), on_progress=updates.append,
                             progress_display={"display": "simple", "stream": stream,
                                               "terminal": False, "interval": 0})
    final = engine.get_progress()
    assert final is not None and final.batches is not None
    assert final.batches.submitted == len(sim_batches(sim)) >= 3
    assert final.batches.ended == final.batches.submitted and final.batches.in_progress == 0
    assert final.batches.items == final.batches.items_done == 2 * 50 + 1
    assert any(u.batches is not None and u.batches.in_progress for u in updates)
    assert "batches: 0 running" in stream.getvalue().splitlines()[-1]
    assert "running" in stream.getvalue()


# -- Ctrl-C ------------------------------------------------------------------------------------

CTRL_C_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from batch_crash_worker import batch_engine, batch_sections
engine = batch_engine({store!r}, {base_url!r})
engine.run(batch_sections(10), process_id="ctrl-c")
"""


async def test_ctrl_c_off_a_terminal_leaves_the_batches_running_and_says_how_to_resume(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.db"
    async with Simulator(api_key=KEY, batch_delay=30.0) as sim:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CTRL_C_CHILD.format(
                tests=str(Path(__file__).parent), store=str(store), base_url=sim.base_url),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            await wait_for(lambda: child.returncode is not None or (
                bool(sim_batches(sim)) and all_on_file(sim, store)))
            child.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(child.communicate(), 60)
        finally:
            if child.returncode is None:
                child.kill()
        batches = sim_batches(sim)
    text = err.decode()
    assert child.returncode == 130, text
    assert "provider batch(es) of this run are still running" in text
    assert "process_id='ctrl-c', resume=True" in text
    assert batches[0].id in text
    assert "Cancel them" not in text  # no question off a terminal
    assert all(b.cancel_at is None for b in batches)


async def test_ctrl_c_on_a_terminal_cancels_the_batches_only_when_told_to() -> None:
    import io

    from dagengine._batching import BatchInfo, after_interrupt
    from dagengine.providers import build_registry
    from dagengine.types import ProviderRequest

    async with Simulator(api_key=KEY, batch_delay=30.0) as sim:
        registry = build_registry({"anthropic": {"api_key": KEY, "base_url": sim.base_url}})
        api = registry.get("anthropic").batch_api()
        assert api is not None
        ids = []
        for _ in range(2):
            ids.append(await api.submit([BatchRequest("d0-s0-a1", ProviderRequest(
                input="Summarize this email in one sentence.\nHello",
                options={"model": MODEL, "max_tokens": 16}))]))
        await registry.get("anthropic").aclose()
        infos = [BatchInfo(i, "anthropic", MODEL, 1, time.monotonic(),
                           BatchStatus(i, "in_progress", processing=1)) for i in ids]
        asked: list[str] = []

        def no(prompt: str) -> str:
            asked.append(prompt)
            return ""

        def yes(prompt: str) -> str:
            return "y"

        out = io.StringIO()
        # after_interrupt runs where the run's loop has ended: on a thread of its own here.
        left = await asyncio.to_thread(after_interrupt, registry, infos[:1], "p1",
                                       durable=True, stream=out, ask=no)
        assert not left and asked and "Left running" in out.getvalue()
        assert sim._core.batches.by_id[ids[0]].cancel_at is None
        cancelled = await asyncio.to_thread(after_interrupt, registry, infos[1:], "p1",
                                            durable=True, stream=out, ask=yes)
        assert cancelled and sim._core.batches.by_id[ids[1]].cancel_at is not None
        assert "Cancelled 1 of 1" in out.getvalue()


# -- the demo ----------------------------------------------------------------------------------


def test_the_demo_in_batch_mode_prints_the_saving_next_to_the_online_price() -> None:
    import io
    import re

    from dagengine.cli.demo import DemoOptions, run_demo
    from dagengine.cli.demo.run import build_parser

    assert build_parser().parse_args(["--mode", "batch"]).mode == "batch"
    run = asyncio.run(run_demo(DemoOptions(emails=20, mode="batch", latency_scale=0.01,
                                           batch_delay=5.0), out=io.StringIO()))
    assert run.successes == 20
    assert run.simulator_stats is not None
    assert run.simulator_stats["requests"] == 0 and run.simulator_stats["batches_created"] >= 1
    costs = run.result.costs
    assert costs is not None
    line = next(x for x in run.report.splitlines() if x.strip().startswith("Batch mode:"))
    match = re.search(r"\$([\d.]+) for 20 calls, against \$([\d.]+) online \(saved "
                      r"\$([\d.]+), 50%\)", line)
    assert match, line
    assert float(match[1]) == pytest.approx(costs.total_cost, abs=5e-5)
    assert float(match[2]) == pytest.approx(2 * costs.total_cost, abs=5e-5)
    assert "Gateway: none (batch mode" in run.report


def test_the_estimate_prices_a_batch_dimension_at_the_batch_rates() -> None:
    online = batch_engine(None, "http://127.0.0.1:9", mode="online").estimate(
        batch_sections(10))
    batch = batch_engine(None, "http://127.0.0.1:9").estimate(batch_sections(10))
    assert batch.cost_expected == pytest.approx(online.cost_expected / 2, rel=1e-6)
    assert batch.cost_high == pytest.approx(online.cost_high / 2, rel=1e-6)


@pytest.mark.parametrize("kind", ["openai", "gemini"])
async def test_a_stopped_run_re_attaches_to_its_batches_in_each_format(
    kind: str, tmp_path: Path,
) -> None:
    store = tmp_path / "runs.db"

    def durable(sim: Simulator) -> DagEngine:
        eng = provider_engine(kind, sim, "batch")
        eng.store = store
        eng.cache = False
        return eng

    async with Simulator(api_key=KEY, batch_delay=0.3) as sim:
        reference_engine = provider_engine(kind, sim, "online")
        reference = await reference_engine.process(batch_sections(6))
        await reference_engine.close()
        stopped = durable(sim)
        task = asyncio.create_task(stopped.process(batch_sections(6), process_id="p"))
        await wait_for(lambda: bool(sim_batches(sim)) and all_on_file(sim, store), within=30)
        first = sim_batches(sim)[0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stopped.close()
        resumed_engine = durable(sim)
        resumed = await resumed_engine.process(batch_sections(6), process_id="p",
                                               resume=True)
        await resumed_engine.close()
        stats = await sim.stats()
        later = sim_batches(sim)[1:]
    assert data_of(resumed) == data_of(reference)
    assert billed_calls(stats) == Counter(dict.fromkeys(every_call(6), 1))
    again = {call_key(i.request.custom_id) for b in later for i in b.items}
    assert not again & {call_key(i.request.custom_id) for i in first.items}
