"""The `dagengine` command line: graph, demo, simulate, runs, --version and bad usage."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dagengine import __version__
from dagengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
REVIEW_PIPELINE = str(ROOT / "examples" / "review_pipeline.py")
DAGENGINE = Path(sys.executable).with_name("dagengine")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def plugin_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my_plugins.py"
    path.write_text("from dagengine import Plugin\n\n" + textwrap.dedent(body))
    return path


# -- graph -------------------------------------------------------------------------------------


def test_graph_of_a_file_prints_dot_and_the_analytics(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["graph", f"{REVIEW_PIPELINE}:ReviewPipeline"], capsys)
    assert code == 0, err
    assert out.startswith('digraph "Review pipeline" {')
    assert '  "sentiment" -> "summary";' in out and '  "overview" -> "reply";' in out
    assert "// Graph analytics" in out
    assert "// total_dimensions        5" in out
    assert "// critical_path           sentiment -> overview -> reply" in out
    assert ("// parallel_groups         [sentiment, topics] then [summary, overview] "
            "then [reply]") in out
    assert "// global_dimensions       overview" in out
    # Everything after the graph is a DOT comment, so the output still renders.
    tail = out.split("}\n", 1)[1]
    assert all(line.startswith("//") or not line for line in tail.splitlines())


def test_graph_of_a_module_class(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["graph", "dagengine.cli.demo:EmailAnalyzer"], capsys)
    assert code == 0
    assert '"analyze_email" [shape=ellipse' in out
    assert "// independent_dimensions  analyze_email" in out


def test_graph_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["graph", "--json", f"{REVIEW_PIPELINE}:ReviewPipeline"], capsys)
    assert code == 0
    data = json.loads(out)
    assert {"source": "overview", "target": "reply"} in data["graph"]["links"]
    assert data["analytics"]["max_depth"] == 3


@pytest.mark.parametrize(("target", "message"), [
    ("review_pipeline", "expected module:PluginClass or path/to/file.py:PluginClass"),
    ("missing/file.py:Plugin", "no such file: missing/file.py"),
    ("no_such_module_xyz:Plugin", "no module named 'no_such_module_xyz'"),
    (f"{REVIEW_PIPELINE}:Nope", "has no 'Nope'; Plugin classes there: ReviewPipeline"),
    ("dagengine.cli.demo:DemoOptions", "is not a dagengine.Plugin subclass"),
])
def test_a_bad_graph_target_exits_2_and_says_why(
    target: str, message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(["graph", target], capsys)
    assert code == 2 and out == ""
    assert err.startswith("dagengine graph: error: ")
    assert message in err


def test_a_plugin_that_needs_arguments_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = plugin_file(tmp_path, """
        class Needy(Plugin):
            def __init__(self, model):
                super().__init__("needy", "Needy", "needs a model")
    """)
    code, _, err = run(["graph", f"{path}:Needy"], capsys)
    assert code == 2
    assert "must be constructible with no arguments" in err


def test_a_file_that_fails_to_import_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = plugin_file(tmp_path, "raise RuntimeError('broken on purpose')\n")
    code, _, err = run(["graph", f"{path}:Anything"], capsys)
    assert code == 2
    assert "RuntimeError: broken on purpose" in err


def test_a_cyclic_graph_exits_1_naming_the_cycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = plugin_file(tmp_path, """
        class Loop(Plugin):
            def __init__(self):
                super().__init__("loop", "Loop", "a cycle")
                self.dimensions = ["a", "b"]

            def define_dependencies(self, ctx):
                return {"a": ["b"], "b": ["a"]}

            def create_prompt(self, ctx):
                return ""

            def select_provider(self, dimension, sections=None, context=None):
                return {"provider": "x"}
    """)
    code, out, err = run(["graph", f"{path}:Loop"], capsys)
    assert code == 1 and out == ""
    assert "circular dependency between dimensions" in err


# -- version and usage ---------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out == f"dagengine {__version__}\n"


def test_the_console_script_is_installed() -> None:
    done = subprocess.run([str(DAGENGINE), "--version"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and done.stdout == f"dagengine {__version__}\n"


@pytest.mark.parametrize(("argv", "message"), [
    ([], "name a command: demo, simulate, graph, estimate or runs"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["graph"], "the following arguments are required: module:PluginClass"),
])
def test_bad_usage_exits_2(argv: list[str], message: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err


# -- delegated commands --------------------------------------------------------------------------


def test_demo_runs_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["demo", "--emails", "10", "--no-gateway", "--latency-scale", "0.05",
                          "--display", "none"], capsys)
    assert code == 0, err
    assert "   Total Emails: 10" in out and "   Successful: 10/10 (100.0%)" in out
    assert "📊 Progress:" not in out  # --display none


def test_simulate_delegates_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["simulate", "--no-such-flag"], capsys)
    assert code == 2
    assert "dagengine simulate: error: unrecognized arguments: --no-such-flag" in err
    code, out, _ = run(["simulate", "--help"], capsys)
    assert code == 0 and out.startswith("usage: dagengine simulate")


def test_runs_lists_and_shows_a_stored_run(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import FakeProvider, SimplePlugin
    from dagengine import DagEngine

    store = str(tmp_path / "runs.db")
    engine = DagEngine(SimplePlugin(["a"]), providers=[FakeProvider()], store=store)
    engine.run(["x", "y"], process_id="nightly")
    code, out, _ = run(["runs", "list", store], capsys)
    assert code == 0 and "nightly" in out
    code, out, _ = run(["runs", "show", store, "nightly"], capsys)
    assert code == 0 and "nightly" in out and "a" in out
