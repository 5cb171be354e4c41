"""Notebooks: run() and the graph exports inside a running event loop, and the live display
as one notebook output updated in place.

The last tests execute a real notebook in a real IPython kernel with nbclient (the
`dagengine[notebook]` extra); they are skipped when it is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeProvider, SimplePlugin
from dagengine import DagEngine, Dimension, EngineUsageError, Plugin
from dagengine.display import NotebookDisplay, in_notebook, make_display
from dagengine.graph import Plan
from dagengine.progress import ProgressTracker
from dagengine.providers.anthropic import AnthropicProvider
from dagengine.simulator import SimulatorProcess

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def run_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dagengine-run"]


# -- run() inside a running loop ---------------------------------------------------------------


async def test_run_inside_a_running_loop_returns_the_result() -> None:
    provider = FakeProvider()
    engine = DagEngine(SimplePlugin(["a", "b"], {"b": ["a"]}), providers=[provider])

    result = engine.run(["one", "two", "three"])

    assert [s.section.content for s in result.sections] == ["one", "two", "three"]
    assert all(s.results["b"].data == {"ok": True, "dimension": "b"} for s in result.sections)
    assert len(provider.calls) == 6
    assert provider.closed == 1  # closed on the loop that ran the calls
    assert run_threads() == []
    # Nothing of the run was left on this loop.
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_run_inside_a_running_loop_calls_the_simulator_over_http() -> None:
    async with SimulatorProcess(latency_median=0.01, latency_sigma=0.0, seed=1) as sim:
        engine = DagEngine(
            SimplePlugin(["a"], provider="anthropic", options={"model": "claude-x"}),
            providers={"anthropic": {"api_key": "sim", "base_url": sim.base_url}})
        provider = engine.registry.get("anthropic")
        assert isinstance(provider, AnthropicProvider)

        result = engine.run([f"email {i}" for i in range(5)])

        assert all(s.results["a"].error is None for s in result.sections), result.sections
        assert result.costs is not None and result.costs.total_tokens > 0
        # The SDK client belonged to the worker's loop and was closed there: none is kept
        # for this loop, which gets its own on its first call.
        assert provider.backend.open_client is None
        again = await engine.process(["email 5"])
        assert again.sections[0].results["a"].error is None
        assert (await sim.stats())["requests"] == 6


async def test_an_error_of_a_run_inside_a_loop_is_raised_to_the_caller() -> None:
    engine = DagEngine(SimplePlugin(["a"], provider="missing"), providers=[FakeProvider()],
                       execution={"continue_on_error": False})

    with pytest.raises(Exception, match="missing") as caught:
        engine.run(["x"])

    assert "is not configured" in str(caught.value)
    assert run_threads() == []


async def test_run_inside_a_loop_refuses_while_a_process_of_the_engine_runs_in_it() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: Any) -> Any:
        started.set()
        await release.wait()
        return {"ok": True}

    class Waiting(FakeProvider):
        async def execute(self, request: Any) -> Any:
            await slow(request)
            return await super().execute(request)

    engine = DagEngine(SimplePlugin(["a"]), providers=[Waiting()])
    task = asyncio.create_task(engine.process(["x"]))
    await started.wait()

    with pytest.raises(EngineUsageError, match=r"await engine\.process"):
        engine.run(["y"])

    release.set()
    assert (await task).sections[0].results["a"].ok


def test_run_without_a_loop_still_runs_here() -> None:
    seen: list[str] = []

    class Where(FakeProvider):
        async def execute(self, request: Any) -> Any:
            seen.append(threading.current_thread().name)
            return await super().execute(request)

    DagEngine(SimplePlugin(["a"]), providers=[Where()]).run(["x"])

    assert seen == [threading.current_thread().name]


# Ctrl-C in a notebook: the kernel's loop is running (no asyncio.run signal handler, as in
# ipykernel) when SIGINT arrives while run() waits for its worker thread.
CTRL_C_CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeProvider, SimplePlugin
    from dagengine import DagEngine, ProcessInterrupted

    provider = FakeProvider(latency=lambda r: 0.0 if r.metadata["section_index"] < 5 else 60.0)
    engine = DagEngine(SimplePlugin(["a"]), providers=[provider],
                       execution={{"concurrency": 10}}, store={store!r})
    done = 0

    def on_section_complete(index, result):
        global done
        done += 1
        if done == 5:
            print("READY", flush=True)

    async def cell():
        try:
            engine.run([f"s{{i}}" for i in range(20)], process_id="nb",
                       on_section_complete=on_section_complete)
        except ProcessInterrupted as stop:
            ok = [s for s in stop.result.sections if s.results.get("a") and s.results["a"].ok]
            print(f"KEPT {{len(ok)}} OF {{len(stop.result.sections)}}", flush=True)
            print(f"IN_FLIGHT {{provider.in_flight}} CLOSED {{provider.closed}}", flush=True)
            print(f"TASKS {{len(asyncio.all_tasks())}}", flush=True)
            print(f"STORED {{engine.store.run('nb').results}}", flush=True)

    {runner}(cell())
""")


# run_until_complete keeps the default SIGINT handler, as ipykernel does during a cell;
# asyncio.run installs one that only cancels its main task, blocked in run() here.
@pytest.mark.parametrize("runner", ["asyncio.new_event_loop().run_until_complete",
                                    "asyncio.run"])
def test_ctrl_c_during_run_inside_a_loop_cancels_the_worker_and_keeps_what_finished(
    runner: str, tmp_path: Path,
) -> None:
    code = CTRL_C_CHILD.format(tests=str(TESTS), store=str(tmp_path / "runs.db"),
                               runner=runner)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "READY"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert "KEPT 5 OF 20" in out
    assert "IN_FLIGHT 0 CLOSED 1" in out  # the worker's calls were cancelled, its client closed
    assert "TASKS 1" in out  # only the cell's own task is on the kernel's loop
    assert "STORED 5" in out  # what finished was committed before ProcessInterrupted


# -- graph exports inside a running loop -------------------------------------------------------


class AsyncDependencies(Plugin):
    def __init__(self) -> None:
        super().__init__("deps", "Deps", "async define_dependencies")
        self.dimensions = ["a", "b", Dimension(name="c", scope="global")]
        self.loops: list[asyncio.AbstractEventLoop] = []

    async def define_dependencies(self, ctx: Any) -> dict[str, list[str]]:
        self.loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return {"b": ["a"], "c": ["b"]}

    def create_prompt(self, ctx: Any) -> str:
        return "p"

    def select_provider(self, dimension: str, sections: Any = None, context: Any = None) -> Any:
        return {"provider": "fake", "options": {"model": "m"}}


async def test_graph_exports_inside_a_running_loop_plan_a_sync_graph_here() -> None:
    engine = DagEngine(SimplePlugin(["a", "b", "c"], {"b": ["a"], "c": ["a", "b"]}))

    analytics = engine.get_graph_analytics()

    assert analytics["max_depth"] == 3
    assert analytics["critical_path"] == ["a", "b", "c"]
    assert '"a" -> "b"' in engine.export_graph_dot()
    assert {"source": "b", "target": "c"} in engine.export_graph_json()["links"]


async def test_graph_exports_inside_a_running_loop_await_async_dependencies_elsewhere() -> None:
    plugin = AsyncDependencies()
    engine = DagEngine(plugin)

    graph = engine.export_graph_json()

    assert {"source": "a", "target": "b"} in graph["links"]
    assert {"source": "b", "target": "c"} in graph["links"]
    assert engine.get_graph_analytics()["total_dependencies"] == 2
    assert len(plugin.loops) == 1 and plugin.loops[0] is not asyncio.get_running_loop()


async def test_a_bad_graph_inside_a_running_loop_is_still_a_configuration_error() -> None:
    engine = DagEngine(SimplePlugin(["a"], {"a": ["nope"]}))

    with pytest.raises(Exception, match="nope") as caught:
        engine.export_graph_dot()

    assert type(caught.value).__module__ == "dagengine.errors"


# -- the display in a notebook -----------------------------------------------------------------

needs_notebook_extra = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("IPython", "ipykernel", "nbclient")),
    reason="the notebook extra (pip install 'dagengine[notebook]') is not installed")


@needs_notebook_extra
def test_the_notebook_display_is_one_output_updated_in_place() -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()  # a real shell, so that display() publishes
    display = NotebookDisplay(interval=0, per_dimension=True)
    progress = ProgressTracker()
    with capture_output() as captured:
        display.start(Plan.build(["a", "b"], {"b": ["a"]}))
        display.update(progress.snapshot())
        display.stop(progress.snapshot())

    outputs = captured.outputs
    ids = {o.transient["display_id"] for o in outputs}
    assert len(outputs) == 2 and len(ids) == 1
    assert [o.update for o in outputs] == [False, True]
    final = outputs[-1].data
    assert final["text/html"].startswith("<pre")  # rich's Jupyter HTML
    assert [line.split()[0] for line in final["text/plain"].splitlines()] == ["a", "b", "total"]


@needs_notebook_extra
def test_outside_a_kernel_no_notebook_display_is_chosen() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.instance()  # a terminal-like shell is not a notebook
    assert not in_notebook()
    assert not isinstance(make_display(True), NotebookDisplay)


NOTEBOOK_CELLS = [
    f"""
    import asyncio, sys
    sys.path.insert(0, {str(TESTS)!r})
    from conftest import FakeProvider, SimplePlugin
    from dagengine import DagEngine
    provider = FakeProvider()
    engine = DagEngine(SimplePlugin(["a", "b"], {{"b": ["a"]}}), providers=[provider],
                       progress_display="multi")
    """,
    """
    print(engine.get_graph_analytics()["critical_path"])
    """,
    """
    result = engine.run([f"section {i}" for i in range(12)])
    print("RESULT", len(result.sections), result.sections[-1].results["b"].data)
    """,
    """
    print("LOOP", asyncio.get_running_loop().is_running(), "CLOSED", provider.closed)
    """,
]


def execute_notebook(cells: list[str]) -> Any:
    import nbclient
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(TESTS)}})
    client.execute()
    return notebook


def stream_text(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@needs_notebook_extra
def test_a_real_notebook_runs_the_engine_with_its_display_in_place() -> None:
    notebook = execute_notebook(NOTEBOOK_CELLS)
    _, graph, run, after = notebook.cells

    assert "['a', 'b']" in stream_text(graph)
    assert "RESULT 12 {'ok': True, 'dimension': 'b'}" in stream_text(run)
    assert "LOOP True CLOSED 1" in stream_text(after)  # the kernel's loop was running all along
    displays = [o for o in run.outputs if o.output_type == "display_data"]
    assert len(displays) == 1, run.outputs  # every redraw replaced the one output
    final = displays[0].data
    assert final["text/html"].startswith("<pre")
    bars = final["text/plain"].splitlines()
    assert [line.split()[0] for line in bars] == ["a", "b", "total"]
    assert all("12/12" in line for line in bars[:2]) and "24/24" in bars[2]
    assert "Progress:" not in stream_text(run)  # no plain lines on stderr instead
