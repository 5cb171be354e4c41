"""Durable runs: results committed as they complete, resume, restart, ownership, the response
cache, `dagengine runs`, and runs killed with SIGKILL then resumed without paying twice."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import DagEngine, ProviderRequest, ProviderResponse, StoreError
from dagengine.cli.runs import main as runs_main
from dagengine.simulator import Simulator, SimulatorProcess
from dagengine.store import SCHEMA_VERSION, RunStore, open_store
from store_crash_worker import crash_engine, crash_sections

PRICING = {"models": {"fake-model": {"input_per_1m": 1.0, "output_per_1m": 2.0}}}
SECTIONS = [f"section {i}" for i in range(10)]


@dataclass
class GatedProvider(FakeProvider):
    """A FakeProvider that holds the requests `hold` picks until `gate` is set."""

    hold: Callable[[ProviderRequest], bool] = lambda r: False
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        if self.hold(request):
            await self.gate.wait()
        return await super().execute(request)


def from_index(first: int) -> Callable[[ProviderRequest], bool]:
    return lambda r: r.metadata["section_index"] >= first


def engine_for(store: Any, provider: FakeProvider, plugin: Any = None, **kwargs: Any) -> DagEngine:
    return DagEngine(plugin or SimplePlugin(["a"]), providers=[provider],
                     execution={"concurrency": 4, "retry_delay": 0.001}, pricing=PRICING,
                     store=store, **kwargs)


def stored_count(path: Path, process_id: str | None = None) -> int:
    """Results committed to the file, as a second connection sees them."""
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        if process_id is None:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
        return int(conn.execute("SELECT count(*) FROM results WHERE process_id = ?",
                                (process_id,)).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    finally:
        conn.close()


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.005)


async def interrupted_run(path: Path, process_id: str, done: int, plugin: Any = None) -> None:
    """A run cancelled once `done` results are stored: the first dimension answers for the
    sections before `done`, nothing else ever answers."""
    first = (plugin or SimplePlugin(["a"])).dimensions[0]
    provider = GatedProvider(
        hold=lambda r: r.dimension != first or r.metadata["section_index"] >= done)
    task = asyncio.create_task(
        engine_for(path, provider, plugin).process(SECTIONS, process_id=process_id))
    await wait_for(lambda: stored_count(path) == done)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def data_of(result: Any) -> list[dict[str, Any]]:
    return [{d: r.data for d, r in s.results.items()} for s in result.sections]


# -- recording and resuming ----------------------------------------------------------------


async def test_results_are_committed_as_they_complete(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    provider = GatedProvider(hold=from_index(6))
    task = asyncio.create_task(engine_for(path, provider).process(SECTIONS, process_id="p"))
    await wait_for(lambda: stored_count(path) == 6)
    assert not task.done()
    provider.gate.set()
    await task
    assert stored_count(path) == 10
    assert RunStore(path).run("p").status == "completed"


async def test_resume_takes_stored_results_and_calls_only_for_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await interrupted_run(path, "p", done=6)
    assert RunStore(path).run("p").status == "interrupted"
    second = FakeProvider()
    result = await engine_for(path, second).process(SECTIONS, process_id="p", resume=True)
    assert sorted(c.section_index for c in second.calls) == [6, 7, 8, 9]
    assert data_of(result) == [{"a": {"ok": True, "dimension": "a"}}] * 10
    assert result.costs is not None
    assert result.costs.total_tokens == 10 * 15  # stored tokens count again (TokenUsage)
    assert result.costs.total_cost == pytest.approx(10 * (10 * 1.0 + 5 * 2.0) / 1e6)
    assert RunStore(path).run("p").status == "completed"


async def test_resume_retries_failed_results_and_their_dependents(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    failing = FakeProvider(fail=lambda r, n: http_error(400) if r.dimension == "a"
                           and r.metadata["section_index"] in (1, 3) else None)
    first = await engine_for(path, failing, plugin).process(SECTIONS, process_id="p")
    assert not first.sections[1].results["a"].ok
    second = FakeProvider()  # without the cache: b's prompt does not show a's answer
    result = await engine_for(path, second, plugin, cache=False).process(
        SECTIONS, process_id="p", resume=True)
    assert sorted((c.dimension, c.section_index) for c in second.calls) == [
        ("a", 1), ("a", 3), ("b", 1), ("b", 3)]
    assert all(r.ok for s in result.sections for r in s.results.values())


async def test_resume_keeps_failed_results_with_retry_failed_false(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    failing = FakeProvider(fail=lambda r, n: http_error(400)
                           if r.metadata["section_index"] == 2 else None)
    await engine_for(path, failing).process(SECTIONS, process_id="p")
    second = FakeProvider()
    result = await engine_for(path, second).process(SECTIONS, process_id="p", resume=True,
                                                    retry_failed=False)
    assert second.calls == []
    assert result.sections[2].results["a"].error is not None


async def test_resume_of_a_new_process_id_starts_the_run(tmp_path: Path) -> None:
    provider = FakeProvider()
    await engine_for(tmp_path / "runs.db", provider).process(SECTIONS, process_id="new",
                                                             resume=True)
    assert len(provider.calls) == 10


async def test_resume_with_different_sections_raises(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await interrupted_run(path, "p", done=3)
    with pytest.raises(StoreError, match=r"different sections \(10 sections then, 9 now\)"
                       r".*restart=True"):
        await engine_for(path, FakeProvider()).process(SECTIONS[:9], process_id="p",
                                                       resume=True)
    changed = [*SECTIONS[:9], "something else"]
    with pytest.raises(StoreError, match="different content"):
        await engine_for(path, FakeProvider()).process(changed, process_id="p", resume=True)


async def test_resume_with_a_different_graph_raises(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await interrupted_run(path, "p", done=3)
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    with pytest.raises(StoreError, match=r"different dimension graph \(added b\).*restart=True"):
        await engine_for(path, FakeProvider(), plugin).process(SECTIONS, process_id="p",
                                                               resume=True)


async def test_an_existing_run_without_resume_or_restart_raises(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await engine_for(path, FakeProvider()).process(SECTIONS, process_id="p")
    with pytest.raises(StoreError, match=r"run 'p' exists.*resume=True.*restart=True"):
        await engine_for(path, FakeProvider()).process(SECTIONS, process_id="p")


async def test_restart_drops_the_old_results_and_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    await interrupted_run(path, "p", done=4, plugin=plugin)
    provider = FakeProvider()
    result = await engine_for(path, provider, plugin, cache=False).process(
        SECTIONS[:5], process_id="p", restart=True)
    assert len(provider.calls) == 10
    assert len(result.sections) == 5
    assert stored_count(path, "p") == 10
    assert RunStore(path).run("p").section_count == 5


async def test_data_that_is_not_json_is_stored_as_text(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    class Opaque:
        def __str__(self) -> str:
            return "opaque value"

    odd = FakeProvider(answer=lambda r: {"value": Opaque(), "tags": {"x"}})
    await engine_for(path, odd).process(SECTIONS[:1], process_id="p")
    assert RunStore(path).results("p")[("a", 0)].data == {"value": "opaque value",
                                                           "tags": ["x"]}


async def test_global_results_are_stored_and_resumed(tmp_path: Path) -> None:
    from dagengine import Dimension

    path = tmp_path / "runs.db"
    plugin = SimplePlugin(["a", Dimension(name="g", scope="global")], {"g": ["a"]})
    await engine_for(path, FakeProvider(), plugin).process(SECTIONS, process_id="p")
    assert RunStore(path).results("p")[("g", None)].ok
    again = FakeProvider()
    result = await engine_for(path, again, plugin).process(SECTIONS, process_id="p",
                                                           resume=True)
    assert again.calls == []
    assert result.global_results["g"].data == {"ok": True, "dimension": "g"}


async def test_resume_after_a_transform_keys_results_by_the_transformed_list(
    tmp_path: Path,
) -> None:
    from dagengine import Dimension, Section

    path = tmp_path / "runs.db"

    def add_one(result: Any, sections: list[Section]) -> list[Section]:
        return [*sections, Section(content="added by the transform")]

    plugin = SimplePlugin(["a", Dimension(name="g", scope="global", transform=add_one), "b"],
                          {"g": ["a"], "b": ["g"]})
    failing = FakeProvider(fail=lambda r, n: http_error(400) if r.dimension == "b"
                           and r.metadata["section_index"] == 10 else None)
    first = await engine_for(path, failing, plugin).process(SECTIONS, process_id="p")
    assert len(first.sections) == 11 and not first.sections[10].results["b"].ok
    again = FakeProvider()
    result = await engine_for(path, again, plugin, cache=False).process(
        SECTIONS, process_id="p", resume=True)
    assert [(c.dimension, c.section_index) for c in again.calls] == [("b", 10)]
    assert result.sections[10].section.content == "added by the transform"
    assert all(s.results["b"].ok for s in result.sections)
    assert RunStore(path).sections("p", transformed=True)[10].content == "added by the transform"


# -- the file ------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 20)
    with pytest.raises(StoreError, match=f"{path}.*not a dagengine run store"):
        DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=path)


def test_an_sqlite_file_of_another_application_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"{path} is an SQLite database but not a dagengine"):
        open_store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_a_store_with_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 98,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 98}.*"
                       r"Upgrade dagengine"):
        RunStore(path)


def test_open_store_returns_a_store_object_as_is(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    assert open_store(store) is store
    assert DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=store).store is store


# -- ownership -----------------------------------------------------------------------------


async def test_a_run_being_written_cannot_be_opened_by_a_second_writer(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    provider = GatedProvider(hold=from_index(5))
    task = asyncio.create_task(engine_for(path, provider).process(SECTIONS, process_id="p"))
    await wait_for(lambda: stored_count(path) == 5)
    intruder = FakeProvider()
    with pytest.raises(StoreError, match=rf"run 'p' .* already being written by pid "
                       rf"{os.getpid()}"):
        await engine_for(path, intruder).process(SECTIONS, process_id="p", resume=True)
    assert intruder.calls == []
    provider.gate.set()
    result = await task
    assert all(s.results["a"].ok for s in result.sections)
    assert stored_count(path) == 10


async def test_a_run_left_by_a_dead_process_can_be_resumed(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await interrupted_run(path, "p", done=4)
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET status = 'running', owner_token = 'x', owner_pid = ?, "
                 "owner_host = ?, heartbeat = ?", (gone.pid, socket.gethostname(), time.time()))
    conn.commit()
    conn.close()
    assert RunStore(path).run("p").status == "interrupted"
    provider = FakeProvider()
    await engine_for(path, provider).process(SECTIONS, process_id="p", resume=True)
    assert len(provider.calls) == 6


# -- the response cache --------------------------------------------------------------------


async def test_the_same_inputs_again_make_no_provider_calls(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await engine_for(path, FakeProvider()).process(SECTIONS, process_id="first")
    again = FakeProvider()
    result = await engine_for(path, again).process(SECTIONS, process_id="second")
    assert again.calls == []
    assert data_of(result) == [{"a": {"ok": True, "dimension": "a"}}] * 10
    assert result.costs is not None
    assert result.costs.cached_calls == 10
    assert result.costs.cache_savings == pytest.approx(10 * (10 * 1.0 + 5 * 2.0) / 1e6)
    assert result.costs.total_cost == 0
    assert all(s.results["a"].metadata["cached"] for s in result.sections)


async def test_cache_false_turns_the_cache_off(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await engine_for(path, FakeProvider(), cache=False).process(SECTIONS, process_id="first")
    again = FakeProvider()
    result = await engine_for(path, again, cache=False).process(SECTIONS, process_id="second")
    assert len(again.calls) == 10
    assert result.costs is not None and result.costs.cached_calls == 0


async def test_different_options_are_different_cache_entries(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    await engine_for(path, FakeProvider()).process(SECTIONS, process_id="first")
    other = SimplePlugin(["a"], options={"model": "fake-model", "temperature": 0.5})
    again = FakeProvider()
    await engine_for(path, again, other).process(SECTIONS, process_id="second")
    assert len(again.calls) == 10


async def test_api_keys_are_never_written_to_the_store(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    secret = "sk-ant-api03-never-store-me-0123456789"
    async with Simulator() as sim:
        engine = DagEngine(SimplePlugin(["a"], provider="anthropic",
                                        options={"model": "claude-3-5-haiku-20241022"}),
                           providers={"anthropic": {"api_key": secret, "base_url": sim.base_url}},
                           store=path)
        result = await engine.process(SECTIONS[:3], process_id="p")
    assert all(s.results["a"].ok for s in result.sections)
    engine.store.close()
    assert_nowhere_in(tmp_path, secret)


def assert_nowhere_in(folder: Path, secret: str) -> None:
    files = list(folder.iterdir())
    assert any(f.name == "runs.db" for f in files)
    for file in files:
        assert secret.encode() not in file.read_bytes(), file


# -- dagengine runs ------------------------------------------------------------------------


async def test_runs_list_show_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         ) -> None:
    path = tmp_path / "runs.db"
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    failing = FakeProvider(fail=lambda r, n: http_error(400) if r.dimension == "b"
                           and r.metadata["section_index"] == 7 else None)
    await engine_for(path, failing, plugin).process(SECTIONS, process_id="run-1")
    await engine_for(path, FakeProvider(), plugin).process(SECTIONS, process_id="run-2")
    capsys.readouterr()

    assert runs_main(["list", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "run-1" in listing and "run-2" in listing and "completed" in listing
    assert "\x1b[" not in listing

    assert runs_main(["show", str(path), "run-1"]) == 0
    shown = capsys.readouterr().out
    assert "10/10 100%" in shown and "b [section 7]: fake: HTTP 400" in shown
    assert "$0.0004" in shown  # 19 successful calls at 10 + 5 tokens, priced by PRICING
    assert runs_main(["show", str(path), "run-2"]) == 0
    # run-2 asks the same prompts: 19 come from the cache, b[7] (failed before) is called
    assert "the cache saved $0.0004 over 19 calls" in capsys.readouterr().out

    out = tmp_path / "run-1.jsonl"
    assert runs_main(["export", str(path), "run-1", "--format", "full", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(10))
    assert lines[3]["section"]["content"] == "section 3"
    assert list(lines[3]["results"]) == ["a", "b"]
    assert lines[7]["results"]["b"]["error"] == "fake: HTTP 400"

    assert runs_main(["show", str(path), "missing"]) == 1
    assert "no run 'missing'" in capsys.readouterr().err
    assert runs_main(["list", str(tmp_path / "absent.db")]) == 1
    assert not (tmp_path / "absent.db").exists()


# -- the crash test ---------------------------------------------------------------------------

CRASH_SECTIONS = 500  # x 2 dimensions, the second depending on the first
CRASH_CONCURRENCY = 16
CRASH_KILLS = 5
WORKER = Path(__file__).with_name("store_crash_worker.py")


async def start_worker(store: Path, process_id: str, base_url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), str(store), process_id, base_url,
        "--sections", str(CRASH_SECTIONS), "--concurrency", str(CRASH_CONCURRENCY),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


def stored_or_exited(store: Path, at_least: int, worker: asyncio.subprocess.Process) -> bool:
    return worker.returncode is not None or stored_count(store) >= at_least


async def test_sigkilled_runs_resume_without_paying_twice(tmp_path: Path) -> None:
    """Kill a worker process with SIGKILL at random points; resuming must finish with the
    uninterrupted run's results, and only prompts in flight at the kill are sent twice."""
    rng = random.Random(20251125)
    calls = CRASH_SECTIONS * 2
    async with SimulatorProcess(latency=0.02, seed=11) as sim:
        reference = await crash_engine(None, sim.base_url, concurrency=CRASH_CONCURRENCY,
                                       cache=False).process(crash_sections(CRASH_SECTIONS))
        expected = data_of(reference)
        assert all(r.ok for s in reference.sections for r in s.results.values())
        every_prompt = set((await sim.stats())["prompts"])
        assert len(every_prompt) == calls

        for cycle in range(CRASH_KILLS):
            await sim.reset()
            store, process_id = tmp_path / f"crash-{cycle}.db", f"crash-{cycle}"
            kill_at = rng.randint(calls // 10, calls * 9 // 10)
            worker = await start_worker(store, process_id, sim.base_url)
            try:
                await wait_for(partial(stored_or_exited, store, kill_at, worker), within=60)
                if worker.returncode is not None:
                    output, _ = await worker.communicate()
                    pytest.fail(f"the worker exited early:\n{output.decode()}")
                if cycle == 0:  # the live worker owns the run: a second writer is refused
                    with pytest.raises(StoreError, match=f"already being written by pid "
                                       f"{worker.pid}"):
                        await crash_engine(store, sim.base_url, concurrency=1, cache=False
                                           ).process(crash_sections(CRASH_SECTIONS),
                                                     process_id=process_id, resume=True)
                os.kill(worker.pid, signal.SIGKILL)
            finally:
                if worker.returncode is None:
                    worker.kill()
                await worker.communicate()
            committed = stored_count(store)
            assert committed >= kill_at

            resumed = await crash_engine(store, sim.base_url, concurrency=CRASH_CONCURRENCY,
                                         cache=False).process(crash_sections(CRASH_SECTIONS),
                                                              process_id=process_id,
                                                              resume=True)
            assert data_of(resumed) == expected, f"kill after {committed} results"
            prompts: dict[str, int] = (await sim.stats())["prompts"]
            assert set(prompts) == every_prompt
            sent_twice = [key for key, count in prompts.items() if count > 1]
            assert max(prompts.values()) <= 2
            assert len(sent_twice) <= CRASH_CONCURRENCY, (committed, len(sent_twice))
            assert sum(prompts.values()) - calls == len(sent_twice)
            assert RunStore(store).run(process_id).status == "completed"
            print(f"kill {cycle}: {committed} results committed, "
                  f"{len(sent_twice)} prompts sent twice")
