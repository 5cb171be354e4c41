"""The default store: an engine without store= records its runs in the user's cache
directory, a run gets a process_id from its plugin and sections, and the response cache is
on, so re-running a script after a crash or Ctrl-C pays only for what had not finished."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin, http_error
from dagengine import ConfigurationError, DagEngine, ProviderRequest, ProviderResponse, StoreError
from dagengine.cli.runs import main as runs_main
from dagengine.simulator import Simulator, SimulatorProcess
from dagengine.store import RunStore, default_store_path

SECTIONS = [f"section {i}" for i in range(10)]
PRICING = {"models": {"fake-model": {"input_per_1m": 1.0, "output_per_1m": 2.0}}}
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class GatedProvider(FakeProvider):
    """A FakeProvider that holds the requests `hold` picks until `gate` is set."""

    hold: Callable[[ProviderRequest], bool] = lambda r: False
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def execute(self, request: ProviderRequest) -> ProviderResponse:
        if self.hold(request):
            await self.gate.wait()
        return await super().execute(request)


def engine(provider: FakeProvider, plugin: Any = None, **kwargs: Any) -> DagEngine:
    """A fresh engine each time: what a script run again in a new process builds."""
    return DagEngine(plugin or SimplePlugin(["a"]), providers=[provider],
                     execution={"concurrency": 4, "retry_delay": 0.001}, pricing=PRICING,
                     **kwargs)


def exists(path: Path) -> bool:
    return path.exists()


def stored_runs(path: Path) -> list[str]:
    with RunStore(path) as store:
        return [run.process_id for run in store.runs()]


async def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.005)


def stored_count(path: Path) -> int:
    """Results committed to the file, as another connection sees them."""
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()


async def stopped_run(store: Path, done: int) -> None:
    """A default-store run cancelled once its first `done` sections are committed."""
    gated = GatedProvider(hold=lambda r: r.metadata["section_index"] >= done)
    task = asyncio.create_task(engine(gated).process(SECTIONS))
    await wait_for(lambda: stored_count(store) == done)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- where it is -------------------------------------------------------------------------------


async def test_an_engine_without_store_records_its_run_in_the_user_cache_directory(
        default_store_home: Path) -> None:
    assert default_store_path() == default_store_home
    assert str(default_store_home).endswith(os.path.join("dagengine", "runs.db"))
    await engine(FakeProvider()).process(SECTIONS)
    assert stored_count(default_store_home) == 10
    with RunStore(default_store_home) as store:
        (run,) = store.runs()
        assert run.status == "completed" and run.results == 10


async def test_runs_list_without_a_file_lists_the_default_store(
        default_store_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await engine(FakeProvider()).process(SECTIONS, process_id="nightly")
    capsys.readouterr()
    assert runs_main(["list"]) == 0
    out, err = capsys.readouterr()
    assert "nightly" in out and f"default store: {default_store_home}" in err


def test_without_xdg_cache_home_the_store_is_under_home_dot_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_path() == tmp_path / ".cache" / "dagengine" / "runs.db"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # invalid by the XDG spec: ignored
    assert default_store_path() == tmp_path / ".cache" / "dagengine" / "runs.db"


async def test_dagengine_store_names_another_file(tmp_path: Path, default_store_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "elsewhere" / "mine.db"
    monkeypatch.setenv("DAGENGINE_STORE", str(chosen))
    await engine(FakeProvider()).process(SECTIONS)
    assert len(stored_runs(chosen)) == 1
    assert not exists(default_store_home)


@pytest.mark.parametrize("off", ["off", "OFF"])
async def test_dagengine_store_off_records_nothing_and_calls_every_time(
        off: str, default_store_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGENGINE_STORE", off)
    for _ in range(2):
        provider = FakeProvider()
        eng = engine(provider)
        await eng.process(SECTIONS)
        assert eng.store is None and len(provider.calls) == 10
    assert not exists(default_store_home.parent)
    with pytest.raises(ConfigurationError, match=r"resume=True needs a store.*DAGENGINE_STORE"):
        await engine(FakeProvider()).process(SECTIONS, resume=True)
    with pytest.raises(ConfigurationError, match="cache=True needs a store"):
        engine(FakeProvider(), cache=True)


async def test_store_false_records_nothing_and_calls_every_time(
        default_store_home: Path) -> None:
    for _ in range(2):
        provider = FakeProvider()
        await engine(provider, store=False).process(SECTIONS)
        assert len(provider.calls) == 10
    assert not exists(default_store_home.parent)
    with pytest.raises(ConfigurationError, match="cache=True needs a store"):
        engine(FakeProvider(), store=False, cache=True)


def test_an_engine_that_never_runs_creates_no_store(default_store_home: Path) -> None:
    eng = engine(FakeProvider())
    assert eng.get_graph_analytics()["total_dimensions"] == 1
    assert not exists(default_store_home.parent)


def test_a_store_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"store must be a file path, a RunStore, "
                       r"False .* got int"):
        engine(FakeProvider(), store=123)


async def test_an_unusable_default_store_warns_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    provider = FakeProvider()
    with caplog.at_level(logging.WARNING, logger="dagengine"):
        result = await engine(provider).process(SECTIONS)
    assert all(s.results["a"].ok for s in result.sections) and len(provider.calls) == 10
    assert "the default run store" in caplog.text and "cannot be used" in caplog.text
    assert "DAGENGINE_STORE" in caplog.text


def test_an_unusable_dagengine_store_path_raises(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_store = tmp_path / "notes.db"
    not_a_store.write_text("not sqlite")
    monkeypatch.setenv("DAGENGINE_STORE", str(not_a_store))
    eng = engine(FakeProvider())
    with pytest.raises(StoreError, match=r"DAGENGINE_STORE=.*notes\.db cannot be used"):
        _ = eng.store


async def test_a_large_default_store_is_reported_when_opened(
        default_store_home: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    await engine(FakeProvider()).process(SECTIONS)
    monkeypatch.setattr("dagengine.store._default.LARGE_BYTES", 1000)
    with caplog.at_level(logging.WARNING, logger="dagengine"):
        await engine(FakeProvider()).process(SECTIONS)
    assert f"the default run store {default_store_home} holds" in caplog.text
    assert "delete the file" in caplog.text


# -- the default process_id --------------------------------------------------------------------


class IdPlugin(SimplePlugin):
    """Remembers the process_id its hooks were given."""

    def __init__(self, dimensions: list[Any]) -> None:
        super().__init__(dimensions)
        self.seen: list[str] = []

    def before_process_start(self, ctx: Any) -> None:
        self.seen.append(ctx.process_id)


async def default_id(sections: list[str], dimensions: list[Any] | None = None,
                     **kwargs: Any) -> str:
    plugin = IdPlugin(dimensions or ["a"])
    await engine(FakeProvider(), plugin, **kwargs).process(sections)
    return plugin.seen[0]


async def test_the_default_process_id_follows_the_plugin_and_the_sections() -> None:
    first = await default_id(SECTIONS)
    assert first.startswith("simple-") and first == await default_id(SECTIONS)
    assert await default_id(SECTIONS[:9]) != first
    assert await default_id(SECTIONS, ["a", "b"]) != first


def test_the_default_process_id_is_the_same_in_another_process(tmp_path: Path) -> None:
    script = ("import sys; sys.path.insert(0, 'tests'); from conftest import SimplePlugin; "
              "from dagengine import Section; from dagengine.store import default_process_id; "
              "print(default_process_id(SimplePlugin(['a']), "
              "[Section(content=f'section {i}') for i in range(10)]))")
    ids = {subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
           for seed in ("1", "2")}
    assert len(ids) == 1 and next(iter(ids)).startswith("simple-")


async def test_without_a_store_each_run_gets_a_new_process_id() -> None:
    assert await default_id(SECTIONS, store=False) != await default_id(SECTIONS, store=False)


# -- running again -----------------------------------------------------------------------------


async def test_running_the_same_script_again_pays_nothing_and_says_so(
        default_store_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = SimplePlugin(["a", "b"], {"b": ["a"]})
    first = FakeProvider()
    before = await engine(first, plugin).process(SECTIONS)
    assert len(first.calls) == 20
    again = FakeProvider()
    with caplog.at_level(logging.WARNING, logger="dagengine"):
        after = await engine(again, plugin).process(SECTIONS)
    assert again.calls == []
    assert [s.results["b"].data for s in after.sections] == \
        [s.results["b"].data for s in before.sections]
    assert after.costs is not None and after.costs.total_cost == 0.0
    assert after.costs.cache_savings == pytest.approx(before.costs.total_cost)  # type: ignore
    (notice,) = [r for r in caplog.records if "response cache" in r.getMessage()]
    assert notice.levelno == logging.WARNING
    assert "20 of 20 calls answered from the response cache" in notice.getMessage()
    assert str(default_store_home) in notice.getMessage()
    assert "cache=False" in notice.getMessage()
    assert len(stored_runs(default_store_home)) == 1  # the re-run replaced its record


async def test_cache_false_calls_again(default_store_home: Path) -> None:
    await engine(FakeProvider()).process(SECTIONS)
    again = FakeProvider()
    await engine(again, cache=False).process(SECTIONS)
    assert len(again.calls) == 10


async def test_a_run_stopped_midway_pays_only_for_the_rest_when_run_again(
        default_store_home: Path) -> None:
    await stopped_run(default_store_home, done=6)
    again = FakeProvider()
    result = await engine(again).process(SECTIONS)
    assert sorted(c.section_index for c in again.calls) == [6, 7, 8, 9]
    assert all(s.results["a"].ok for s in result.sections)


class ShowsDependencies(SimplePlugin):
    """Prompts that include what the dependencies answered, as real plugins' do."""

    def create_prompt(self, ctx: Any) -> str:
        shown = {name: (r.data, r.error) for name, r in ctx.dependencies.items()}
        return f"{super().create_prompt(ctx)} given {shown}"


async def test_failed_results_are_called_again_on_the_next_run() -> None:
    plugin = ShowsDependencies(["a", "b"], {"b": ["a"]})
    failing = FakeProvider(fail=lambda r, n: http_error(400) if r.dimension == "a"
                           and r.metadata["section_index"] == 3 else None)
    first = await engine(failing, plugin).process(SECTIONS)
    assert first.sections[3].results["a"].error is not None
    again = FakeProvider()
    result = await engine(again, plugin).process(SECTIONS)
    assert sorted((c.dimension, c.section_index) for c in again.calls) == [("a", 3), ("b", 3)]
    assert all(r.ok for s in result.sections for r in s.results.values())


async def test_a_changed_model_is_not_answered_from_the_cache() -> None:
    await engine(FakeProvider()).process(SECTIONS)
    again = FakeProvider()
    other = SimplePlugin(["a"], options={"model": "fake-model-2"})
    await engine(again, other).process(SECTIONS)
    assert len(again.calls) == 10


async def test_the_same_request_to_another_endpoint_is_not_answered_from_the_cache(
        tmp_path: Path) -> None:
    # An explicit store: today's cache already keys by provider name, model and input.
    plugin = SimplePlugin(["a"], provider="openai", options={"model": "gpt-4o-mini"})
    async with Simulator() as first, Simulator() as second:
        for sim in (first, second):
            eng = DagEngine(plugin, providers={"openai": {"api_key": "sk-test",
                                                          "base_url": sim.openai_base_url}},
                            store=tmp_path / "runs.db")
            result = await eng.process(SECTIONS[:3])
            assert all(s.results["a"].ok for s in result.sections)
            assert not any(s.results["a"].metadata["cached"] for s in result.sections)
        assert (await second.stats())["requests"] == 3


async def test_an_explicit_process_id_runs_again_under_the_default_store() -> None:
    await engine(FakeProvider()).process(SECTIONS, process_id="nightly")
    again = FakeProvider()
    result = await engine(again).process(SECTIONS, process_id="nightly")
    assert again.calls == [] and all(s.results["a"].ok for s in result.sections)


async def test_resume_without_a_process_id_resumes_the_default_run(
        default_store_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    await stopped_run(default_store_home, done=4)
    again = FakeProvider()
    with caplog.at_level(logging.INFO, logger="dagengine"):
        await engine(again, cache=False).process(SECTIONS, resume=True)
    assert sorted(c.section_index for c in again.calls) == [4, 5, 6, 7, 8, 9]
    assert "4 of 10 results from the store" in caplog.text
    assert "resumed run simple-" in caplog.text and str(default_store_home) in caplog.text


# -- two at once -------------------------------------------------------------------------------


async def test_the_same_default_run_twice_at_once_runs_unrecorded_with_a_warning(
        default_store_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    gated = GatedProvider(hold=lambda r: r.metadata["section_index"] >= 5)
    first = asyncio.create_task(engine(gated).process(SECTIONS))
    await wait_for(lambda: stored_count(default_store_home) == 5)
    second = FakeProvider()
    with caplog.at_level(logging.WARNING, logger="dagengine"):
        result = await engine(second).process(SECTIONS)
    assert all(s.results["a"].ok for s in result.sections)
    assert "already being written by pid" in caplog.text and "not recorded" in caplog.text
    with pytest.raises(StoreError, match="already being written"):  # asked to resume: refused
        await engine(FakeProvider()).process(SECTIONS, resume=True)
    gated.gate.set()
    await first
    with RunStore(default_store_home) as store:
        (run,) = store.runs()
        assert run.status == "completed" and run.results == 10


# -- a script stopped with Ctrl-C, then run again ------------------------------------------------

SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from dagengine import DagEngine
from store_crash_worker import CrashPlugin, crash_sections

engine = DagEngine(CrashPlugin(), execution={{"concurrency": {concurrency}}},
                   providers={{"anthropic": {{"api_key": "test-key", "base_url": sys.argv[1]}}}})
result = engine.run(crash_sections({sections}))
print("done", sum(r.ok for s in result.sections for r in s.results.values()), flush=True)
"""


async def test_a_script_stopped_with_ctrl_c_pays_only_for_the_rest_when_run_again(
        tmp_path: Path, default_store_home: Path) -> None:
    sections, concurrency = 150, 8
    calls = sections * 2
    script = tmp_path / "nightly.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), concurrency=concurrency,
                                    sections=sections))
    async with SimulatorProcess(latency=0.02, seed=5) as sim:
        first = await asyncio.create_subprocess_exec(
            sys.executable, str(script), sim.base_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            await wait_for(lambda: stored_count(default_store_home) >= calls // 3, within=60)
            first.send_signal(signal.SIGINT)
            output, _ = await asyncio.wait_for(first.communicate(), 30)
        finally:
            if first.returncode is None:
                first.kill()
                await first.communicate()
        assert first.returncode != 0 and b"done" not in output
        committed = stored_count(default_store_home)
        assert calls // 3 <= committed < calls

        again = await asyncio.create_subprocess_exec(
            sys.executable, str(script), sim.base_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, output.decode()
        assert f"done {calls}".encode() in output
        assert b"calls answered from the response cache" in output
        prompts: dict[str, int] = (await sim.stats())["prompts"]
    assert len(prompts) == calls
    # Only what was in flight at Ctrl-C (and not committed) was sent a second time.
    assert max(prompts.values()) <= 2
    assert sum(prompts.values()) - calls <= concurrency
